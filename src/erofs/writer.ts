/**
 * The composefs EROFS writer, byte-identical to upstream mkcomposefs
 * (libcomposefs/lcfs-writer.c lcfs_write_to, lcfs-writer-erofs.c).
 *
 * Steps, as upstream runs them:
 *  1. choose the format version (0, or 1 when the tree has a whiteout);
 *  2. rewrite every inode for overlayfs: escape `trusted.overlay.*`, add the
 *     metacopy/redirect xattrs of external files, turn whiteouts (char 0/0)
 *     into marked regular files, `opaque=y` and the 256 `00`..`ff` whiteouts
 *     on the root;
 *  3. order inodes breadth-first, recount directory nlink, sort xattrs;
 *  4. pick the shared xattrs (pairs used by two or more inodes);
 *  5. lay out inodes (compact or extended, inline tails that never straddle
 *     a block) and data blocks;
 *  6. write header, superblock, inodes, shared xattrs, data blocks.
 * The input tree is not modified.
 */
import { escape } from "../dumpfile/escape.js";
import { CfsError } from "../util/errors.js";
import {
  compareBytes,
  EXTERNAL_XATTR_BUDGET,
  Inode,
  setXattrBudgeted,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  type Xattr,
} from "../model/inode.js";
import {
  BLOCK_SIZE,
  chunking,
  COMPOSEFS_FLAG_HAS_ACL,
  COMPOSEFS_HEADER_VERSION,
  COMPOSEFS_MAGIC,
  COMPOSEFS_VERSION_MAX,
  DIRENT_SIZE,
  encodeInodeFields,
  encodeSuperBlock,
  EROFS_MAGIC,
  FEATURE_COMPAT_MTIME,
  FEATURE_COMPAT_XATTR_FILTER,
  FIRST_INODE_OFFSET,
  FSVERITY_HASH_SHA256,
  FSVERITY_HASH_SHA512,
  FT_BLKDEV,
  FT_CHRDEV,
  FT_DIR,
  FT_FIFO,
  FT_REG_FILE,
  FT_SOCK,
  FT_SYMLINK,
  FT_UNKNOWN,
  INODE_COMPACT_SIZE,
  INODE_EXTENDED_SIZE,
  LAYOUT_CHUNK_BASED,
  LAYOUT_FLAT_INLINE,
  LAYOUT_FLAT_PLAIN,
  MAX_DIR_DEPTH,
  MAX_NONINLINE_CHUNKS,
  MAX_SHARED_REFS,
  OVERLAY_ESCAPED_PREFIX,
  OVERLAY_PREFIX,
  put16,
  put32,
  roundUp,
  SLOT_SIZE,
  SUPER_OFFSET,
  XATTR_ESCAPED_OPAQUE,
  XATTR_ESCAPED_WHITEOUT,
  XATTR_ESCAPED_WHITEOUTS,
  XATTR_FILTER_BITS,
  XATTR_FILTER_SEED,
  XATTR_IBODY_HEADER_SIZE,
  XATTR_METACOPY,
  XATTR_OPAQUE,
  XATTR_REDIRECT,
  XATTR_USER_OPAQUE,
  XATTR_USER_WHITEOUT,
  XATTR_USER_WHITEOUTS,
  xattrEntrySize,
  xattrKeyIndex,
} from "./format.js";
import { xxh32 } from "./xxhash32.js";

export interface WriteOptions {
  /** --min-version (default 0). */
  minVersion?: number;
  /** --max-version (default 1). */
  maxVersion?: number;
  /**
   * Digest algorithm of external files' metacopy xattrs. sha256 is what
   * mkcomposefs writes; sha512 only for sha512 repositories.
   */
  metacopyAlgorithm?: "sha256" | "sha512";
  /** writeImageTo's window (default 1 MiB); tests make it small to cross many window ends. */
  windowSize?: number;
  /** Probes before the pair table turns to strings (default 64, see Pairs.byBytes); tests make it 0 to take that path. */
  maxProbes?: number;
}

export interface WrittenImage {
  image: Buffer;
  version: number;
}

const B = (s: string) => Buffer.from(s, "latin1");
const K_METACOPY = B(XATTR_METACOPY);
const K_REDIRECT = B(XATTR_REDIRECT);
const K_METACOPY_PLAIN = B(XATTR_METACOPY);
const K_REDIRECT_PLAIN = B(XATTR_REDIRECT);
const K_OPAQUE = B(XATTR_OPAQUE);
const K_ESC_WHITEOUT = B(XATTR_ESCAPED_WHITEOUT);
const K_ESC_WHITEOUTS = B(XATTR_ESCAPED_WHITEOUTS);
const K_ESC_OPAQUE = B(XATTR_ESCAPED_OPAQUE);
const K_USER_WHITEOUT = B(XATTR_USER_WHITEOUT);
const K_USER_WHITEOUTS = B(XATTR_USER_WHITEOUTS);
const K_USER_OPAQUE = B(XATTR_USER_OPAQUE);
const K_SELINUX = B("security.selinux");
const K_ACL_ACCESS = B("system.posix_acl_access");
const K_ACL_DEFAULT = B("system.posix_acl_default");
const OVERLAY_PREFIX_B = B(OVERLAY_PREFIX);
const OVERLAY_ESCAPED_PREFIX_B = B(OVERLAY_ESCAPED_PREFIX);
const EMPTY = Buffer.alloc(0);
const DOT = B(".");
const DOTDOT = B("..");

/** What only a directory has. */
interface DirData {
  /** Entries, `.` and `..` included, in name order: names and the inodes they point at. */
  names: Buffer[];
  targets: WNode[];
  /** Dirent groups: [start, end) indexes of each block, the inline tail last. */
  groups: Array<[number, number]>;
}

/** An inode as it will be written: the rewritten copy of a tree inode. */
class WNode {
  mode: number;
  size: bigint;
  nlink: number;
  /** Rewritten xattrs, with upstream's running budget estimate. */
  xattrs: Xattr[];
  budget: number;
  /** A directory's entries, `.` and `..` included, in name order: names and the inodes they point at. */
  dir: DirData | null = null;
  /** This inode's pairs, one per xattr in key order: flat[pairStart, pairStart + pairCount). */
  pairStart = 0;
  pairCount = 0;
  /** How many of this inode's pairs are referenced as shared (the first ones in key order, at most 128). */
  nShared = 0;
  nBlocks = 0;
  tail = 0;
  compact = false;
  xattrSize = 0;
  offset = 0;
  chunkCount = 0;
  chunkBits = 0;
  /** mode & S_IFMT. */
  type: number;
  /** A regular file whose data is elsewhere (chunk-based, with metacopy). */
  external: boolean;
  /** The implicit xattrs of an external file, besides `xattrs`: VIRTUAL_METACOPY | VIRTUAL_REDIRECT. */
  virtual = 0;
  /** Directory nesting level (the root is 0). */
  depth = 0;

  constructor(
    readonly src: Inode,
    public parent: WNode | null,
  ) {
    this.mode = src.mode;
    this.size = src.size;
    this.nlink = src.nlink;
    // Copied on first change (most inodes keep their xattrs as they are).
    this.xattrs = src.xattrs;
    // Upstream rewrites a copy of the tree (lcfs_node_clone), which counts
    // its xattrs from 0: only what the writer adds is budgeted.
    this.budget = 0;
    this.type = src.mode & S_IFMT;
    this.external = this.type === S_IFREG && this.size > 0n && src.content === null;
    if (this.external) {
      const c = chunking(this.size);
      this.chunkCount = c.chunkCount;
      this.chunkBits = c.chunkBits;
    }
  }

  get nid(): number {
    return this.offset / SLOT_SIZE;
  }
}

/** The node's own xattr list (the Xattr objects stay shared: replace one, never change it). */
function ownXattrs(n: WNode): Xattr[] {
  if (n.xattrs === n.src.xattrs) n.xattrs = n.src.xattrs.slice();
  return n.xattrs;
}

/** Whether b starts with prefix (a loop: cheaper than a native call on short keys). */
function startsWith(b: Uint8Array, prefix: Uint8Array): boolean {
  const n = prefix.length;
  if (b.length < n) return false;
  for (let i = 0; i < n; i++) if (b[i] !== prefix[i]) return false;
  return true;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  const n = a.length;
  if (n !== b.length) return false;
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Copy src into dst at off: a loop for short pieces, set() for long ones. */
function copyInto(dst: Uint8Array, off: number, src: Uint8Array, start = 0, end = src.length): void {
  if (end - start > 64) {
    dst.set(start === 0 && end === src.length ? src : src.subarray(start, end), off);
    return;
  }
  for (let i = start; i < end; i++) dst[off++] = src[i]!;
}

/**
 * Upstream's error (ERANGE from lcfs_node_set_xattr) when the xattrs the
 * writer adds overflow the budget of the rewritten copy (whose estimate
 * starts at 0, and wraps below it when an xattr it never counted is
 * replaced: an inode's own trusted.overlay.* xattr, escaped, that the writer
 * then sets again, as for whiteouts and their directories), naming the inode.
 */
function xattrRangeError(n: WNode): CfsError {
  return new CfsError(
    `cannot write file: Numerical result out of range (${nodePath(n)}: its xattrs and those the image adds exceed ${EXTERNAL_XATTR_BUDGET} bytes)`,
  );
}

/** An inode's first name, found from its parents' entries, escaped as in a dumpfile (for errors). */
function nodePath(n: WNode): string {
  const names: Uint8Array[] = [];
  for (let c = n; c.parent !== null && c.parent !== c; c = c.parent) {
    const e = c.parent.src.entries?.find((d) => d.inode === c.src);
    names.push(e ? e.name : Buffer.from("?"));
  }
  return "/" + names.reverse().map((b) => escape(b)).join("/");
}

/** lcfs_node_set_xattr on the rewritten copy, with the same budget. */
function setX(n: WNode, key: Buffer, value: Buffer): void {
  const used = setXattrBudgeted(ownXattrs(n), n.budget, key, value, EXTERNAL_XATTR_BUDGET);
  if (used < 0) throw xattrRangeError(n);
  n.budget = used;
}

function fileType(mode: number): number {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return FT_REG_FILE;
    case S_IFDIR:
      return FT_DIR;
    case S_IFCHR:
      return FT_CHRDEV;
    case S_IFBLK:
      return FT_BLKDEV;
    case S_IFIFO:
      return FT_FIFO;
    case S_IFSOCK:
      return FT_SOCK;
    case S_IFLNK:
      return FT_SYMLINK;
    default:
      return FT_UNKNOWN;
  }
}

function isWhiteout(n: Inode): boolean {
  return (n.mode & S_IFMT) === S_IFCHR && n.rdev === 0;
}

/** lcfs_write_update_version: version 1 once a whiteout is present. */
function chooseVersion(root: Inode, minVersion: number, maxVersion: number): number {
  if (minVersion > COMPOSEFS_VERSION_MAX || maxVersion > COMPOSEFS_VERSION_MAX || minVersion < 0 || maxVersion < 0) {
    throw new CfsError("cannot write file: Invalid argument");
  }
  if (maxVersion < minVersion) maxVersion = minVersion;
  if (minVersion >= 1 || maxVersion < 1) return minVersion;
  const stack: Inode[] = [root];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (isWhiteout(n)) return 1;
    const ents = n.entries;
    if (ents) {
      for (let i = 0; i < ents.length; i++) if (!ents[i]!.hardlink) stack.push(ents[i]!.inode);
    }
  }
  return minVersion;
}

/** add_overlayfs_xattrs, for one node whose parent was rewritten before it. */
function rewriteNode(n: WNode, version: number): void {
  // Validation (lcfs_node_validate): external files must fit 1024 chunks.
  if (n.external && n.chunkCount > MAX_NONINLINE_CHUNKS) {
    throw new CfsError(`cannot write file: File too large (${nodePath(n)}: ${n.size} bytes)`);
  }
  // Escape trusted.overlay.* in place; upstream does not update the budget.
  const plen = OVERLAY_PREFIX_B.length;
  for (let i = 0; i < n.xattrs.length; i++) {
    const x = n.xattrs[i]!;
    if (startsWith(x.key, OVERLAY_PREFIX_B)) {
      const xs = ownXattrs(n);
      xs[i] = { key: Buffer.concat([OVERLAY_ESCAPED_PREFIX_B, x.key.subarray(plen)]), value: x.value };
    }
  }
  if (n.external) {
    // metacopy, then redirect, as lcfs_node_set_xattr adds them. Their keys
    // cannot be there already (trusted.overlay.* was escaped just above), and
    // their values stay implicit (see isVirtual): only the budget is kept.
    const d = n.src.digest ?? EMPTY;
    const p = n.src.payload;
    const xs = n.xattrs;
    const hasRedirect = p !== null && p.length > 0;
    let used = n.budget + 7 + K_METACOPY.length + virtualLength(K_METACOPY, d) + (xs.length === 0 ? 12 : 0);
    if (used > EXTERNAL_XATTR_BUDGET) throw xattrRangeError(n);
    if (hasRedirect) {
      used += 7 + K_REDIRECT.length + virtualLength(K_REDIRECT, p);
      if (used > EXTERNAL_XATTR_BUDGET) throw xattrRangeError(n);
    }
    n.virtual = VIRTUAL_METACOPY | (hasRedirect ? VIRTUAL_REDIRECT : 0);
    n.budget = used;
  }
  if (isWhiteout(n.src)) {
    const parent = n.parent!;
    n.size = 0n;
    n.mode = S_IFREG | (n.mode & ~S_IFMT);
    n.type = S_IFREG;
    setX(n, K_ESC_WHITEOUT, EMPTY);
    setX(n, K_USER_WHITEOUT, EMPTY);
    setX(parent, K_ESC_WHITEOUTS, EMPTY);
    setX(parent, K_USER_WHITEOUTS, EMPTY);
    if (version >= 1) {
      setX(parent, K_ESC_OPAQUE, B("x"));
      setX(parent, K_USER_OPAQUE, B("x"));
    }
  }
}

/**
 * The metacopy and redirect xattrs of external files are held by their
 * source: the digest (struct ovl_metacopy is a 4-byte header and the digest;
 * no digest, no bytes) and the payload (a redirect is "/" + payload). Equal
 * sources mean equal values, so pairs are found without building them, and
 * the bytes are written straight from the source. Only these two key objects
 * mark such values: every other key is the tree's, or a constant of its own.
 */
function isVirtual(key: Buffer): boolean {
  return key === K_METACOPY || key === K_REDIRECT;
}

/** Length of the value an xattr stands for. */
function virtualLength(key: Buffer, value: Buffer): number {
  if (key === K_METACOPY) return value.length === 0 ? 0 : 4 + value.length;
  if (key === K_REDIRECT) return 1 + value.length;
  return value.length;
}

const VIRTUAL_METACOPY = 1;
const VIRTUAL_REDIRECT = 2;

/** The fs-verity algorithm of metacopy values, for the image being written. */
let metacopyAlgorithm: "sha256" | "sha512" = "sha256";

/** Write the value an xattr stands for at off; returns the end. */
function writeValue(img: Buffer, off: number, key: Buffer, value: Buffer): number {
  if (key === K_METACOPY) {
    if (value.length === 0) return off;
    // struct ovl_metacopy: version 0, length, flags 0, hash algorithm, digest.
    img[off] = 0;
    img[off + 1] = 4 + value.length;
    img[off + 2] = 0;
    img[off + 3] = metacopyAlgorithm === "sha512" && value.length === 64 ? FSVERITY_HASH_SHA512 : FSVERITY_HASH_SHA256;
    copyInto(img, off + 4, value);
    return off + 4 + value.length;
  }
  if (key === K_REDIRECT) {
    img[off] = 0x2f;
    copyInto(img, off + 1, value);
    return off + 1 + value.length;
  }
  copyInto(img, off, value);
  return off + value.length;
}

/** Give pair e its value itself, as a Buffer. */
function materialize(pairs: Pairs, e: number): void {
  const key = pairs.keys[e]!;
  if (!isVirtual(key)) return;
  const value = pairs.values[e]!;
  const v = Buffer.alloc(virtualLength(key, value));
  writeValue(v, 0, key, value);
  // The same key bytes in another object: the value is now the bytes themselves.
  pairs.keys[e] = key === K_METACOPY ? K_METACOPY_PLAIN : K_REDIRECT_PLAIN;
  pairs.values[e] = v;
}

function hexName(i: number): Buffer {
  return B(i.toString(16).padStart(2, "0"));
}

/** The 256 `00`..`ff` char devices hiding the object store's directories. */
function rootWhiteouts(root: Inode): Array<{ name: Buffer; inode: Inode }> {
  const out: Array<{ name: Buffer; inode: Inode }> = [];
  const selinux = root.getXattr(K_SELINUX);
  for (let i = 0; i < 256; i++) {
    const name = hexName(i);
    if (root.lookup(name)) continue;
    const w = new Inode(S_IFCHR | 0o644);
    w.uid = root.uid;
    w.gid = root.gid;
    w.mtimeSec = root.mtimeSec;
    w.mtimeNsec = root.mtimeNsec;
    if (selinux) w.setXattr(K_SELINUX, selinux);
    out.push({ name, inode: w });
  }
  return out;
}

function isSorted(xs: Xattr[]): boolean {
  for (let i = 1; i < xs.length; i++) if (compareBytes(xs[i - 1]!.key, xs[i]!.key) > 0) return false;
  return true;
}

function cmpXattr(a: Xattr, b: Xattr): number {
  return compareBytes(a.key, b.key);
}

/** Shared table order: key descending, longer value first, value descending. */
function cmpShared(ak: Buffer, av: Buffer, bk: Buffer, bv: Buffer): number {
  const k = Buffer.compare(bk, ak);
  if (k !== 0) return k;
  if (av.length !== bv.length) return bv.length - av.length;
  return Buffer.compare(bv, av);
}

/**
 * The distinct (key, value) pairs of an image, found by hashing the bytes
 * and comparing exactly on a hash hit (by a Map of the bytes once a lookup
 * has probed too long: see byBytes).
 * A pair is a number; its key, value (for a metacopy or redirect key what
 * it stands for, see isVirtual), key info, use count, offset in the shared
 * table (-1: none) and encoded entry size (4-byte aligned) are in the
 * arrays below.
 */
class Pairs {
  /** Open addressing: slot -> pair + 1 (0: empty), and the pair's hash. */
  private readonly slots: Int32Array;
  private readonly hashes: Int32Array;
  private readonly mask: number;
  length = 0;
  readonly keys: Buffer[] = [];
  readonly values: Buffer[] = [];
  readonly kis: KeyInfo[] = [];
  readonly count: Int32Array;
  readonly offset: Int32Array;
  readonly size: Int32Array;

  /** expected: how many lookups at most (the table never fills past half). */
  constructor(
    expected: number,
    private readonly maxProbes = MAX_PROBES,
  ) {
    let cap = 16;
    while (cap < expected * 2) cap *= 2;
    this.slots = new Int32Array(cap);
    this.hashes = new Int32Array(cap);
    this.mask = cap - 1;
    this.count = new Int32Array(expected);
    this.offset = new Int32Array(expected).fill(-1);
    this.size = new Int32Array(expected);
  }

  /** The last keys seen, by object: an image has few distinct keys, mostly shared objects. */
  private readonly recentKeys: Buffer[] = [];
  private readonly recentInfo: KeyInfo[] = [];

  private keyInfo(key: Buffer): KeyInfo {
    const keys = this.recentKeys;
    for (let i = 0; i < keys.length; i++) if (keys[i] === key) return this.recentInfo[i]!;
    let ki = keyInfoByObject.get(key);
    if (!ki) ki = keyInfoOf(key);
    if (keys.length >= 8) {
      keys.pop();
      this.recentInfo.pop();
    }
    keys.unshift(key);
    this.recentInfo.unshift(ki);
    return ki;
  }

  /**
   * Pairs by their bytes as a string, once a lookup in the hash table has
   * probed more than MAX_PROBES slots. Values made to collide under
   * hashBytes would otherwise have every lookup walk all the others (a
   * quadratic run on a hostile dumpfile or layer); V8 hashes strings with a
   * per-process seed. Strings cost more memory than the table, so an
   * ordinary tree never gets here.
   */
  private byBytes: Map<string, number> | null = null;

  /** The pair of (key, value), counted once more. */
  use(key: Buffer, value: Buffer): number {
    if (this.byBytes !== null) return this.findByBytes(key, value);
    const ki = this.keyInfo(key);
    const h = hashBytes(value, ki.hash);
    const slots = this.slots;
    const mask = this.mask;
    let i = (h ^ (h >>> 15)) & mask;
    for (let probes = 0; ; probes++) {
      const s = slots[i]!;
      if (s === 0) break;
      if (probes === this.maxProbes) {
        const byBytes = new Map<string, number>();
        for (let e = 0; e < this.length; e++) byBytes.set(pairString(this.keys[e]!, this.values[e]!), e);
        this.byBytes = byBytes;
        return this.findByBytes(key, value);
      }
      if (this.hashes[i] === h) {
        const e = s - 1;
        const k = this.keys[e]!;
        const v = this.values[e]!;
        if ((k === key || bytesEqual(k, key)) && (v === value || bytesEqual(v, value))) {
          this.count[e]!++;
          return e;
        }
      }
      i = (i + 1) & mask;
    }
    const e = this.add(key, value, ki);
    slots[i] = e + 1;
    this.hashes[i] = h;
    return e;
  }

  private findByBytes(key: Buffer, value: Buffer): number {
    const str = pairString(key, value);
    let e = this.byBytes!.get(str);
    if (e !== undefined) {
      this.count[e]!++;
      return e;
    }
    e = this.add(key, value, this.keyInfo(key));
    this.byBytes!.set(str, e);
    return e;
  }

  /** A new pair, used once. */
  private add(key: Buffer, value: Buffer, ki: KeyInfo): number {
    const e = this.length++;
    this.keys.push(key);
    this.values.push(value);
    this.kis.push(ki);
    this.count[e] = 1;
    this.size[e] = xattrEntrySize(key.length - ki.suffixStart, virtualLength(key, value));
    return e;
  }
}

/** See Pairs.byBytes. Linear probing at most half full takes a few probes; 64 is never reached by chance. */
const MAX_PROBES = 64;

/** A pair as one string: xattr names hold no NUL byte. */
function pairString(key: Buffer, value: Buffer): string {
  return key.toString("latin1") + "\0" + value.toString("latin1");
}

/**
 * FNV-1a over every byte (a hit is still compared in full). Hashing only
 * the ends of long values made values that differ only in their middle (a
 * counter inside a longer string) collide, and every lookup walk them all.
 */
function hashBytes(b: Uint8Array, h: number): number {
  const n = b.length;
  for (let i = 0; i < n; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  return Math.imul(h ^ n, 0x01000193);
}

interface KeyInfo {
  index: number;
  suffixStart: number;
  filterBit: number;
  /** hashBytes of the key, where a pair's hash starts. */
  hash: number;
}
const keyInfo = new Map<string, KeyInfo>();
/** The same, by key object: keys are mostly shared Buffers (constants, interned by the parser). */
const keyInfoByObject = new WeakMap<Buffer, KeyInfo>();

function keyInfoOf(key: Buffer): KeyInfo {
  const ks = key.toString("latin1");
  let ki = keyInfo.get(ks);
  if (!ki) {
    const { index, suffix } = xattrKeyIndex(key);
    ki = {
      index,
      suffixStart: key.length - suffix.length,
      filterBit: xxh32(suffix, (XATTR_FILTER_SEED + index) >>> 0) & (XATTR_FILTER_BITS - 1),
      hash: hashBytes(key, 0x811c9dc5),
    };
    if (keyInfo.size < 4096) keyInfo.set(ks, ki);
  }
  keyInfoByObject.set(key, ki);
  return ki;
}

/** Build, rewrite and order the inodes breadth-first (lcfs_compute_tree). */
function buildNodes(root: Inode, version: number): WNode[] {
  const wroot = new WNode(root, null);
  wroot.parent = wroot;
  const order: WNode[] = [wroot];
  const pending: Array<{ dir: WNode; slot: number; inode: Inode }> = [];
  rewriteNode(wroot, version);
  for (let qi = 0; qi < order.length; qi++) {
    const n = order[qi]!;
    if (n.type !== S_IFDIR) continue;
    let ents: ReadonlyArray<{ name: Buffer; inode: Inode; hardlink: boolean }> = n.src.entries ?? [];
    let extra: Set<Inode> | null = null;
    if (n === wroot) {
      extra = new Set<Inode>();
      // Added after rewriting upstream, so these stay plain char devices.
      const ws = rootWhiteouts(n.src);
      for (const w of ws) extra.add(w.inode);
      ents = [...ents, ...ws.map((w) => ({ ...w, hardlink: false }))].sort((a, b) => Buffer.compare(a.name, b.name));
    }
    // `.` and `..` among the sorted names, without comparing every name: a
    // name sorts before "." only if its first byte is below '.', and before
    // ".." only if it also starts with '.' and its second byte is below '.'.
    const m = ents.length;
    let dot = 0;
    while (dot < m && ents[dot]!.name[0]! < 0x2e) dot++;
    let dotdot = dot;
    while (dotdot < m && ents[dotdot]!.name[0] === 0x2e && ents[dotdot]!.name.length > 1 && ents[dotdot]!.name[1]! < 0x2e) dotdot++;
    const names = new Array<Buffer>(m + 2);
    const targets = new Array<WNode>(m + 2);
    names[dot] = DOT;
    targets[dot] = n;
    names[dotdot + 1] = DOTDOT;
    targets[dotdot + 1] = n.parent!;
    // nlink: 2 and one for each subdirectory (hardlinks and `.`/`..` do not count).
    let nlink = 2;
    for (let k = 0; k < m; k++) {
      const e = ents[k]!;
      const slot = k < dot ? k : k < dotdot ? k + 1 : k + 2;
      names[slot] = e.name;
      if (e.hardlink) {
        targets[slot] = n; // until the primary entry is laid out
        pending.push({ dir: n, slot, inode: e.inode });
        continue;
      }
      const child = new WNode(e.inode, n);
      if (extra === null || !extra.has(e.inode)) rewriteNode(child, version);
      order.push(child);
      targets[slot] = child;
      if (child.type === S_IFDIR) {
        nlink++;
        child.depth = n.depth + 1;
        if (child.depth >= MAX_DIR_DEPTH) throw new CfsError(`cannot write file: directories nest deeper than ${MAX_DIR_DEPTH} levels`);
      }
    }
    n.dir = { names, targets, groups: [] };
    n.nlink = nlink;
  }
  setX(wroot, K_OPAQUE, B("y"));
  // Hardlink entries point at the inode laid out at its primary entry.
  const byInode = new Map<Inode, WNode | null>();
  for (const p of pending) byInode.set(p.inode, null);
  if (byInode.size > 0) for (const w of order) if (byInode.has(w.src)) byInode.set(w.src, w);
  for (const p of pending) {
    const target = byInode.get(p.inode);
    if (!target) throw new CfsError("cannot write file: Invalid argument (hardlink to an inode outside the tree)");
    p.dir.dir!.targets[p.slot] = target;
  }
  return order;
}

/** Directory data shape: greedy groups of dirents, tail inline if <= 2048. */
function layoutDir(n: WNode): void {
  const groups: Array<[number, number]> = [];
  let size = 0;
  let first = 0;
  const ds = n.dir!.names;
  for (let i = 0; i < ds.length; i++) {
    const len = DIRENT_SIZE + ds[i]!.length;
    if (size + len > BLOCK_SIZE) {
      groups.push([first, i]);
      first = i;
      size = 0;
    }
    size += len;
  }
  groups.push([first, ds.length]);
  n.dir!.groups = groups;
  n.nBlocks = groups.length - 1;
  n.tail = size;
  // As a heuristic upstream never inlines more than half a block.
  if (size > BLOCK_SIZE / 2) {
    n.nBlocks++;
    n.tail = 0;
  }
}

/** (blocks, tail) of an inode before placement (compute_erofs_inode_size). */
function dataShape(n: WNode): void {
  const type = n.type;
  if (type === S_IFDIR) {
    layoutDir(n);
  } else if (type === S_IFLNK) {
    n.nBlocks = 0;
    n.tail = n.src.payload!.length;
  } else if (type === S_IFREG && n.size > 0n) {
    if (n.src.content !== null) {
      const size = Number(n.size);
      n.nBlocks = Math.floor(size / BLOCK_SIZE);
      n.tail = size % BLOCK_SIZE;
      if (n.tail > BLOCK_SIZE / 2) {
        n.nBlocks++;
        n.tail = 0;
      }
    } else {
      n.nBlocks = 0;
      n.tail = 4 * n.chunkCount;
    }
  } else {
    n.nBlocks = 0;
    n.tail = 0;
  }
}

/** Padding before an inode so that its inline tail never straddles a block. */
function tailPadding(n: WNode, pos: number, isize: number, xsize: number): number {
  if (n.type === S_IFLNK) {
    const total = isize + xsize + n.tail;
    if (total >= BLOCK_SIZE) {
      n.nBlocks++;
      n.tail = 0;
    }
    // Upstream decides with the original total, even when the target moved out.
    if (Math.floor(pos / BLOCK_SIZE) !== Math.floor((pos + total - 1) / BLOCK_SIZE)) {
      return roundUp(pos, BLOCK_SIZE) - pos;
    }
    return 0;
  }
  let room = BLOCK_SIZE - ((pos + isize + xsize) % BLOCK_SIZE);
  if (room < n.tail) {
    const pad = roundUp(room, SLOT_SIZE);
    room = BLOCK_SIZE - ((pos + isize + xsize + pad) % BLOCK_SIZE);
    if (n.tail <= room) return pad;
    n.nBlocks++;
    n.tail = 0;
    return roundUp(pos, BLOCK_SIZE) - pos;
  }
  return 0;
}

/** Write a composefs image of the tree. */
export function writeImage(root: Inode, opts: WriteOptions = {}): WrittenImage {
  const { window, version } = writeImageWindowed(root, opts, null);
  return { image: window.buf, version };
}

/**
 * Write a composefs image of the tree to `sink`, in order, a chunk at a time
 * (at most about 1 MiB is held: the image is never whole in memory). Each
 * chunk is only valid during the call. Returns the format version and size.
 */
export function writeImageTo(root: Inode, opts: WriteOptions, sink: (chunk: Buffer) => void): { version: number; size: number } {
  const { window, version } = writeImageWindowed(root, opts, sink);
  return { version, size: window.total };
}

/**
 * The part of the image being written: bytes before `base` are already out.
 * Every write lies at or after the previous one (inodes, shared xattrs and
 * data blocks are laid out in the order they are written), so the window
 * only ever slides forward; what it leaves behind is final.
 */
class ImageWindow {
  buf: Buffer;
  base = 0;

  constructor(
    readonly total: number,
    private readonly sink: ((chunk: Buffer) => void) | null,
    windowSize = WINDOW_SIZE,
  ) {
    this.buf = Buffer.alloc(sink === null ? total : Math.min(total, windowSize));
  }

  /** Make [off, off + len) writable; returns where off is in buf. */
  at(off: number, len: number): number {
    if (off + len > this.base + this.buf.length) {
      if (this.sink === null) throw new CfsError("internal: image write out of bounds");
      this.sendTo(off);
      this.base = off;
      if (len > this.buf.length) this.buf = Buffer.alloc(len);
    }
    return off - this.base;
  }

  /**
   * Send the image up to `end` and leave the window zeroed. Padding can
   * start the next write beyond the window's end: the bytes between are
   * zeros, and are sent too.
   */
  private sendTo(end: number): void {
    const n = end - this.base;
    const inWindow = Math.min(n, this.buf.length);
    if (inWindow > 0) this.sink!(this.buf.subarray(0, inWindow));
    this.buf.fill(0);
    for (let gap = n - inWindow; gap > 0; ) {
      const k = Math.min(gap, this.buf.length);
      this.sink!(this.buf.subarray(0, k));
      gap -= k;
    }
  }

  /** Send what is left (up to the image size). */
  finish(): void {
    if (this.sink !== null) this.sendTo(this.total);
  }
}

const WINDOW_SIZE = 1 << 20;

function writeImageWindowed(root: Inode, opts: WriteOptions, sink: ((chunk: Buffer) => void) | null): { window: ImageWindow; version: number } {
  if (!root.isDir()) throw new CfsError("cannot write file: the root is not a directory");
  const version = chooseVersion(root, opts.minVersion ?? 0, opts.maxVersion ?? 1);
  metacopyAlgorithm = opts.metacopyAlgorithm ?? "sha256";
  // One function a step: each is compiled on its own as it gets hot, and
  // none is thrown back to the interpreter by a later step it never ran.
  const nodes = buildNodes(root, version);
  const tree = computeTree(nodes);
  const { pairs, flat } = collectPairs(nodes, opts.maxProbes);
  const shared = sharedTable(pairs);
  const layout = placeInodes(nodes, pairs, flat, tree);
  const inodesEnd = roundUp(layout.end, SLOT_SIZE);
  const dataStart = roundUp(inodesEnd + shared.size, BLOCK_SIZE);
  const totalSize = dataStart + layout.nDataBlocks * BLOCK_SIZE;
  // The root comes first (nid 36), unless its inline tail had it moved to the next block.
  const rootNid = nodes[0]!.nid;
  if (rootNid > 0xffff) throw new CfsError("internal: root nid does not fit the superblock");
  if (totalSize / BLOCK_SIZE > 0xffffffff) throw new CfsError("cannot write file: File too large (the image would pass 2^32 blocks)");

  const win = new ImageWindow(totalSize, sink, opts.windowSize);
  win.at(0, FIRST_INODE_OFFSET);
  const img = win.buf;
  // composefs header
  img.writeUInt32LE(COMPOSEFS_MAGIC, 0);
  img.writeUInt32LE(COMPOSEFS_HEADER_VERSION, 4);
  img.writeUInt32LE(tree.hasAcl ? COMPOSEFS_FLAG_HAS_ACL : 0, 8);
  img.writeUInt32LE(version, 12);
  encodeSuperBlock(img, SUPER_OFFSET, {
    magic: EROFS_MAGIC,
    checksum: 0,
    featureCompat: FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER,
    blkszbits: 12,
    rootNid,
    inos: BigInt(nodes.length),
    buildTime: tree.minSec,
    buildTimeNsec: tree.minNsec,
    blocks: dataStart / BLOCK_SIZE + layout.nDataBlocks,
    metaBlkAddr: 0,
    xattrBlkAddr: Math.floor(inodesEnd / BLOCK_SIZE),
    featureIncompat: 0,
  });
  writeInodes(win, nodes, pairs, flat, inodesEnd % BLOCK_SIZE, dataStart / BLOCK_SIZE);
  writeSharedTable(win, pairs, shared.list, inodesEnd);
  const end = writeDataBlocks(win, nodes, dataStart);
  if (end !== totalSize) throw new CfsError("internal: data block accounting mismatch");
  win.finish();
  return { window: win, version };
}

interface TreeFacts {
  /** The oldest mtime: the superblock's build time, and what compact inodes share. */
  minSec: bigint;
  minNsec: number;
  hasAcl: boolean;
}

/** lcfs_compute_tree: xattr order, minimum mtime, ACLs (directory nlink is counted in buildNodes). */
function computeTree(nodes: WNode[]): TreeFacts {
  const root = nodes[0]!.src;
  let minSec = root.mtimeSec;
  let minNsec = root.mtimeNsec;
  let hasAcl = false;
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i]!;
    let xs = n.xattrs;
    if (xs.length > 1 && !isSorted(xs)) {
      if (xs === n.src.xattrs) xs = n.xattrs = xs.slice();
      xs.sort(cmpXattr);
    }
    const s = n.src;
    if (s.mtimeSec < minSec || (s.mtimeSec === minSec && s.mtimeNsec < minNsec)) {
      minSec = s.mtimeSec;
      minNsec = s.mtimeNsec;
    }
    if (!hasAcl) {
      for (let k = 0; k < xs.length; k++) {
        const key = xs[k]!.key;
        if (bytesEqual(key, K_ACL_ACCESS) || bytesEqual(key, K_ACL_DEFAULT)) hasAcl = true;
      }
    }
  }
  return { minSec, minNsec, hasAcl };
}

/**
 * Every inode's (key, value) pairs, found in one table: the sorted xattrs
 * with metacopy and redirect merged in at their place. flat[n.pairStart,
 * n.pairStart + n.pairCount) are node n's pairs.
 */
function collectPairs(nodes: WNode[], maxProbes: number | undefined): { pairs: Pairs; flat: Int32Array } {
  let nPairRefs = 0;
  for (let j = 0; j < nodes.length; j++) {
    const n = nodes[j]!;
    nPairRefs += n.xattrs.length + (n.virtual & 1) + (n.virtual >> 1);
  }
  const pairs = new Pairs(nPairRefs, maxProbes);
  const flat = new Int32Array(nPairRefs);
  let nextRef = 0;
  for (let j = 0; j < nodes.length; j++) {
    const n = nodes[j]!;
    const xs = n.xattrs;
    let v = n.virtual;
    const total = xs.length + (v & 1) + (v >> 1);
    if (total === 0) continue;
    n.pairStart = nextRef;
    n.pairCount = total;
    let i = 0;
    for (let k = 0; k < total; k++) {
      let e: number;
      const vkey = v === 0 ? null : (v & VIRTUAL_METACOPY) !== 0 ? K_METACOPY : K_REDIRECT;
      if (vkey !== null && (i >= xs.length || compareBytes(vkey, xs[i]!.key) < 0)) {
        if (vkey === K_METACOPY) {
          e = pairs.use(K_METACOPY, n.src.digest ?? EMPTY);
          v &= ~VIRTUAL_METACOPY;
        } else {
          e = pairs.use(K_REDIRECT, n.src.payload!);
          v &= ~VIRTUAL_REDIRECT;
        }
      } else {
        const x = xs[i++]!;
        e = pairs.use(x.key, x.value);
      }
      flat[nextRef++] = e;
    }
  }
  return { pairs, flat };
}

/** Shared xattrs: every pair used by two or more inodes, in table order, with their offsets set. */
function sharedTable(pairs: Pairs): { list: number[]; size: number } {
  const list: number[] = [];
  for (let e = 0; e < pairs.length; e++) {
    if (pairs.count[e]! > 1) {
      materialize(pairs, e);
      list.push(e);
    }
  }
  const { keys, values } = pairs;
  list.sort((a, b) => cmpShared(keys[a]!, values[a]!, keys[b]!, values[b]!));
  let size = 0;
  for (const e of list) {
    pairs.offset[e] = size;
    size += pairs.size[e]!;
  }
  return { list, size };
}

/** compute_erofs_inodes: inode format, xattr size and offset of every node. Returns where the last ends and how many data blocks all take. */
function placeInodes(nodes: WNode[], pairs: Pairs, flat: Int32Array, tree: TreeFacts): { end: number; nDataBlocks: number } {
  const { minSec, minNsec } = tree;
  let pos = FIRST_INODE_OFFSET;
  let nDataBlocks = 0;
  for (let j = 0; j < nodes.length; j++) {
    const n = nodes[j]!;
    dataShape(n);
    n.compact =
      n.src.mtimeSec === minSec &&
      n.src.mtimeNsec === minNsec &&
      n.nlink <= 0xffff &&
      n.src.uid <= 0xffff &&
      n.src.gid <= 0xffff &&
      (n.type === S_IFDIR ? n.nBlocks * BLOCK_SIZE + n.tail <= 0xffffffff : n.size <= 0xffffffffn);
    const isize = n.compact ? INODE_COMPACT_SIZE : INODE_EXTENDED_SIZE;
    let nShared = 0;
    let unsharedSize = 0;
    for (let i = n.pairStart; i < n.pairStart + n.pairCount; i++) {
      const e = flat[i]!;
      // At most 128 shared references per inode; the rest are written inline.
      if (pairs.count[e]! > 1 && nShared < MAX_SHARED_REFS) nShared++;
      else unsharedSize += pairs.size[e]!;
    }
    n.nShared = nShared;
    n.xattrSize = nShared === 0 && unsharedSize === 0 ? 0 : roundUp(XATTR_IBODY_HEADER_SIZE + 4 * nShared + unsharedSize, 4);
    if (n.xattrSize > 0 && (n.xattrSize - XATTR_IBODY_HEADER_SIZE) / 4 + 1 > 0xffff) {
      throw new CfsError("cannot write file: Invalid argument (too many xattrs)");
    }
    const aligned = roundUp(pos, SLOT_SIZE);
    const extra = tailPadding(n, aligned, isize, n.xattrSize);
    n.offset = aligned + extra;
    nDataBlocks += n.nBlocks;
    pos = n.offset + isize + n.xattrSize + n.tail;
  }
  return { end: pos, nDataBlocks };
}

/** The inodes, handing out data blocks from firstBlock in the order writeDataBlocks writes them. */
function writeInodes(win: ImageWindow, nodes: WNode[], pairs: Pairs, flat: Int32Array, sharedBase: number, firstBlock: number): void {
  let nextBlock = firstBlock;
  for (let ino = 0; ino < nodes.length; ino++) {
    const n = nodes[ino]!;
    const isize = n.compact ? INODE_COMPACT_SIZE : INODE_EXTENDED_SIZE;
    const at = win.at(n.offset, isize + n.xattrSize + n.tail);
    nextBlock = writeInode(win.buf, at, n, ino, pairs, flat, sharedBase, nextBlock);
  }
}

function writeSharedTable(win: ImageWindow, pairs: Pairs, list: number[], start: number): void {
  let off = start;
  for (const e of list) {
    const size = pairs.size[e]!;
    const at = win.at(off, size);
    writeXattrEntry(win.buf, at, pairs, e);
    off += size;
  }
}

/** The data blocks from dataStart: directory blocks, chunk indexes, inline data too long for its inode. Returns the end. */
function writeDataBlocks(win: ImageWindow, nodes: WNode[], dataStart: number): number {
  let block = dataStart;
  for (let j = 0; j < nodes.length; j++) {
    const n = nodes[j]!;
    if (n.type === S_IFDIR) {
      for (let g = 0; g < n.nBlocks; g++) {
        const [a, b] = n.dir!.groups[g]!;
        const at = win.at(block, BLOCK_SIZE);
        writeDirents(win.buf, at, n, a, b);
        block += BLOCK_SIZE;
      }
    } else if (n.nBlocks > 0) {
      const at = win.at(block, BLOCK_SIZE);
      const img = win.buf;
      if (n.type === S_IFREG && n.src.content === null) {
        img.fill(0xff, at, at + BLOCK_SIZE); // 1024 null chunk indexes
      } else {
        const data = n.type === S_IFLNK ? n.src.payload! : n.src.content!;
        copyInto(img, at, data, 0, Math.min(data.length, BLOCK_SIZE));
      }
      block += BLOCK_SIZE;
    }
  }
  return block;
}

function writeXattrEntry(img: Buffer, off: number, pairs: Pairs, e: number): number {
  const key = pairs.keys[e]!;
  const value = pairs.values[e]!;
  const ki = pairs.kis[e]!;
  const suffixLen = key.length - ki.suffixStart;
  img[off] = suffixLen;
  img[off + 1] = ki.index;
  put16(img, off + 2, virtualLength(key, value));
  copyInto(img, off + 4, key, ki.suffixStart);
  writeValue(img, off + 4 + suffixLen, key, value);
  return off + pairs.size[e]!;
}

function writeDirents(img: Buffer, off: number, n: WNode, a: number, b: number): void {
  let nameoff = DIRENT_SIZE * (b - a);
  let p = off;
  const names = n.dir!.names;
  const targets = n.dir!.targets;
  for (let i = a; i < b; i++) {
    const t = targets[i]!;
    put32(img, p, t.offset / SLOT_SIZE); // nid, le64: the high half stays zero
    put16(img, p + 8, nameoff & 0xffff);
    img[p + 10] = fileType(t.mode);
    p += DIRENT_SIZE;
    nameoff += names[i]!.length;
  }
  for (let i = a; i < b; i++) {
    const name = names[i]!;
    for (let j = 0; j < name.length; j++) img[p++] = name[j]!;
  }
}

function xattrFilter(n: WNode, pairs: Pairs, flat: Int32Array): number {
  let bits = 0;
  for (let i = n.pairStart; i < n.pairStart + n.pairCount; i++) bits |= 1 << pairs.kis[flat[i]!]!.filterBit;
  return ~bits >>> 0;
}

/** Write one inode at img[at]; its data blocks (if any) start at nextBlock. Returns the next free block. */
function writeInode(img: Buffer, at: number, n: WNode, ino: number, pairs: Pairs, flat: Int32Array, sharedBase: number, nextBlock: number): number {
  const type = n.type;
  let layout = n.tail > 0 ? LAYOUT_FLAT_INLINE : LAYOUT_FLAT_PLAIN;
  let size: bigint;
  let u = 0;
  if (type === S_IFDIR) {
    size = BigInt(n.nBlocks * BLOCK_SIZE + n.tail);
  } else if (type === S_IFREG) {
    size = n.size;
  } else if (type === S_IFLNK) {
    size = n.nBlocks === 0 ? BigInt(n.tail) : n.src.size;
  } else {
    size = 0n;
  }
  if (type === S_IFCHR || type === S_IFBLK) {
    u = n.src.rdev >>> 0;
  } else if (type === S_IFDIR || type === S_IFREG || type === S_IFLNK) {
    if (n.nBlocks > 0) {
      u = nextBlock;
      nextBlock += n.nBlocks;
    }
    if (n.external) {
      layout = LAYOUT_CHUNK_BASED;
      // i_u is a union: the chunk format overwrites its low 16 bits.
      u = ((u & 0xffff0000) | (n.chunkBits - 12)) >>> 0;
    }
  }
  const xattrIcount = n.xattrSize === 0 ? 0 : (n.xattrSize - XATTR_IBODY_HEADER_SIZE) / 4 + 1;
  encodeInodeFields(img, at, !n.compact, layout, xattrIcount, n.mode, n.nlink, size, u, ino, n.src.uid, n.src.gid, n.src.mtimeSec, n.src.mtimeNsec);
  let p = at + (n.compact ? INODE_COMPACT_SIZE : INODE_EXTENDED_SIZE);
  if (n.xattrSize > 0) {
    put32(img, p, xattrFilter(n, pairs, flat));
    img[p + 4] = n.nShared;
    p += XATTR_IBODY_HEADER_SIZE;
    // The first nShared shared pairs in key order are referenced by id, the rest inline.
    let refs = 0;
    const end = n.pairStart + n.pairCount;
    for (let i = n.pairStart; i < end; i++) {
      const e = flat[i]!;
      if (pairs.count[e]! > 1 && refs < n.nShared) {
        put32(img, p, (sharedBase + pairs.offset[e]!) / 4);
        p += 4;
        refs++;
      }
    }
    refs = 0;
    for (let i = n.pairStart; i < end; i++) {
      const e = flat[i]!;
      if (pairs.count[e]! > 1 && refs < n.nShared) refs++;
      else p = writeXattrEntry(img, p, pairs, e);
    }
  }
  // The inline tail.
  if (type === S_IFDIR) {
    if (n.tail > 0) {
      const groups = n.dir!.groups;
      const [a, b] = groups[groups.length - 1]!;
      writeDirents(img, p, n, a, b);
    }
  } else if (type === S_IFLNK) {
    if (n.nBlocks === 0) copyInto(img, p, n.src.payload!);
  } else if (type === S_IFREG && n.tail > 0) {
    if (n.src.content !== null) {
      const c = n.src.content;
      copyInto(img, p, c, c.length - n.tail);
    } else {
      img.fill(0xff, p, p + 4 * n.chunkCount);
    }
  }
  return nextBlock;
}
