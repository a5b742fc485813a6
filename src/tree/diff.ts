/**
 * Entry-by-entry comparison of two inode trees: what `cfsctl diff` prints.
 *
 * Every path of either tree is visited once, in byte order of the raw path;
 * an entry only in A or only in B is one difference, and each field that
 * differs between two entries of the same path is one more (doc/diff.md).
 * Paths and values are printed escaped as in composefs-dump(5), so they never
 * hold a space and a line splits on spaces into its parts.
 */
import { escape, Escape } from "../dumpfile/escape.js";
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type Dirent, type Inode } from "../model/inode.js";

export interface FieldChange {
  /** type, mode, uid, gid, size, mtime, rdev, target, content, payload, nlink, hardlink, xattr */
  field: string;
  /** For an xattr: its name (escaped). */
  key?: string;
  /** The value in A, or null where A has none (an xattr added). */
  a: string | null;
  /** The value in B, or null where B has none (an xattr removed). */
  b: string | null;
}

export interface EntryDiff {
  /** The path, escaped as in a dumpfile. */
  path: string;
  /** added: only in B; removed: only in A; changed: in both, see fields. */
  change: "added" | "removed" | "changed";
  fields?: FieldChange[];
}

interface Flat {
  inode: Inode;
  /** For a hardlink entry: the (raw) path of the name that owns the inode. */
  linkTo: string | null;
}

/**
 * Every path of a tree, keyed by its raw bytes as a latin1 string (so that
 * `<` on keys is byte order), walked depth-first in name order: the first
 * name of an inode owns it, later names are hardlinks to it.
 */
function flatten(root: Inode): Map<string, Flat> {
  const out = new Map<string, Flat>();
  const first = new Map<Inode, string>();
  out.set("/", { inode: root, linkTo: null });
  first.set(root, "/");
  // An explicit stack, not recursion: a dumpfile's tree may nest deeper
  // than the call stack goes (no image can hold it, but diff reads it).
  const stack: Array<{ ents: Dirent[]; next: number; prefix: string }> = [{ ents: root.entries!, next: 0, prefix: "" }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.next === top.ents.length) {
      stack.pop();
      continue;
    }
    const e = top.ents[top.next++]!;
    const p = `${top.prefix}/${e.name.toString("latin1")}`;
    const seen = first.get(e.inode);
    out.set(p, { inode: e.inode, linkTo: seen ?? null });
    if (seen !== undefined) continue;
    first.set(e.inode, p);
    if (e.inode.entries) stack.push({ ents: e.inode.entries, next: 0, prefix: p });
  }
  return out;
}

function show(rawPath: string): string {
  return escape(Buffer.from(rawPath, "latin1"));
}

const TYPE_NAMES: Record<number, string> = {
  0o140000: "socket",
  0o120000: "symlink",
  0o100000: "file",
  0o060000: "block-device",
  0o040000: "directory",
  0o020000: "char-device",
  0o010000: "fifo",
};

function typeName(mode: number): string {
  return TYPE_NAMES[mode & S_IFMT] ?? `unknown-${((mode & S_IFMT) >>> 12).toString(8)}`;
}

function mtime(n: Inode): string {
  return n.mtimeNsec === 0 ? n.mtimeSec.toString() : `${n.mtimeSec}.${String(n.mtimeNsec).padStart(9, "0")}`;
}

/** A regular file's data: inline bytes, the fs-verity digest of an external file, or empty. */
function content(n: Inode): string {
  if (n.content && n.content.length > 0) return `inline:${escape(n.content, Escape.LoneDash)}`;
  if (n.digest) return `digest:${n.digest.toString("hex")}`;
  if (n.size === 0n) return "empty";
  return "external:unknown";
}

/**
 * The markers an image writer gives a directory that holds a whiteout
 * (char 0/0): `opaque=x` in both overlay namespaces (upstream
 * lcfs-writer-erofs.c, format version 1). An image read back shows them, a
 * scanned directory or a dumpfile does not: they say nothing the whiteout
 * does not, so they are not compared.
 */
const WHITEOUT_MARKERS = new Set(["trusted.overlay.opaque", "user.overlay.opaque"]);

function holdsWhiteout(n: Inode): boolean {
  for (const e of n.entries ?? []) {
    const t = e.inode.mode & S_IFMT;
    if (t === S_IFCHR && e.inode.rdev === 0) return true;
  }
  return false;
}

/** Xattrs by raw name (latin1), values escaped. */
function xattrMap(n: Inode): Map<string, string> {
  const m = new Map<string, string>();
  const markers = (n.mode & S_IFMT) === S_IFDIR && holdsWhiteout(n);
  for (const x of n.xattrs) {
    const k = x.key.toString("latin1");
    if (markers && WHITEOUT_MARKERS.has(k) && x.value.length === 1 && x.value[0] === 0x78) continue;
    m.set(k, escape(x.value, Escape.Equal));
  }
  return m;
}

function byteOrder(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

function compareEntries(a: Flat, b: Flat): FieldChange[] {
  const out: FieldChange[] = [];
  const push = (field: string, x: string, y: string) => {
    if (x !== y) out.push({ field, a: x, b: y });
  };
  const na = a.inode;
  const nb = b.inode;
  const type = na.mode & S_IFMT;
  const sameType = type === (nb.mode & S_IFMT);
  push("type", typeName(na.mode), typeName(nb.mode));
  push("mode", (na.mode & 0o7777).toString(8).padStart(4, "0"), (nb.mode & 0o7777).toString(8).padStart(4, "0"));
  push("uid", String(na.uid), String(nb.uid));
  push("gid", String(na.gid), String(nb.gid));
  if (sameType && type === S_IFREG) push("size", na.size.toString(), nb.size.toString());
  push("mtime", mtime(na), mtime(nb));
  if (sameType && (type === S_IFCHR || type === S_IFBLK)) push("rdev", String(na.rdev), String(nb.rdev));
  if (sameType && type === S_IFLNK) push("target", escape(na.payload ?? Buffer.alloc(0)), escape(nb.payload ?? Buffer.alloc(0)));
  if (sameType && type === S_IFREG) {
    const ca = content(na);
    const cb = content(nb);
    push("content", ca, cb);
    // The backing path of an external file, named after its digest where a
    // repository wrote it: reported only when the content is the same.
    if (ca === cb && na.payload && nb.payload) push("payload", escape(na.payload), escape(nb.payload));
  }
  // A directory's link count follows from its subdirectories, listed anyway.
  if (type !== S_IFDIR && (nb.mode & S_IFMT) !== S_IFDIR) push("nlink", String(na.nlink), String(nb.nlink));
  push("hardlink", a.linkTo === null ? "(none)" : show(a.linkTo), b.linkTo === null ? "(none)" : show(b.linkTo));
  const xa = xattrMap(na);
  const xb = xattrMap(nb);
  for (const k of [...new Set([...xa.keys(), ...xb.keys()])].sort(byteOrder)) {
    const va = xa.get(k) ?? null;
    const vb = xb.get(k) ?? null;
    if (va !== vb) out.push({ field: "xattr", key: escape(Buffer.from(k, "latin1"), Escape.Equal), a: va, b: vb });
  }
  return out;
}

/** The differences from tree A to tree B, in byte order of the paths. */
export function diffTrees(a: Inode, b: Inode): EntryDiff[] {
  const fa = flatten(a);
  const fb = flatten(b);
  const paths = [...new Set([...fa.keys(), ...fb.keys()])].sort(byteOrder);
  const out: EntryDiff[] = [];
  for (const p of paths) {
    const ea = fa.get(p);
    const eb = fb.get(p);
    if (!ea) out.push({ path: show(p), change: "added" });
    else if (!eb) out.push({ path: show(p), change: "removed" });
    else {
      const fields = compareEntries(ea, eb);
      if (fields.length > 0) out.push({ path: show(p), change: "changed", fields });
    }
  }
  return out;
}

/** One line of a field change, without the `~ PATH ` prefix. */
function formatField(f: FieldChange): string {
  if (f.field !== "xattr") return `${f.field} ${f.a} -> ${f.b}`;
  if (f.a === null) return `xattr added ${f.key}=${f.b}`;
  if (f.b === null) return `xattr removed ${f.key}=${f.a}`;
  return `xattr changed ${f.key}=${f.a} -> ${f.key}=${f.b}`;
}

/**
 * One line a difference: `- PATH` (only in A), `+ PATH` (only in B),
 * `~ PATH FIELD A -> B`, `~ PATH xattr added|removed KEY=VALUE`,
 * `~ PATH xattr changed KEY=A -> KEY=B`.
 */
export function formatDiff(diffs: EntryDiff[]): string {
  let s = "";
  for (const d of diffs) {
    if (d.change === "added") s += `+ ${d.path}\n`;
    else if (d.change === "removed") s += `- ${d.path}\n`;
    else for (const f of d.fields!) s += `~ ${d.path} ${formatField(f)}\n`;
  }
  return s;
}
