/**
 * Entry-by-entry comparison of two inode trees: what `cfsctl diff` prints
 * when two digests disagree.
 */
import { escape, Escape } from "../dumpfile/escape.js";
import { S_IFBLK, S_IFCHR, S_IFLNK, S_IFMT, S_IFREG, type Inode } from "../model/inode.js";

export interface FieldChange {
  field: string;
  a: string;
  b: string;
}

export interface EntryDiff {
  path: string;
  change: "added" | "removed" | "changed";
  fields?: FieldChange[];
}

interface Flat {
  inode: Inode;
  /** For a hardlink entry: the path of the name that owns the inode. */
  linkTo: string | null;
}

/** Every path of a tree (escaped as in a dumpfile), depth-first. */
function flatten(root: Inode): Map<string, Flat> {
  const out = new Map<string, Flat>();
  const first = new Map<Inode, string>();
  out.set("/", { inode: root, linkTo: null });
  first.set(root, "/");
  const rec = (dir: Inode, prefix: string) => {
    for (const e of dir.entries!) {
      const p = `${prefix}/${escape(e.name)}`;
      const seen = first.get(e.inode);
      out.set(p, { inode: e.inode, linkTo: seen ?? null });
      if (seen) continue;
      first.set(e.inode, p);
      if (e.inode.entries) rec(e.inode, p);
    }
  };
  rec(root, "");
  return out;
}

const TYPE_NAMES: Record<number, string> = {
  0o140000: "socket",
  0o120000: "symlink",
  0o100000: "file",
  0o060000: "block device",
  0o040000: "directory",
  0o020000: "char device",
  0o010000: "fifo",
};

function content(n: Inode): string {
  if ((n.mode & S_IFMT) !== S_IFREG) return "";
  if (n.content && n.content.length > 0) return `inline ${escape(n.content, Escape.LoneDash)}`;
  if (n.digest) return `digest ${n.digest.toString("hex")}`;
  if (n.size === 0n) return "empty";
  return `external ${n.payload ? escape(n.payload) : "-"}`;
}

function xattrMap(n: Inode): Map<string, string> {
  const m = new Map<string, string>();
  for (const x of n.xattrs) m.set(escape(x.key, Escape.Equal), escape(x.value, Escape.Equal));
  return m;
}

function compareEntries(a: Flat, b: Flat): FieldChange[] {
  const out: FieldChange[] = [];
  const push = (field: string, x: string, y: string) => {
    if (x !== y) out.push({ field, a: x, b: y });
  };
  const na = a.inode;
  const nb = b.inode;
  push("type", TYPE_NAMES[na.mode & S_IFMT] ?? "?", TYPE_NAMES[nb.mode & S_IFMT] ?? "?");
  push("mode", (na.mode & 0o7777).toString(8).padStart(4, "0"), (nb.mode & 0o7777).toString(8).padStart(4, "0"));
  push("owner", `${na.uid}:${na.gid}`, `${nb.uid}:${nb.gid}`);
  push("mtime", `${na.mtimeSec}.${na.mtimeNsec}`, `${nb.mtimeSec}.${nb.mtimeNsec}`);
  const type = na.mode & S_IFMT;
  if (type === (nb.mode & S_IFMT)) {
    if (type === S_IFREG) {
      push("size", na.size.toString(), nb.size.toString());
      push("content", content(na), content(nb));
    }
    if (type === S_IFLNK) push("target", escape(na.payload ?? Buffer.alloc(0)), escape(nb.payload ?? Buffer.alloc(0)));
    if (type === S_IFCHR || type === S_IFBLK) push("rdev", String(na.rdev), String(nb.rdev));
    if (!na.entries) push("nlink", String(na.nlink), String(nb.nlink));
  }
  push("hardlink", a.linkTo ?? "-", b.linkTo ?? "-");
  const xa = xattrMap(na);
  const xb = xattrMap(nb);
  for (const k of [...new Set([...xa.keys(), ...xb.keys()])].sort()) {
    push(`xattr ${k}`, xa.has(k) ? xa.get(k)! : "(none)", xb.has(k) ? xb.get(k)! : "(none)");
  }
  return out;
}

/** The differences from tree A to tree B, in path order. */
export function diffTrees(a: Inode, b: Inode): EntryDiff[] {
  const fa = flatten(a);
  const fb = flatten(b);
  const paths = [...new Set([...fa.keys(), ...fb.keys()])].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const out: EntryDiff[] = [];
  for (const p of paths) {
    const ea = fa.get(p);
    const eb = fb.get(p);
    if (!ea) out.push({ path: p, change: "added" });
    else if (!eb) out.push({ path: p, change: "removed" });
    else {
      const fields = compareEntries(ea, eb);
      if (fields.length > 0) out.push({ path: p, change: "changed", fields });
    }
  }
  return out;
}

/** Human-readable lines: `+ path`, `- path`, `~ path: field a -> b; …`. */
export function formatDiff(diffs: EntryDiff[]): string {
  let s = "";
  for (const d of diffs) {
    if (d.change === "added") s += `+ ${d.path}\n`;
    else if (d.change === "removed") s += `- ${d.path}\n`;
    else s += `~ ${d.path}: ${d.fields!.map((f) => `${f.field} ${f.a} -> ${f.b}`).join("; ")}\n`;
  }
  return s;
}
