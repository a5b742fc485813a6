/**
 * OCI layers → inode tree, merged with the OCI image-spec whiteout rules:
 * `.wh.NAME` hides NAME of lower layers, `.wh..wh..opq` hides every lower
 * entry of its directory (before or after the directory's own entry), a
 * whiteout never acts on entries of its own layer, a later entry replaces an
 * earlier one (file ↔ directory both ways), a directory listed again keeps
 * its children and takes the newer metadata. File contents over 64 bytes go
 * to the repository as objects while they stream by (constant memory).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { Readable } from "node:stream";
import { FsVerityHasher, digestToObjectPath, type VerityAlgorithm } from "../fsverity/digest.js";
import {
  Inode,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  type Dirent,
} from "../model/inode.js";
import { CfsError } from "../util/errors.js";
import type { ExternalFile } from "../scan/walk.js";
import { TarReader, type TarEntry } from "./tar.js";

const INLINE_MAX = 64;
const WH = Buffer.from(".wh.");
const OPAQUE = Buffer.from(".wh..wh..opq");

/** The uncompressed bytes of a layer file: gzip and zstd detected from the first bytes. */
export function openLayer(file: string): AsyncIterable<Buffer> {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    throw new CfsError(`${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "No such file or directory" : (e as Error).message}`);
  }
  const magic = Buffer.alloc(4);
  const n = fs.readSync(fd, magic, 0, 4, 0);
  fs.closeSync(fd);
  const raw = fs.createReadStream(file, { highWaterMark: 1 << 20 });
  if (n >= 2 && magic[0] === 0x1f && magic[1] === 0x8b) return raw.pipe(zlib.createGunzip());
  if (n === 4 && magic.readUInt32LE(0) === 0xfd2fb528) {
    const z = spawn("zstd", ["-dc", "--", file], { stdio: ["ignore", "pipe", "pipe"] });
    z.on("error", () => undefined);
    let err = "";
    z.stderr.on("data", (d) => (err += d));
    const out = z.stdout as Readable;
    z.on("exit", (code) => {
      if (code !== 0) out.destroy(new CfsError(`${file}: zstd failed: ${err.trim() || `exit ${code}`}`));
    });
    z.on("error", (e) => out.destroy(new CfsError(`${file}: zstd-compressed, and the zstd command is missing (${e.message}): install zstd`)));
    return out;
  }
  return raw;
}

function components(p: Buffer, where: string): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i <= p.length) {
    let j = p.indexOf(0x2f, i);
    if (j < 0) j = p.length;
    const c = p.subarray(i, j);
    i = j + 1;
    if (c.length === 0 || (c.length === 1 && c[0] === 0x2e)) continue;
    if (c.length === 2 && c[0] === 0x2e && c[1] === 0x2e) throw new CfsError(`${where}: path with '..': ${p.toString("utf8")}`);
    out.push(c);
  }
  return out;
}

function removeEntry(dir: Inode, name: Buffer): void {
  const ents = dir.entries!;
  const e = dir.lookup(name);
  if (e) ents.splice(ents.indexOf(e), 1);
}

/** glibc makedev, narrowed to the 32 bits composefs stores. */
function makedev(major: number, minor: number): number {
  return (((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12)) >>> 0;
}

export interface ImportState {
  root: Inode;
  external: ExternalFile[];
}

export class LayerMerger {
  readonly root = new Inode(S_IFDIR | 0o755);
  readonly external: ExternalFile[] = [];
  private tmpCounter = 0;

  constructor(
    private readonly objects: string,
    private readonly algorithm: VerityAlgorithm,
    private readonly hasObject: (digest: Buffer) => boolean,
  ) {}

  /** Walk to the parent directory of `comps`, making missing ones (mode 0755, root, mtime 0). */
  private parentOf(comps: Buffer[], where: string, create: boolean): Inode | null {
    let dir = this.root;
    for (let i = 0; i < comps.length - 1; i++) {
      const e = dir.lookup(comps[i]!);
      if (!e) {
        if (!create) return null;
        const d = new Inode(S_IFDIR | 0o755);
        dir.addEntry(Buffer.from(comps[i]!), d);
        dir = d;
        continue;
      }
      if (e.hardlink || !e.inode.isDir()) {
        if (!create) return null;
        const what = e.inode.type === S_IFLNK ? "a symlink" : "not a directory";
        throw new CfsError(`${where}: ${comps.slice(0, i + 1).join("/")} is ${what} (a path through it is refused)`);
      }
      dir = e.inode;
    }
    return dir;
  }

  private lookupPath(comps: Buffer[]): Inode | null {
    let n: Inode = this.root;
    for (const c of comps) {
      const e = n.entries ? n.lookup(c) : undefined;
      if (!e) return null;
      n = e.inode;
    }
    return n;
  }

  async addLayer(file: string): Promise<void> {
    const tar = new TarReader(openLayer(file));
    const ours = new Set<Dirent>();
    for (;;) {
      const e = await tar.next();
      if (!e) break;
      const comps = components(e.path, file);
      if (comps.length === 0) continue; // the root's own entry never counts
      const name = comps[comps.length - 1]!;
      if (name.length > WH.length - 1 && name.subarray(0, 4).equals(WH)) {
        // A whiteout acts on lower layers only, and not below a non-directory.
        const parent = this.parentOf(comps, file, false);
        if (!parent) continue;
        if (name.equals(OPAQUE)) {
          parent.entries = parent.entries!.filter((d) => ours.has(d));
        } else {
          const hidden = parent.lookup(name.subarray(4));
          if (hidden && !ours.has(hidden)) removeEntry(parent, name.subarray(4));
        }
        continue;
      }
      const parent = this.parentOf(comps, file, true)!;
      const existing = parent.lookup(name);
      const where = `${file}: ${e.path.toString("utf8")}`;
      if (e.type === "5" && existing && !existing.hardlink && existing.inode.isDir()) {
        this.setMeta(existing.inode, e);
        existing.inode.xattrs = [];
        existing.inode.xattrBudgetUsed = 0;
        this.setXattrs(existing.inode, e, where);
        ours.add(existing);
        continue;
      }
      let inode: Inode;
      let hardlink = false;
      switch (e.type) {
        case "5":
          inode = new Inode(S_IFDIR | (e.mode & 0o7777));
          break;
        case "0":
        case "7":
          inode = new Inode(S_IFREG | (e.mode & 0o7777));
          await this.readContent(tar, e, inode);
          break;
        case "1": {
          const target = this.lookupPath(components(e.linkname, file));
          if (!target) throw new CfsError(`${where}: hardlink to a missing entry ${e.linkname.toString("utf8")}`);
          if (target.isDir()) throw new CfsError(`${where}: hardlink to a directory`);
          inode = target;
          hardlink = true;
          break;
        }
        case "2":
          if (e.linkname.length === 0 || e.linkname.length >= 4096) throw new CfsError(`${where}: bad symlink target`);
          inode = new Inode(S_IFLNK | 0o777);
          inode.payload = Buffer.from(e.linkname);
          inode.size = BigInt(e.linkname.length);
          break;
        case "3":
        case "4":
          inode = new Inode((e.type === "3" ? S_IFCHR : S_IFBLK) | (e.mode & 0o7777));
          inode.rdev = makedev(e.devmajor, e.devminor);
          break;
        case "6":
          inode = new Inode(S_IFIFO | (e.mode & 0o7777));
          break;
        default:
          throw new CfsError(`${where}: unsupported tar entry type '${e.type}'`);
      }
      if (!hardlink) {
        this.setMeta(inode, e);
        this.setXattrs(inode, e, where);
      }
      if (existing) removeEntry(parent, name);
      const d = parent.addEntry(Buffer.from(name), inode, hardlink)!;
      ours.add(d);
    }
  }

  private setMeta(inode: Inode, e: TarEntry): void {
    inode.mode = (inode.mode & 0o170000) | (e.mode & 0o7777);
    inode.uid = e.uid >>> 0;
    inode.gid = e.gid >>> 0;
    inode.mtimeSec = e.mtime;
    inode.mtimeNsec = 0;
  }

  private setXattrs(inode: Inode, e: TarEntry, where: string): void {
    for (const x of e.xattrs) {
      if (!inode.setXattr(Buffer.from(x.key), Buffer.from(x.value))) throw new CfsError(`${where}: xattrs too large for a composefs image`);
    }
  }

  private async readContent(tar: TarReader, e: TarEntry, inode: Inode): Promise<void> {
    inode.size = BigInt(e.size);
    if (e.size === 0) {
      for await (const _ of tar.content()) void _;
      return;
    }
    if (e.size <= INLINE_MAX) {
      const parts: Buffer[] = [];
      for await (const b of tar.content()) parts.push(Buffer.from(b));
      inode.content = Buffer.concat(parts);
      return;
    }
    // Stream to a temporary file in objects/ while hashing.
    const tmp = path.join(this.objects, `.tmp-${process.pid}-import-${this.tmpCounter++}`);
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
    const h = new FsVerityHasher(this.algorithm);
    try {
      for await (const b of tar.content()) {
        h.update(b);
        let off = 0;
        while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off);
      }
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    fs.closeSync(fd);
    const digest = h.digest();
    inode.digest = digest;
    inode.payload = Buffer.from(digestToObjectPath(digest));
    if (this.hasObject(digest)) fs.rmSync(tmp, { force: true });
    else this.external.push({ inode, tmp });
  }

  /** Temporary copies not yet named (for cleanup after a failure). */
  discard(): void {
    for (const f of this.external) if (f.tmp) fs.rmSync(f.tmp, { force: true });
  }

  /**
   * After all layers: the first name of each inode in depth-first name order
   * is its primary entry, the others are hardlinks; nlink = names found.
   */
  finish(): Inode {
    const seen = new Map<Inode, number>();
    const rec = (dir: Inode) => {
      for (const e of dir.entries!) {
        if (e.inode.isDir() && !seen.has(e.inode)) {
          seen.set(e.inode, 1);
          e.hardlink = false;
          rec(e.inode);
          continue;
        }
        const n = seen.get(e.inode);
        e.hardlink = n !== undefined;
        seen.set(e.inode, (n ?? 0) + 1);
      }
    };
    rec(this.root);
    for (const [inode, n] of seen) if (!inode.isDir()) inode.nlink = n;
    return this.root;
  }
}
