/**
 * Reading a composefs EROFS image back, as composefs-info does (FORMAT.md
 * §6.1; upstream lcfs_load_node_from_image_ext): `readImage` builds an inode
 * tree, `dumpImage` prints the composefs-dump(5) text straight from the
 * image without building one (what `cfsctl dump` uses: it is several times
 * faster and needs a fraction of the memory). Both share one walker, so they
 * accept and reject exactly the same images.
 *
 * The walk is depth-first in dirent order: the first time a nid is reached
 * it becomes an inode, every later dirent naming it becomes a hardlink entry
 * to that inode. Char devices 0/0 (the root's `00`..`ff` whiteouts) are left
 * out. Overlay xattrs are translated back (redirect → payload, metacopy →
 * digest, escaped whiteout → char 0/0, `trusted.overlay.overlay.X` →
 * `trusted.overlay.X`, the rest of `trusted.overlay.*` and the whiteout
 * markers dropped); other xattrs are kept in on-disk order, inline entries
 * before shared ones.
 *
 * The image is untrusted. Every offset, size, count and nid is checked before
 * it is used, and anything inconsistent is a CfsError with one line saying
 * what and where. The rules (each one holds for every image the writer
 * produces):
 *
 * - header: composefs magic and header version 1, EROFS magic, 4 KiB blocks,
 *   the file at least as long as the superblock's block count says;
 * - every inode, xattr body, xattr entry, inline tail and data block lies
 *   inside the image; inode format bits above the layout are zero; layouts
 *   are the ones composefs uses (flat plain/inline for directories and
 *   symlinks, flat or chunk-based for regular files);
 * - the inode type is one of the seven file types;
 * - a directory group (block or inline tail) holds at least one dirent, its
 *   first nameoff is a multiple of 12, nameoffs strictly increase and stay
 *   inside the group; names are 1..255 bytes without `/` or NUL and strictly
 *   ascending in byte order across the whole directory (the kernel looks
 *   names up by binary search; this also rules out duplicates);
 * - symlink targets are 1..4095 bytes without NUL; inline file content is at
 *   most 5000 bytes;
 * - xattr names have a known prefix index, are 1..255 bytes without NUL and
 *   unique per inode, and the inode's xattrs fit upstream's 64 KiB budget;
 * - the bytes read for inodes, xattr bodies, tails and data blocks add up to
 *   no more than the image size: in a well-formed image nothing is read
 *   twice, so this bounds the work and memory of hostile images (overlapping
 *   inodes, directories sharing blocks) by the size of the input;
 * - directories nest at most 2048 deep: a deeper path cannot fit in
 *   PATH_MAX, and upstream composefs-info already overflows its stack at
 *   about 1500 levels.
 *
 * Reaching a directory's nid a second time (a dirent naming an ancestor or
 * another directory) gives a hardlink entry, never a second descent, so the
 * walk cannot loop. mkcomposefs writes such images from dumpfiles with an
 * `@` line whose target is a directory, and composefs-info prints them as
 * `@40755` lines; so do we.
 *
 * Deliberate differences from composefs-info on images it reads oddly:
 * the redirect payload is the xattr value (after its leading `/`) up to the
 * first NUL, without upstream's two-byte over-read (FORMAT pitfall 27); an
 * inline xattr entry of exactly 4 bytes at the end of the body (an empty key
 * suffix with an empty value, e.g. `user.=`) is read, where upstream's loop
 * stops one entry early.
 */
import { Escape, escape } from "../dumpfile/escape.js";
import { CfsError } from "../util/errors.js";
import {
  Inode,
  isValidFileType,
  MAX_NAME_LENGTH,
  PATH_MAX,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  XATTR_NAME_MAX,
  type Xattr,
} from "../model/inode.js";
import {
  BLOCK_BITS,
  BLOCK_SIZE,
  COMPOSEFS_HEADER_VERSION,
  COMPOSEFS_MAGIC,
  DIRENT_SIZE,
  EROFS_MAGIC,
  INODE_COMPACT_SIZE,
  INODE_EXTENDED_SIZE,
  LAYOUT_CHUNK_BASED,
  LAYOUT_FLAT_INLINE,
  LAYOUT_FLAT_PLAIN,
  MAX_DIR_DEPTH,
  SLOT_SIZE,
  SUPER_OFFSET,
  XATTR_ENTRY_HEADER_SIZE,
  XATTR_IBODY_HEADER_SIZE,
  XATTR_PREFIX_BY_INDEX,
} from "./format.js";

export interface ReadOptions {
  /**
   * Keep only these names among the root's entries; the others are not even
   * read (composefs-info `--filter`).
   */
  filter?: readonly Buffer[];
}

/** Inline content limit of the reader (LCFS_INLINE_CONTENT_MAX). */
const INLINE_CONTENT_MAX = 5000;
/** Per-inode xattr budget of lcfs_node_set_xattr_internal for internal input. */
const XATTR_BUDGET = 0xffff;

const XATTR_REDIRECT = "trusted.overlay.redirect";
const XATTR_METACOPY = "trusted.overlay.metacopy";
const XATTR_ESC_WHITEOUT = "trusted.overlay.overlay.whiteout";
const XATTR_ESC_WHITEOUTS = "trusted.overlay.overlay.whiteouts";
const XATTR_USER_WHITEOUT = "user.overlay.whiteout";
const XATTR_USER_WHITEOUTS = "user.overlay.whiteouts";
const OVERLAY_PREFIX = "trusted.overlay.";
const OVERLAY_ESC_PREFIX = "trusted.overlay.overlay.";
const METACOPY_SIZE = 36;
/** The content of a whiteout converted from an inline file: none, but not unset. */
const NO_CONTENT = Buffer.alloc(0);
const DIGEST_SIZE = 32;

/** What the reader does with an xattr name (decided once per distinct name). */
const enum XAction {
  Keep,
  Drop,
  Redirect,
  Metacopy,
  Whiteout,
}

/** One distinct xattr name: what to do with it and the key it is kept under. */
interface KeyName {
  action: XAction;
  /** The key as kept (unescaped for `trusted.overlay.overlay.X`). */
  key: Buffer;
  /** Full name as stored (latin1), for messages. */
  name: string;
  /** The kept key escaped for a dumpfile (computed when first printed). */
  esc: string | null;
}

/** Longest hash chain of xattr names walked before a name is looked up as a string (see keyName). */
const MAX_KEY_CHAIN = 16;

/** An (index, suffix) pair seen in the image, chained by hash. */
interface KeyEntry {
  index: number;
  suffix: Buffer;
  kn: KeyName;
  next: KeyEntry | null;
}

/** A shared xattr entry, decoded once. */
interface SharedXattr {
  kn: KeyName;
  start: number;
  end: number;
  value: Buffer | null;
  esc: string | null;
}

/** A directory being walked: its entries (read in full) and the next one to visit. */
interface Frame<T> {
  data: T;
  /** Offsets of the directory's own name in the image (-1 for the root). */
  nameStart: number;
  nameEnd: number;
  starts: number[];
  ends: number[];
  nids: number[];
  next: number;
}

/** What the walker calls; the decoded inode is in the walker's fields during each call. */
interface Visitor<T> {
  /** The root inode; returns the data its frame carries. */
  root(w: Walker<T>): T;
  /** A nid reached for the first time; `index` counts inodes from 0 (the root). */
  entry(w: Walker<T>, parent: T, nameStart: number, nameEnd: number, index: number): T;
  /** A nid reached again: a hardlink to inode `index`. */
  link(w: Walker<T>, parent: T, nameStart: number, nameEnd: number, nid: number, index: number): void;
}

/** Shared BigInts of small numbers (sizes of directories, symlinks, inline files). */
const SMALL_BIGINTS: bigint[] = [];
function smallBig(n: number): bigint {
  let b = SMALL_BIGINTS[n];
  if (b === undefined) b = SMALL_BIGINTS[n] = BigInt(n);
  return b;
}

class Walker<T> {
  readonly buf: Buffer;
  private readonly len: number;
  private readonly metaBase: number;
  private readonly xattrBase: number;
  readonly buildSec: bigint;
  readonly buildNsec: number;
  /** nid → 0 unseen, -1 a skipped whiteout, k > 0 the inode of index k - 1. */
  private readonly slots: Int32Array;
  private count = 0;
  /** Bytes of the image read so far (inodes, xattr bodies, tails, blocks). */
  private consumed = 0;
  /** Off while an inode is decoded a second time (a hardlink being printed). */
  private counting = true;
  private readonly stack: Frame<T>[] = [];
  /** Name of the entry being read, for messages (-1: none). */
  private curStart = -1;
  private curEnd = -1;
  private readonly keyTable = new Map<number, KeyEntry>();
  private readonly keyNames = new Map<string, KeyName>();
  private readonly shared = new Map<number, SharedXattr>();
  private readonly filter: Set<string> | null;

  // The inode decode() just read.
  nid = 0;
  mode = 0;
  type = 0;
  nlink = 0;
  uid = 0;
  gid = 0;
  rdev = 0;
  extended = false;
  /** i_size when it is a safe integer, else -1 (then read sizeBig()). */
  size = 0;
  /** Extended inodes: offset of i_mtime. */
  mtimeOff = 0;
  mtimeNsec = 0;
  private off = 0;
  private layout = 0;
  /** Start of the inline tail: after the inode header and its xattrs. */
  private tail = 0;
  private u = 0;
  /** Payload (symlink target or redirect) as offsets into the image; start -1: none. */
  payloadStart = -1;
  payloadEnd = -1;
  content: Buffer | null = null;
  /** Offset of the 32-byte digest in the image, -1: none. */
  digestStart = -1;
  /** Kept xattrs: name, value offsets and shared entry (or null). */
  xCount = 0;
  readonly xNames: KeyName[] = [];
  readonly xStarts: number[] = [];
  readonly xEnds: number[] = [];
  readonly xShared: (SharedXattr | null)[] = [];
  /** Every xattr name of the inode so far (duplicates), as a set once there are many. */
  private readonly xAll: KeyName[] = [];
  private xSeen: Set<KeyName> | null = null;
  private xTotal = 0;
  /** Upstream's estimate of the kept xattrs' size (lcfs_node_set_xattr_internal). */
  xUsed = 0;

  constructor(buf: Buffer, opts: ReadOptions) {
    this.buf = buf;
    const len = (this.len = buf.length);
    if (len < BLOCK_SIZE) fail(`not a composefs image: ${len} bytes is shorter than one block`);
    if (u32(buf, 0) !== COMPOSEFS_MAGIC) fail("not a composefs image: bad composefs magic");
    const version = u32(buf, 4);
    if (version !== COMPOSEFS_HEADER_VERSION) fail(`unsupported composefs header version ${version}`);
    const sb = SUPER_OFFSET;
    if (u32(buf, sb) !== EROFS_MAGIC) fail("not a composefs image: bad EROFS superblock magic");
    const blkszbits = buf[sb + 12]!;
    if (blkszbits !== BLOCK_BITS) fail(`unsupported EROFS block size 2^${blkszbits} (composefs uses 4096)`);
    const blocks = u32(buf, sb + 36);
    if (blocks * BLOCK_SIZE > len) {
      fail(`image is truncated: ${len} bytes, the superblock says ${blocks} blocks (${blocks * BLOCK_SIZE} bytes)`);
    }
    this.metaBase = u32(buf, sb + 40) * BLOCK_SIZE;
    this.xattrBase = u32(buf, sb + 44) * BLOCK_SIZE;
    if (this.metaBase >= len) corrupt("metadata start (meta_blkaddr) is beyond the end of the image");
    if (this.xattrBase >= len) corrupt("shared xattr start (xattr_blkaddr) is beyond the end of the image");
    this.slots = new Int32Array(Math.floor((len - this.metaBase) / SLOT_SIZE));
    this.buildSec = buf.readBigInt64LE(sb + 24);
    this.buildNsec = u32(buf, sb + 32);
    this.filter = opts.filter ? new Set(opts.filter.map((n) => n.toString("latin1"))) : null;
  }

  walk(v: Visitor<T>): void {
    const rootNid = u16(this.buf, SUPER_OFFSET + 14);
    if (rootNid >= this.slots.length) corrupt(`root inode (nid ${rootNid}) is beyond the end of the image`);
    if (!this.decode(rootNid) || this.type !== S_IFDIR) corrupt(`root inode (nid ${rootNid}) is not a directory`);
    this.slots[rootNid] = ++this.count;
    this.pushDir(v.root(this), -1, -1);
    const stack = this.stack;
    const slots = this.slots;
    while (stack.length > 0) {
      const f = stack[stack.length - 1]!;
      if (f.next >= f.nids.length) {
        stack.pop();
        continue;
      }
      const i = f.next++;
      const ns = f.starts[i]!;
      const ne = f.ends[i]!;
      const nid = f.nids[i]!;
      this.curStart = ns;
      this.curEnd = ne;
      if (nid >= slots.length) this.corruptAt("inode is beyond the end of the image", nid);
      const seen = slots[nid]!;
      if (seen !== 0) {
        // A nid read before: a hardlink, or a whiteout that stays skipped.
        if (seen > 0) v.link(this, f.data, ns, ne, nid, seen - 1);
        continue;
      }
      if (!this.decode(nid)) {
        slots[nid] = -1;
        continue;
      }
      slots[nid] = ++this.count;
      const data = v.entry(this, f.data, ns, ne, this.count - 1);
      if (this.type === S_IFDIR) {
        if (stack.length >= MAX_DIR_DEPTH) this.corruptAt(`directories nest deeper than ${MAX_DIR_DEPTH} levels`, nid);
        this.pushDir(data, ns, ne);
      }
    }
    this.curStart = this.curEnd = -1;
  }

  /**
   * Decode a hardlinked inode again (it was decoded successfully before, so
   * this cannot fail); its bytes are not counted twice.
   */
  redecode(nid: number): void {
    this.counting = false;
    try {
      this.decode(nid);
    } finally {
      this.counting = true;
    }
  }

  // ---------------------------------------------------------------- inodes

  /** Read one inode (not its directory entries) into the fields; false for a char device 0/0. */
  private decode(nid: number): boolean {
    const buf = this.buf;
    const len = this.len;
    const off = this.metaBase + nid * SLOT_SIZE;
    if (off + INODE_COMPACT_SIZE > len) this.corruptAt("inode is beyond the end of the image", nid);
    const format = u16(buf, off);
    if ((format & ~0xf) !== 0) this.corruptAt(`invalid inode format 0x${format.toString(16)}`, nid);
    const layout = (format >> 1) & 7;
    const icount = u16(buf, off + 2);
    const mode = u16(buf, off + 4);
    if (!isValidFileType(mode)) this.corruptAt(`invalid file type in mode 0${mode.toString(8)}`, nid);
    const type = mode & S_IFMT;
    const u = u32(buf, off + 16);
    let isize: number;
    let size: number;
    if ((format & 1) === 0) {
      isize = INODE_COMPACT_SIZE;
      this.extended = false;
      this.nlink = u16(buf, off + 6);
      size = u32(buf, off + 8);
      this.uid = u16(buf, off + 24);
      this.gid = u16(buf, off + 26);
    } else {
      isize = INODE_EXTENDED_SIZE;
      if (off + INODE_EXTENDED_SIZE > len) this.corruptAt("inode is beyond the end of the image", nid);
      this.extended = true;
      const hi = u32(buf, off + 12);
      size = hi < 0x200000 ? hi * 0x100000000 + u32(buf, off + 8) : -1;
      this.uid = u32(buf, off + 24);
      this.gid = u32(buf, off + 28);
      this.mtimeOff = off + 32;
      this.mtimeNsec = u32(buf, off + 40);
      this.nlink = u32(buf, off + 44);
    }
    const xattrSize = icount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + 4 * (icount - 1);
    if (off + isize + xattrSize > len) this.corruptAt("xattrs run past the end of the image", nid);
    this.consume(isize + xattrSize, nid);

    // The 256 root whiteouts (real char devices 0/0) are not part of the tree.
    if (type === S_IFCHR && u === 0) return false;

    this.nid = nid;
    this.mode = mode;
    this.type = type;
    this.rdev = type === S_IFCHR || type === S_IFBLK ? u : 0;
    this.size = size;
    this.off = off;
    this.layout = layout;
    this.tail = off + isize + xattrSize;
    this.u = u;
    this.payloadStart = -1;
    this.content = null;
    this.digestStart = -1;
    this.xCount = 0;
    if (type === S_IFDIR) {
      this.checkFlat("directory");
      if (size < 0 || size > len) this.corruptAt(`directory size ${this.sizeBig()} is larger than the image`, nid);
      if (layout === LAYOUT_FLAT_INLINE && size % BLOCK_SIZE === 0) this.corruptAt("inline directory has an empty tail", nid);
    } else if (type === S_IFLNK) {
      this.checkFlat("symlink");
      if (size < 0 || size >= PATH_MAX) this.corruptAt(`symlink target of ${this.sizeBig()} bytes is too long`, nid);
      if (size === 0) this.corruptAt("empty symlink target", nid);
      this.symlinkTarget();
    } else if (type === S_IFREG && size !== 0) {
      if (layout === LAYOUT_FLAT_PLAIN || layout === LAYOUT_FLAT_INLINE) {
        if (size < 0 || size > INLINE_CONTENT_MAX || size > len) {
          this.corruptAt(`inline file content of ${this.sizeBig()} bytes exceeds ${INLINE_CONTENT_MAX}`, nid);
        }
        if (layout === LAYOUT_FLAT_INLINE && size % BLOCK_SIZE === 0) this.corruptAt("inline file has an empty tail", nid);
        this.content = this.flatContent();
      } else if (layout !== LAYOUT_CHUNK_BASED) {
        this.corruptAt(`regular file has unsupported data layout ${layout}`, nid);
      }
      // Chunk-based: an external file; its null chunk index is not read.
    }

    if (icount !== 0) this.readXattrs(off + isize, xattrSize);
    return true;
  }

  /** i_size of the decoded inode as a BigInt. */
  sizeBig(): bigint {
    if (this.size >= 0) return this.size < 4096 ? smallBig(this.size) : BigInt(this.size);
    return this.buf.readBigUInt64LE(this.off + 8);
  }

  private checkFlat(what: string): void {
    const layout = this.layout;
    if (layout !== LAYOUT_FLAT_PLAIN && layout !== LAYOUT_FLAT_INLINE) {
      this.corruptAt(`${what} has unsupported data layout ${layout}`, this.nid);
    }
  }

  /** Split a flat inode's data: bytes in blocks (from block u) and in the inline tail. */
  private flatRanges(): { blockBytes: number; tail: number } {
    const size = this.size;
    if (this.layout === LAYOUT_FLAT_INLINE) {
      const tail = size % BLOCK_SIZE;
      return { blockBytes: size - tail, tail };
    }
    return { blockBytes: size, tail: 0 };
  }

  private blockStart(blockBytes: number): number {
    const start = this.u * BLOCK_SIZE;
    if (start + blockBytes > this.len) this.corruptAt(`data block ${this.u} is beyond the end of the image`, this.nid);
    this.consume(blockBytes, this.nid);
    return start;
  }

  private tailStart(tail: number): number {
    if (this.tail + tail > this.len) this.corruptAt("inline data runs past the end of the image", this.nid);
    this.consume(tail, this.nid);
    return this.tail;
  }

  /** A symlink target (< 4096 bytes) is in one piece: in the tail or in a block. */
  private symlinkTarget(): void {
    const { blockBytes, tail } = this.flatRanges();
    const s = blockBytes > 0 ? this.blockStart(blockBytes) : this.tailStart(tail);
    const e = s + this.size;
    for (let k = s; k < e; k++) if (this.buf[k] === 0) this.corruptAt("symlink target contains a NUL byte", this.nid);
    this.payloadStart = s;
    this.payloadEnd = e;
  }

  /** Inline file content: its blocks, then its inline tail. */
  private flatContent(): Buffer {
    const { blockBytes, tail } = this.flatRanges();
    const buf = this.buf;
    let head: Buffer | null = null;
    if (blockBytes > 0) {
      const s = this.blockStart(blockBytes);
      head = buf.subarray(s, s + blockBytes);
    }
    if (tail === 0) return head!;
    const t = this.tailStart(tail);
    const tb = buf.subarray(t, t + tail);
    return head === null ? tb : Buffer.concat([head, tb]);
  }

  // ---------------------------------------------------------------- xattrs

  private readXattrs(start: number, xattrSize: number): void {
    const buf = this.buf;
    const nid = this.nid;
    const end = start + xattrSize;
    const nShared = buf[start + 4]!;
    let p = start + XATTR_IBODY_HEADER_SIZE + 4 * nShared;
    if (p > end) this.corruptAt(`${nShared} shared xattr ids do not fit in the xattr body`, nid);
    this.xSeen = null;
    this.xTotal = 0;
    this.xUsed = 0;
    // Inline entries first, in on-disk order.
    while (p + XATTR_ENTRY_HEADER_SIZE <= end) {
      const nameLen = buf[p]!;
      const index = buf[p + 1]!;
      const valueSize = u16(buf, p + 2);
      const nameStart = p + XATTR_ENTRY_HEADER_SIZE;
      const valueStart = nameStart + nameLen;
      const valueEnd = valueStart + valueSize;
      if (valueEnd > end) this.corruptAt("xattr entry runs past the end of the xattr body", nid);
      this.applyXattr(this.keyName(index, nameStart, nameLen), valueStart, valueEnd, null);
      p = nameStart + ((nameLen + valueSize + 3) & ~3);
    }
    // Then the shared ones, in the order of their ids.
    const ids = start + XATTR_IBODY_HEADER_SIZE;
    for (let i = 0; i < nShared; i++) {
      const id = u32(buf, ids + 4 * i);
      let sh = this.shared.get(id);
      if (sh === undefined) {
        const e = this.xattrBase + id * 4;
        if (e + XATTR_ENTRY_HEADER_SIZE > this.len) this.corruptAt(`shared xattr ${id} is beyond the end of the image`, nid);
        const nameLen = buf[e]!;
        const index = buf[e + 1]!;
        const valueSize = u16(buf, e + 2);
        const valueStart = e + XATTR_ENTRY_HEADER_SIZE + nameLen;
        if (valueStart + valueSize > this.len) this.corruptAt(`shared xattr ${id} runs past the end of the image`, nid);
        this.consume(XATTR_ENTRY_HEADER_SIZE + nameLen + valueSize, nid);
        const kn = this.keyName(index, e + XATTR_ENTRY_HEADER_SIZE, nameLen);
        sh = { kn, start: valueStart, end: valueStart + valueSize, value: null, esc: null };
        this.shared.set(id, sh);
      }
      this.applyXattr(sh.kn, sh.start, sh.end, sh);
    }
  }

  /** The name of an xattr entry, looked up by its bytes (no allocation for a name seen before). */
  private keyName(index: number, s: number, n: number): KeyName {
    const buf = this.buf;
    let h = Math.imul(index + 1, 0x9e3779b1) ^ n;
    for (let k = s; k < s + n; k++) h = Math.imul(h ^ buf[k]!, 0x01000193);
    const head = this.keyTable.get(h) ?? null;
    let chain = 0;
    for (let e = head; e !== null; e = e.next) {
      // Names made to share a hash (a hostile image) would make each lookup
      // walk them all: past a few, the name is looked up as a string.
      if (++chain > MAX_KEY_CHAIN) return this.newKeyName(index, s, n);
      if (e.index !== index || e.suffix.length !== n) continue;
      const suf = e.suffix;
      let k = 0;
      while (k < n && suf[k] === buf[s + k]) k++;
      if (k === n) return e.kn;
    }
    const kn = this.newKeyName(index, s, n);
    this.keyTable.set(h, { index, suffix: Buffer.from(buf.subarray(s, s + n)), kn, next: head });
    return kn;
  }

  private newKeyName(index: number, s: number, n: number): KeyName {
    const nid = this.nid;
    const prefix = XATTR_PREFIX_BY_INDEX[index];
    if (prefix === undefined) this.corruptAt(`unknown xattr name prefix index ${index}`, nid);
    const name = prefix + this.buf.toString("latin1", s, s + n);
    // One KeyName per full name, however it was split into prefix and suffix.
    let kn = this.keyNames.get(name);
    if (kn !== undefined) return kn;
    if (name.length === 0) this.corruptAt("empty xattr name", nid);
    if (name.length > XATTR_NAME_MAX) this.corruptAt(`xattr name of ${name.length} bytes is too long`, nid);
    if (name.indexOf("\0") >= 0) this.corruptAt("xattr name contains a NUL byte", nid);
    let action = XAction.Keep;
    let kept = name;
    if (name === XATTR_REDIRECT) action = XAction.Redirect;
    else if (name === XATTR_METACOPY) action = XAction.Metacopy;
    else if (name === XATTR_ESC_WHITEOUT) {
      // A regular file becomes a whiteout; anything else keeps it, unescaped.
      action = XAction.Whiteout;
      kept = OVERLAY_PREFIX + name.slice(OVERLAY_ESC_PREFIX.length);
    }
    else if (name === XATTR_ESC_WHITEOUTS || name === XATTR_USER_WHITEOUT || name === XATTR_USER_WHITEOUTS) action = XAction.Drop;
    else if (name.startsWith(OVERLAY_PREFIX)) {
      if (name.startsWith(OVERLAY_ESC_PREFIX)) kept = OVERLAY_PREFIX + name.slice(OVERLAY_ESC_PREFIX.length);
      else action = XAction.Drop;
    }
    kn = { action, key: Buffer.from(kept, "latin1"), name, esc: null };
    this.keyNames.set(name, kn);
    return kn;
  }

  private applyXattr(kn: KeyName, vs: number, ve: number, sh: SharedXattr | null): void {
    // Every xattr of an inode is counted, kept or not, so that a name cannot
    // appear twice (upstream would let the last one win).
    if (this.xSeen !== null) {
      if (this.xSeen.has(kn)) this.duplicate(kn);
      this.xSeen.add(kn);
    } else {
      const all = this.xAll;
      const total = this.xTotal;
      for (let i = 0; i < total; i++) if (all[i] === kn) this.duplicate(kn);
      all[total] = kn;
      if (total >= 16) this.xSeen = new Set(all.slice(0, total + 1));
    }
    this.xTotal++;
    const buf = this.buf;
    const isReg = this.type === S_IFREG;
    let keep = false;
    switch (kn.action) {
      case XAction.Redirect:
        if (isReg) {
          if (ve - vs > 1 && buf[vs] === 0x2f) vs++;
          let z = vs;
          while (z < ve && buf[z] !== 0) z++;
          this.payloadStart = vs;
          this.payloadEnd = z;
        }
        break;
      case XAction.Metacopy:
        if (isReg && ve - vs === METACOPY_SIZE) this.digestStart = vs + 4;
        break;
      case XAction.Whiteout:
        if (isReg) {
          this.mode = ((this.mode & ~S_IFMT) | S_IFCHR) >>> 0;
          this.type = S_IFCHR;
          this.rdev = 0;
          this.size = 0;
          // Inline content shrinks to none: composefs-info prints an empty field for it (not `-`).
          if (this.content !== null) this.content = NO_CONTENT;
        } else keep = true; // on anything else an ordinary escaped overlay xattr (kn.key unescaped)
        break;
      case XAction.Drop:
        break;
      case XAction.Keep:
        keep = true;
        break;
    }
    if (!keep) return;
    const k = this.xCount;
    this.xUsed += 7 + kn.key.length + (ve - vs) + (k === 0 ? XATTR_IBODY_HEADER_SIZE : 0);
    if (this.xUsed > XATTR_BUDGET) this.corruptAt("xattrs exceed the 64 KiB per-inode limit", this.nid);
    this.xNames[k] = kn;
    this.xStarts[k] = vs;
    this.xEnds[k] = ve;
    this.xShared[k] = sh;
    this.xCount = k + 1;
  }

  private duplicate(kn: KeyName): never {
    this.corruptAt(`xattr ${printable(Buffer.from(kn.name, "latin1"))} appears twice`, this.nid);
  }

  /** The value of kept xattr i of the decoded inode. */
  xattrValue(i: number): Buffer {
    const sh = this.xShared[i];
    if (sh) return (sh.value ??= this.buf.subarray(sh.start, sh.end));
    return this.buf.subarray(this.xStarts[i]!, this.xEnds[i]!);
  }

  // ----------------------------------------------------------- directories

  /** Read the decoded directory's dirents (blocks, then inline tail) and push it on the walk stack. */
  private pushDir(data: T, nameStart: number, nameEnd: number): void {
    const nid = this.nid;
    const size = this.size;
    const u = this.u;
    const tailStart = this.tail;
    const tailpacked = this.layout === LAYOUT_FLAT_INLINE;
    const frame: Frame<T> = { data, nameStart, nameEnd, starts: [], ends: [], nids: [], next: 0 };
    this.stack.push(frame);
    this.curStart = this.curEnd = -1;
    if (size === 0) return;
    const nBlocks = Math.ceil(size / BLOCK_SIZE);
    const oobBlocks = tailpacked ? nBlocks - 1 : nBlocks;
    const prev = { start: -1, end: -1 };
    const base = u * BLOCK_SIZE;
    for (let b = 0; b < oobBlocks; b++) {
      let groupSize = BLOCK_SIZE;
      if (!tailpacked && b + 1 === oobBlocks) groupSize = size % BLOCK_SIZE || BLOCK_SIZE;
      const gstart = base + b * BLOCK_SIZE;
      if (gstart + groupSize > this.len) this.corruptAt(`directory block ${u + b} is beyond the end of the image`, nid);
      this.readGroup(frame, gstart, groupSize, prev, nid);
    }
    if (tailpacked) {
      const tail = size % BLOCK_SIZE;
      if (tailStart + tail > this.len) this.corruptAt("inline directory entries run past the end of the image", nid);
      this.readGroup(frame, tailStart, tail, prev, nid);
    }
  }

  /** One self-contained group of dirents: headers, then names without NULs. */
  private readGroup(frame: Frame<T>, start: number, groupSize: number, prev: { start: number; end: number }, nid: number): void {
    const buf = this.buf;
    this.consume(groupSize, nid);
    if (groupSize < DIRENT_SIZE) this.corruptAt(`directory block of ${groupSize} bytes holds no entry`, nid);
    const first = u16(buf, start + 8);
    if (first === 0 || first % DIRENT_SIZE !== 0 || first > groupSize) {
      this.corruptAt(`invalid first name offset ${first} in a directory block of ${groupSize} bytes`, nid);
    }
    const n = first / DIRENT_SIZE;
    const end = start + groupSize;
    const filter = this.stack.length === 1 ? this.filter : null;
    let nameStart = start + first;
    for (let i = 0; i < n; i++) {
      const d = start + i * DIRENT_SIZE;
      let nameEnd: number;
      if (i + 1 < n) {
        const nextOff = u16(buf, d + DIRENT_SIZE + 8);
        if (start + nextOff <= nameStart || nextOff > groupSize) {
          this.corruptAt(`directory entry ${i + 1} has name offset ${nextOff} after ${nameStart - start} (block of ${groupSize} bytes)`, nid);
        }
        nameEnd = start + nextOff;
      } else {
        // The last name runs to the first NUL or the end of the group.
        nameEnd = nameStart;
        while (nameEnd < end && buf[nameEnd] !== 0) nameEnd++;
      }
      const nameLen = nameEnd - nameStart;
      if (nameLen === 0) this.corruptAt("directory entry with an empty name", nid);
      if (nameLen > MAX_NAME_LENGTH) this.corruptAt(`directory entry name of ${nameLen} bytes is too long`, nid);
      for (let k = nameStart; k < nameEnd; k++) {
        const c = buf[k]!;
        if (c === 0x2f || c === 0) {
          this.corruptAt(`directory entry name ${printable(buf.subarray(nameStart, nameEnd))} contains ${c === 0 ? "a NUL byte" : "'/'"}`, nid);
        }
      }
      if (prev.start >= 0 && compareRanges(buf, prev.start, prev.end, nameStart, nameEnd) >= 0) {
        this.corruptAt(
          `directory entries ${printable(buf.subarray(prev.start, prev.end))} and ${printable(buf.subarray(nameStart, nameEnd))} are not in strictly ascending order`,
          nid,
        );
      }
      prev.start = nameStart;
      prev.end = nameEnd;
      const ns = nameStart;
      nameStart = nameEnd;
      // "." and ".." are the directory itself and its parent: not entries of the tree.
      if (buf[ns] === 0x2e && (nameLen === 1 || (nameLen === 2 && buf[ns + 1] === 0x2e))) continue;
      if (filter !== null && !filter.has(buf.toString("latin1", ns, nameEnd))) continue;
      const hi = u32(buf, d + 4);
      frame.starts.push(ns);
      frame.ends.push(nameEnd);
      // Exact below 2^53; anything larger is far beyond the image and fails when read.
      frame.nids.push(hi < 0x200000 ? hi * 0x100000000 + u32(buf, d) : Number.MAX_SAFE_INTEGER);
    }
  }

  // ---------------------------------------------------------------- errors

  private consume(n: number, nid: number): void {
    if (!this.counting) return;
    this.consumed += n;
    if (this.consumed > this.len) {
      this.corruptAt("image data is used more than once (overlapping inodes or shared blocks)", nid);
    }
  }

  /** Path of the entry being read, built from the walk stack (for messages only). */
  private where(): string {
    const parts: [number, number][] = [];
    for (const f of this.stack) if (f.nameStart >= 0) parts.push([f.nameStart, f.nameEnd]);
    if (this.curStart >= 0) parts.push([this.curStart, this.curEnd]);
    if (parts.length === 0) return "/";
    // Long paths keep their last components.
    let s = "";
    for (let i = parts.length - 1; i >= 0; i--) {
      s = "/" + printable(this.buf.subarray(parts[i]![0], parts[i]![1])) + s;
      if (s.length > 200 && i > 0) return "…" + s;
    }
    return s;
  }

  private corruptAt(msg: string, nid: number): never {
    corrupt(`${msg} (nid ${nid}, at ${this.where()})`);
  }
}

function u16(b: Buffer, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

function u32(b: Buffer, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 0x1000000;
}

/** Byte order of two ranges of one buffer (strcmp order for NUL-free names). */
function compareRanges(b: Buffer, as: number, ae: number, bs: number, be: number): number {
  const n = Math.min(ae - as, be - bs);
  for (let i = 0; i < n; i++) {
    const d = b[as + i]! - b[bs + i]!;
    if (d !== 0) return d;
  }
  return ae - as - (be - bs);
}

function printable(b: Uint8Array): string {
  let s = "";
  const n = Math.min(b.length, 64);
  for (let i = 0; i < n; i++) {
    const c = b[i]!;
    s += c > 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, "0")}`;
  }
  return b.length > n ? s + "…" : s;
}

function fail(msg: string): never {
  throw new CfsError(msg);
}

function corrupt(msg: string): never {
  throw new CfsError(`corrupt image: ${msg}`);
}

// ------------------------------------------------------------------ the tree

class TreeBuilder implements Visitor<Inode> {
  readonly inodes: Inode[] = [];
  private lastMtimeOff = -1;
  private lastMtimeLo = 0;
  private lastMtimeHi = 0;
  private lastMtime = 0n;

  private make(w: Walker<Inode>): Inode {
    const buf = w.buf;
    const n = new Inode(w.mode);
    n.nlink = w.nlink;
    n.uid = w.uid;
    n.gid = w.gid;
    n.rdev = w.rdev;
    n.size = w.sizeBig();
    if (!w.extended) {
      n.mtimeSec = w.buildSec;
      n.mtimeNsec = w.buildNsec;
    } else {
      // Many inodes share an mtime: reuse its BigInt.
      const o = w.mtimeOff;
      const lo = u32(buf, o);
      const hi = u32(buf, o + 4);
      if (this.lastMtimeOff < 0 || lo !== this.lastMtimeLo || hi !== this.lastMtimeHi) {
        this.lastMtimeOff = o;
        this.lastMtimeLo = lo;
        this.lastMtimeHi = hi;
        this.lastMtime = buf.readBigInt64LE(o);
      }
      n.mtimeSec = this.lastMtime;
      n.mtimeNsec = w.mtimeNsec;
    }
    if (w.payloadStart >= 0) n.payload = buf.subarray(w.payloadStart, w.payloadEnd);
    n.content = w.content;
    if (w.digestStart >= 0) n.digest = buf.subarray(w.digestStart, w.digestStart + DIGEST_SIZE);
    const xc = w.xCount;
    for (let i = 0; i < xc; i++) {
      const x: Xattr = { key: w.xNames[i]!.key, value: w.xattrValue(i) };
      n.xattrs.push(x);
    }
    if (xc > 0) n.xattrBudgetUsed = w.xUsed;
    this.inodes.push(n);
    return n;
  }

  root(w: Walker<Inode>): Inode {
    return this.make(w);
  }

  entry(w: Walker<Inode>, parent: Inode, ns: number, ne: number): Inode {
    const n = this.make(w);
    parent.entries!.push({ name: w.buf.subarray(ns, ne), inode: n, hardlink: false });
    return n;
  }

  link(w: Walker<Inode>, parent: Inode, ns: number, ne: number, _nid: number, index: number): void {
    parent.entries!.push({ name: w.buf.subarray(ns, ne), inode: this.inodes[index]!, hardlink: true });
  }
}

/**
 * Build the inode tree of a composefs image. Throws CfsError (never anything
 * else) when the image is not a composefs image or is inconsistent.
 */
export function readImage(buf: Buffer, opts: ReadOptions = {}): Inode {
  const tb = new TreeBuilder();
  new Walker<Inode>(buf, opts).walk(tb);
  return tb.inodes[0]!;
}

// ------------------------------------------------------------- the dumpfile

/** Output held back before the first write, so that a bad image prints nothing. */
const HOLD_BYTES = 32 << 20;
const CHUNK = 1 << 16;

/** A directory while it is printed: its escaped path and its inode index. */
interface DumpDir {
  path: string;
  index: number;
}

/**
 * Prints what `writeDumpfile(readImage(buf))` prints, line by line while
 * walking. For later hardlinks, every inode's first path is kept as its
 * parent's index and its name's offsets (typed arrays: no objects to
 * collect) and rebuilt when needed; the root's path is empty there, as
 * upstream's node_build_path gives for it.
 */
class Dumper implements Visitor<DumpDir> {
  private parent: Int32Array = new Int32Array(1024);
  private nameStart: Int32Array = new Int32Array(1024);
  private nameEnd: Int32Array = new Int32Array(1024);
  private cur = "";
  private held: Buffer[] = [];
  private heldBytes = 0;
  private flowing = false;
  private mtimeOff = -1;
  private mtimeLo = 0;
  private mtimeHi = 0;
  private mtimeStr = "";
  private buildStr = "";

  constructor(private readonly sink: (chunk: Buffer) => void) {}

  private record(index: number, parent: number, ns: number, ne: number): void {
    if (index >= this.parent.length) {
      const grow = (a: Int32Array): Int32Array => {
        const b = new Int32Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.parent = grow(this.parent);
      this.nameStart = grow(this.nameStart);
      this.nameEnd = grow(this.nameEnd);
    }
    this.parent[index] = parent;
    this.nameStart[index] = ns;
    this.nameEnd[index] = ne;
  }

  private pathOf(buf: Buffer, index: number): string {
    let s = "";
    for (let i = index; i > 0; i = this.parent[i]!) s = "/" + escRange(buf, this.nameStart[i]!, this.nameEnd[i]!) + s;
    return s;
  }

  root(w: Walker<DumpDir>): DumpDir {
    this.buildStr = w.buildSec.toString() + "." + w.buildNsec;
    this.record(0, -1, 0, 0);
    this.line(w, "/", null);
    return { path: "", index: 0 };
  }

  entry(w: Walker<DumpDir>, parent: DumpDir, ns: number, ne: number, index: number): DumpDir {
    const path = parent.path + "/" + escRange(w.buf, ns, ne);
    this.record(index, parent.index, ns, ne);
    this.line(w, path, null);
    return w.type === S_IFDIR ? { path, index } : parent;
  }

  link(w: Walker<DumpDir>, parent: DumpDir, ns: number, ne: number, nid: number, index: number): void {
    const path = parent.path + "/" + escRange(w.buf, ns, ne);
    w.redecode(nid);
    this.line(w, path, this.pathOf(w.buf, index));
  }

  private mtime(w: Walker<DumpDir>): string {
    if (!w.extended) return this.buildStr;
    const buf = w.buf;
    const o = w.mtimeOff;
    const lo = u32(buf, o);
    const hi = u32(buf, o + 4);
    if (this.mtimeOff < 0 || lo !== this.mtimeLo || hi !== this.mtimeHi) {
      this.mtimeOff = o;
      this.mtimeLo = lo;
      this.mtimeHi = hi;
      const his = hi | 0;
      this.mtimeStr = his >= -0x200000 && his < 0x200000 ? String(his * 0x100000000 + lo) : buf.readBigInt64LE(o).toString();
    }
    return this.mtimeStr + "." + w.mtimeNsec;
  }

  private line(w: Walker<DumpDir>, path: string, linkPath: string | null): void {
    const buf = w.buf;
    let s =
      path +
      " " +
      (w.size >= 0 ? String(w.size) : w.sizeBig().toString()) +
      (linkPath !== null ? " @" : " ") +
      w.mode.toString(8) +
      " " +
      w.nlink +
      " " +
      w.uid +
      " " +
      w.gid +
      " " +
      w.rdev +
      " " +
      this.mtime(w) +
      " ";
    if (linkPath !== null) s += linkPath;
    else if (w.payloadStart >= 0) s += escRange(buf, w.payloadStart, w.payloadEnd, Escape.LoneDash);
    else s += "-";
    s += " ";
    s += w.content !== null ? escape(w.content, Escape.LoneDash) : "-";
    s += w.digestStart >= 0 ? " " + buf.toString("hex", w.digestStart, w.digestStart + DIGEST_SIZE) : " -";
    const xc = w.xCount;
    for (let i = 0; i < xc; i++) {
      const kn = w.xNames[i]!;
      const key = (kn.esc ??= escape(kn.key, Escape.Equal));
      const sh = w.xShared[i];
      const value = sh ? (sh.esc ??= escRange(buf, sh.start, sh.end, Escape.Equal)) : escRange(buf, w.xStarts[i]!, w.xEnds[i]!, Escape.Equal);
      s += " " + key + "=" + value;
    }
    this.cur += s + "\n";
    if (this.cur.length >= CHUNK) this.emit();
  }

  /** Turn the text so far into bytes (flattening it while it is young), hold or write it. */
  private emit(): void {
    const c = Buffer.from(this.cur, "latin1");
    this.cur = "";
    if (this.flowing) {
      this.sink(c);
      return;
    }
    this.held.push(c);
    this.heldBytes += c.length;
    if (this.heldBytes >= HOLD_BYTES) this.release();
  }

  private release(): void {
    this.flowing = true;
    for (const c of this.held) this.sink(c);
    this.held = [];
  }

  finish(): void {
    if (this.cur.length > 0) this.emit();
    this.release();
  }
}

/**
 * Print the composefs-dump(5) text of an image, exactly as
 * `writeDumpfile(readImage(buf, opts), sink)` would (but for a hardlink to
 * the root, printed with an empty target as composefs-info does), without
 * building the tree. The sink gets latin1 bytes. Output is held back until
 * 32 MiB have accumulated, so a bad image normally prints nothing before
 * its CfsError.
 */
export function dumpImage(buf: Buffer, sink: (chunk: Buffer) => void, opts: ReadOptions = {}): void {
  const d = new Dumper(sink);
  new Walker<DumpDir>(buf, opts).walk(d);
  d.finish();
}

/** escape() of a range of the image, without a subarray when nothing needs escaping. */
function escRange(buf: Buffer, s: number, e: number, flags: Escape = Escape.Standard): string {
  for (let k = s; k < e; k++) {
    const c = buf[k]!;
    // Bytes that no escaping mode changes: printable, not `\`, not `=`.
    if (c < 0x21 || c > 0x7e || c === 0x5c || c === 0x3d) return escape(buf.subarray(s, e), flags);
  }
  if (e - s === 1 && (flags & Escape.LoneDash) !== 0 && buf[s] === 0x2d) return escape(buf.subarray(s, e), flags);
  return buf.toString("latin1", s, e);
}
