/**
 * An image's tree in the format of the reference trees under
 * fixtures/oci (written by tools/listtree.py from a tree a real tool
 * extracted): one tab-separated row per path below the root.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { readImage } from "../src/erofs/reader.js";
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, type Inode } from "../src/model/inode.js";

function esc(b: Buffer): string {
  let s = "";
  for (const c of b) {
    if (c === 0x5c) s += "\\\\";
    else if (c >= 0x21 && c <= 0x7e) s += String.fromCharCode(c);
    else s += `\\x${c.toString(16).padStart(2, "0")}`;
  }
  return s;
}

const TYPE: Record<number, string> = { [S_IFREG]: "f", [S_IFDIR]: "d", [S_IFLNK]: "l", [S_IFCHR]: "c", [S_IFBLK]: "b", [S_IFIFO]: "p", [S_IFSOCK]: "s" };

/** Rows of the image at `imagePath`; contents of external files come from `objects/`. */
export function imageRows(imagePath: string, objectsDir: string): string[] {
  const root = readImage(fs.readFileSync(imagePath));
  const paths: Array<{ p: Buffer; n: Inode }> = [];
  const walk = (dir: Inode, prefix: Buffer) => {
    for (const e of dir.entries!) {
      const p = Buffer.concat([prefix, Buffer.from("/"), e.name]);
      paths.push({ p, n: e.inode });
      if (e.inode.entries && !e.hardlink) walk(e.inode, p);
    }
  };
  walk(root, Buffer.alloc(0));
  paths.sort((a, b) => Buffer.compare(a.p, b.p));
  const firstName = new Map<Inode, Buffer>();
  for (const { p, n } of paths) if (!n.entries && n.nlink > 1 && !firstName.has(n)) firstName.set(n, p);
  return paths.map(({ p, n }) => {
    const type = TYPE[n.mode & S_IFMT]!;
    let sha = "-";
    if (type === "f") {
      const data = n.digest ? fs.readFileSync(path.join(objectsDir, n.digest.toString("hex").slice(0, 2), n.digest.toString("hex").slice(2))) : (n.content ?? Buffer.alloc(0));
      sha = crypto.createHash("sha256").update(data).digest("hex");
    }
    const rdev = type === "c" || type === "b" ? `${((n.rdev >>> 8) & 0xfff) | 0}:${(n.rdev & 0xff) | ((n.rdev >>> 12) & 0xfff00)}` : "-";
    const xattrs = [...n.xattrs]
      .sort((a, b) => Buffer.compare(a.key, b.key))
      .map((x) => `${esc(x.key)}=${x.value.toString("hex")}`)
      .join(",");
    return [
      esc(p),
      type,
      (n.mode & 0o7777).toString(8).padStart(4, "0"),
      n.uid,
      n.gid,
      type === "f" || type === "l" ? String(n.size) : "0",
      String(n.mtimeSec),
      n.nlink,
      firstName.has(n) ? esc(firstName.get(n)!) : "-",
      type === "l" ? esc(n.payload!) : "-",
      rdev,
      sha,
      xattrs || "-",
    ].join("\t");
  });
}

/** A reference file's rows, header dropped. */
export function referenceRows(file: string): string[] {
  const text = zlib.gunzipSync(fs.readFileSync(file)).toString("latin1");
  return text.split("\n").slice(1).filter((l) => l !== "");
}

/** Drop one xattr (by name) from a reference row. */
export function withoutXattr(row: string, name: string): string {
  const cols = row.split("\t");
  const xs = cols[12] === "-" ? [] : cols[12]!.split(",").filter((x) => !x.startsWith(`${name}=`));
  cols[12] = xs.length ? xs.join(",") : "-";
  return cols.join("\t");
}
