/**
 * The in-memory inode tree every producer builds and every writer consumes.
 *
 * It follows the node model of mkcomposefs (libcomposefs/lcfs-writer.c):
 * names are raw bytes compared as `strcmp` does (unsigned bytes, never
 * decoded), a directory's entries are kept sorted, and a hardlink is a
 * directory entry that points at an inode owned by another entry (its
 * "primary" entry, which decides where the inode is laid out).
 */
import { CfsError } from "../util/errors.js";

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export const MAX_NAME_LENGTH = 255;
/** Symlink targets and payloads must be shorter than PATH_MAX (4096). */
export const PATH_MAX = 4096;
/** Longest xattr name (XATTR_NAME_MAX). */
export const XATTR_NAME_MAX = 255;
/** Per-inode xattr budget for input from outside (LCFS_INODE_EXTERNAL_XATTR_MAX). */
export const EXTERNAL_XATTR_BUDGET = 0x7fff;

export interface Xattr {
  key: Buffer;
  value: Buffer;
}

/**
 * A shared, frozen empty xattr list for inodes that have none (a parsed tree
 * has one inode a line: an empty array each is memory for nothing).
 * setXattr replaces it with a list of the inode's own; code that pushes onto
 * `xattrs` directly must give the inode its own list first.
 */
export const NO_XATTRS: Xattr[] = Object.freeze([]) as unknown as Xattr[];

export interface Dirent {
  name: Buffer;
  inode: Inode;
  /** true: a hardlink entry; the inode is owned (and laid out) elsewhere. */
  hardlink: boolean;
}

export function isValidFileType(mode: number): boolean {
  switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFBLK:
    case S_IFCHR:
    case S_IFSOCK:
    case S_IFIFO:
      return true;
    default:
      return false;
  }
}

export class Inode {
  /** st_mode, 32 bits (only the low 16 reach an EROFS image). */
  mode: number;
  nlink = 1;
  uid = 0;
  gid = 0;
  /** Device number, glibc encoding truncated to 32 bits as composefs stores it. */
  rdev = 0;
  size = 0n;
  mtimeSec = 0n;
  mtimeNsec = 0;
  /** Symlink target, or the backing-file path of an external file. */
  payload: Buffer | null = null;
  /** Inline data of a regular file. */
  content: Buffer | null = null;
  /** fs-verity digest of an external file's data. */
  digest: Buffer | null = null;
  xattrs: Xattr[];
  /** Running estimate of the xattr space, as lcfs_node_set_xattr keeps it. */
  xattrBudgetUsed = 0;
  /** A directory's entries (see `entries`); null for every other type. */
  private ents: Dirent[] | null;
  /** A large directory's entries by name, once one was added out of order or removed (see addEntry). */
  private index: DirIndex | null = null;

  /** xattrs: the inode's own list (NO_XATTRS: none yet, see there). */
  constructor(mode: number, xattrs: Xattr[] = []) {
    this.mode = mode >>> 0;
    this.xattrs = xattrs;
    this.ents = (mode & S_IFMT) === S_IFDIR ? [] : null;
  }

  /** The entries of a directory in byte order of their names; null for every other type. */
  get entries(): Dirent[] | null {
    const index = this.index;
    if (index !== null && (index.unsorted || index.removed.size > 0)) {
      let ents = this.ents!;
      if (index.removed.size > 0) {
        const removed = index.removed;
        ents = this.ents = ents.filter((e) => !removed.has(e));
        removed.clear();
      }
      if (index.unsorted) ents.sort((a, b) => compareBytes(a.name, b.name));
      index.unsorted = false;
    }
    return this.ents;
  }

  /** Replace a directory's entries (sorted, names distinct). */
  set entries(ents: Dirent[] | null) {
    this.ents = ents;
    this.index = null;
  }

  get type(): number {
    return this.mode & S_IFMT;
  }

  isDir(): boolean {
    return (this.mode & S_IFMT) === S_IFDIR;
  }

  getXattr(key: Buffer | string): Buffer | undefined {
    const k = typeof key === "string" ? Buffer.from(key, "latin1") : key;
    for (const x of this.xattrs) if (x.key.equals(k)) return x.value;
    return undefined;
  }

  /**
   * Set (or replace) an xattr, enforcing the per-inode budget of
   * lcfs_node_set_xattr_internal: every xattr costs 7 + len(key) + len(value),
   * the first also the 12-byte header. Returns false when over budget.
   */
  setXattr(key: Buffer, value: Buffer, budget = EXTERNAL_XATTR_BUDGET, keys?: XattrKeys): boolean {
    if (this.xattrs === NO_XATTRS) this.xattrs = [];
    const used = keys ? keys.set(this.xattrs, this.xattrBudgetUsed, key, value, budget) : setXattrBudgeted(this.xattrs, this.xattrBudgetUsed, key, value, budget);
    if (used < 0) return false;
    this.xattrBudgetUsed = used;
    return true;
  }

  removeXattr(key: Buffer): boolean {
    const used = removeXattrBudgeted(this.xattrs, this.xattrBudgetUsed, key);
    if (used === null) return false;
    this.xattrBudgetUsed = used;
    return true;
  }

  /** The entry of that name: a binary search among the sorted entries, or the index. */
  lookup(name: Buffer): Dirent | undefined {
    const ents = this.ents;
    if (!ents) return undefined;
    if (this.index !== null) return this.index.byName.get(name.toString("latin1"));
    const i = findEntry(ents, name);
    return i >= 0 ? ents[i] : undefined;
  }

  /**
   * Add an entry; null if the name exists already. Appending in sorted
   * order (the common case) costs one comparison; an entry that sorts
   * before the last is inserted at its place. In a directory of
   * INDEX_FROM entries or more, that would cost a move of all the entries
   * after it, each time (quadratic for a directory listed in reverse): the
   * directory then gets an index by name, entries are appended, and they
   * are sorted once, when `entries` is next read. (The index stays: later
   * additions and removals go through it too.)
   */
  addEntry(name: Buffer, inode: Inode, hardlink = false): Dirent | null {
    const ents = this.ents;
    if (!ents) throw new CfsError("internal: addEntry on a non-directory");
    const n = ents.length;
    const ent = { name, inode, hardlink };
    const index = this.index;
    if (index !== null) {
      const key = name.toString("latin1");
      if (index.byName.has(key)) return null;
      if (!index.unsorted && n > 0 && compareBytes(ents[n - 1]!.name, name) > 0) index.unsorted = true;
      ents.push(ent);
      index.byName.set(key, ent);
      return ent;
    }
    if (n === 0 || compareBytes(ents[n - 1]!.name, name) < 0) {
      ents.push(ent);
      return ent;
    }
    const i = findEntry(ents, name);
    if (i >= 0) return null;
    if (n < INDEX_FROM) {
      ents.splice(-i - 1, 0, ent);
      return ent;
    }
    const built = this.indexEntries(ents);
    built.byName.set(name.toString("latin1"), ent);
    ents.push(ent);
    built.unsorted = true;
    return ent;
  }

  /**
   * Remove the entry of that name; false if there is none. A large
   * directory is indexed (see addEntry) and the entry only marked: the
   * entries are compacted once, when next read.
   */
  removeEntry(name: Buffer): boolean {
    const ents = this.ents;
    if (!ents) return false;
    let index = this.index;
    if (index === null) {
      if (ents.length < INDEX_FROM) {
        const i = findEntry(ents, name);
        if (i < 0) return false;
        ents.splice(i, 1);
        return true;
      }
      index = this.indexEntries(ents);
    }
    const key = name.toString("latin1");
    const e = index.byName.get(key);
    if (e === undefined) return false;
    index.byName.delete(key);
    index.removed.add(e);
    return true;
  }

  private indexEntries(ents: Dirent[]): DirIndex {
    const byName = new Map<string, Dirent>();
    for (const e of ents) byName.set(e.name.toString("latin1"), e);
    return (this.index = { byName, unsorted: false, removed: new Set() });
  }
}

/** Entries from which a directory that gets one out of order, or loses one, is indexed by name (see addEntry). */
const INDEX_FROM = 256;

interface DirIndex {
  byName: Map<string, Dirent>;
  /** Entries were appended out of order since they were last sorted. */
  unsorted: boolean;
  /** Entries removed since the entries were last read, still in the array. */
  removed: Set<Dirent>;
}

/**
 * Remove an xattr from a list; returns the new budget estimate, or null if
 * it was not there. Upstream subtracts 7 + len(key) + len(value), or resets to 0
 * when the last one goes.
 */
export function removeXattrBudgeted(xattrs: Xattr[], used: number, key: Buffer): number | null {
  let i = xattrs.length - 1;
  while (i >= 0 && !sameBytes(xattrs[i]!.key, key)) i--;
  if (i < 0) return null;
  const old = xattrs[i]!;
  xattrs.splice(i, 1);
  // Below zero where the estimate did not count the xattr (a node the
  // writer copied starts at 0): upstream's size_t then wraps around.
  return xattrs.length === 0 ? 0 : used - (7 + old.key.length + old.value.length);
}

/**
 * Set or replace an xattr in a list under upstream's budget; returns the new
 * estimate, or -1 when the key or value is invalid or the budget is exceeded
 * (a sum below zero is upstream's wrapped size_t: far over any budget).
 */
export function setXattrBudgeted(xattrs: Xattr[], used: number, key: Buffer, value: Buffer, budget: number): number {
  if (key.length === 0 || key.length > XATTR_NAME_MAX || value.length > 0xffff) return -1;
  const after = removeXattrBudgeted(xattrs, used, key);
  return appendXattrBudgeted(xattrs, after ?? used, key, value, budget);
}

/** setXattrBudgeted for a key the list is known not to hold: no search. */
function appendXattrBudgeted(xattrs: Xattr[], used: number, key: Buffer, value: Buffer, budget: number): number {
  if (key.length === 0 || key.length > XATTR_NAME_MAX || value.length > 0xffff) return -1;
  let cost = 7 + key.length + value.length;
  if (xattrs.length === 0) cost += 12;
  const total = used + cost;
  if (total < 0 || total > budget) return -1;
  xattrs.push({ key, value });
  return total;
}

/**
 * Sets many xattrs, one after another, on one list (setXattrBudgeted's
 * rules). Each replaces an earlier one of its key, which setXattrBudgeted
 * finds by searching the whole list: from MANY_XATTRS on, the list's keys
 * are kept in a set instead, so thousands on one inode (a hostile dumpfile
 * or layer) are not quadratic. One instance per list (reset for a new one).
 */
export class XattrKeys {
  private keys: Set<string> | null = null;

  reset(): void {
    this.keys = null;
  }

  set(xattrs: Xattr[], used: number, key: Buffer, value: Buffer, budget: number): number {
    let keys = this.keys;
    if (keys === null) {
      if (xattrs.length < MANY_XATTRS) return setXattrBudgeted(xattrs, used, key, value, budget);
      keys = this.keys = new Set();
      for (const x of xattrs) keys.add(x.key.toString("latin1"));
    }
    const k = key.toString("latin1");
    if (keys.has(k)) return setXattrBudgeted(xattrs, used, key, value, budget);
    const total = appendXattrBudgeted(xattrs, used, key, value, budget);
    if (total >= 0) keys.add(k);
    return total;
  }
}

/** xattrs on one list from which XattrKeys keeps their keys in a set. */
const MANY_XATTRS = 16;

/** Byte equality; a loop beats Buffer.equals's native call on short keys. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  const n = a.length;
  if (n !== b.length) return false;
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Index of name, or -(insertion point) - 1. */
function findEntry(ents: Dirent[], name: Buffer): number {
  let lo = 0;
  let hi = ents.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = compareBytes(ents[mid]!.name, name);
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return -lo - 1;
}

/**
 * Byte-wise comparison (strcmp order for NUL-free names). A plain loop beats
 * Buffer.compare's native call for the short names and keys it is used on.
 */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** Compare mtimes as signed seconds, then nanoseconds. */
export function compareMtime(a: Inode, b: { mtimeSec: bigint; mtimeNsec: number }): number {
  if (a.mtimeSec !== b.mtimeSec) return a.mtimeSec < b.mtimeSec ? -1 : 1;
  return a.mtimeNsec - b.mtimeNsec;
}

/**
 * Depth-first walk in name order, calling visit for every entry with its
 * full path (root first as "/"). Hardlink entries are visited too.
 */
export function walkDepthFirst(
  root: Inode,
  visit: (path: Buffer, ent: Dirent | null, inode: Inode) => void,
): void {
  visit(Buffer.from("/"), null, root);
  const rec = (dir: Inode, prefix: Buffer): void => {
    for (const ent of dir.entries!) {
      const path = Buffer.concat([prefix, Buffer.from("/"), ent.name]);
      visit(path, ent, ent.inode);
      if (!ent.hardlink && ent.inode.entries) rec(ent.inode, path);
    }
  };
  rec(root, Buffer.alloc(0));
}
