/**
 * Reading a composefs EROFS image back into an inode tree, as composefs-info
 * does (FORMAT.md §6.1; upstream lcfs_load_node_from_image_ext).
 *
 * The tree is built depth-first in dirent order: the first time a nid is
 * reached it becomes an inode, every later dirent naming it becomes a
 * hardlink entry (`hardlink: true`) to that inode. Char devices 0/0 (the
 * root's `00`..`ff` whiteouts) are left out. Overlay xattrs are translated
 * back (redirect → payload, metacopy → digest, escaped whiteout → char 0/0,
 * `trusted.overlay.overlay.X` → `trusted.overlay.X`, the rest of
 * `trusted.overlay.*` and the whiteout markers dropped); other xattrs are
 * kept in on-disk order, inline entries before shared ones.
 *
 * The image is untrusted. Every offset, size, count and nid is checked before
 * it is used, and anything inconsistent is a CfsError with one line saying
 * what and where. The rules (each one holds for every image the writer
 * produces):
 *
 * - header: composefs magic and header version 1, EROFS magic, 4 KiB blocks,
 *   the file at least as long as the superblock's block count says;
 * - every inode, xattr body, xattr entry, inline tail and data block lies
 *   inside the image; layouts are the ones composefs uses (flat plain/inline
 *   for directories and symlinks, flat or chunk-based for regular files);
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
 *   inodes, directories sharing blocks) to the size of the input;
 * - directories nest at most 2048 deep (a path of more components cannot fit
 *   in PATH_MAX).
 *
 * Reaching a directory's nid a second time (a dirent naming an ancestor or
 * another directory) is a hardlink entry, never a second descent, so the
 * walk cannot loop. mkcomposefs writes such images from dumpfiles with an
 * `@` line whose target is a directory, and composefs-info prints them as
 * `@40755` lines; so does this reader.
 *
 * Deliberate differences from composefs-info on images it reads oddly:
 * the redirect payload is the xattr value (after its leading `/`) up to the
 * first NUL, without upstream's two-byte over-read (FORMAT pitfall 27); an
 * inline xattr entry of exactly 4 bytes at the end of the body (an empty key
 * suffix with an empty value, e.g. `user.=`) is read, where upstream's loop
 * stops one entry early; a converted whiteout drops any inline content.
 */
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
  type Dirent,
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
/** Deepest directory nesting accepted. */
export const MAX_DEPTH = 2048;
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

/** What the reader does with an xattr key (decided once per distinct key). */
const enum XAction {
  Keep,
  Drop,
  Redirect,
  Metacopy,
  Whiteout,
}

interface KeyInfo {
  action: XAction;
  /** The key as kept (unescaped for `trusted.overlay.overlay.X`). */
  key: Buffer;
  /** Full key as stored, for duplicate detection. */
  name: string;
}

/** A directory being walked: its entries, read in full, and the next one to visit. */
interface Frame {
  dir: Inode;
  name: Buffer | null;
  names: Buffer[];
  nids: number[];
  next: number;
}

/** One decoded inode header with what is needed to find its data. */
interface Raw {
  nid: number;
  off: number;
  mode: number;
  layout: number;
  isize: number;
  xattrSize: number;
  /** i_size, or -1 when it does not fit a safe integer (only then is sizeBig meaningful). */
  size: number;
  sizeBig: bigint;
  u: number;
}

class ImageReader {
  private readonly buf: Buffer;
  private readonly len: number;
  private readonly metaBase: number;
  private readonly xattrBase: number;
  private readonly buildSec: bigint;
  private readonly buildNsec: number;
  /** nid → inode, or null for a skipped whiteout. */
  private readonly nodes = new Map<number, Inode | null>();
  /** Bytes of the image read so far (inodes, xattr bodies, tails, blocks). */
  private consumed = 0;
  private readonly stack: Frame[] = [];
  /** Name of the entry being built, for messages. */
  private curName: Buffer | null = null;
  private readonly keyCache = new Map<string, KeyInfo>();
  private readonly sharedCache = new Map<number, { info: KeyInfo; value: Buffer }>();
  private readonly filter: Set<string> | null;
  /** The layout of the directory buildInode just read, until pushDir takes it. */
  private pendingDir: Raw | null = null;

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
    this.buildSec = buf.readBigInt64LE(sb + 24);
    this.buildNsec = u32(buf, sb + 32);
    this.filter = opts.filter ? new Set(opts.filter.map((n) => n.toString("latin1"))) : null;
  }

  read(rootNid: number): Inode {
    const root = this.buildInode(rootNid);
    if (root === null || !root.isDir()) corrupt(`root inode (nid ${rootNid}) is not a directory`);
    this.nodes.set(rootNid, root);
    this.pushDir(root, null, rootNid);
    const stack = this.stack;
    const nodes = this.nodes;
    while (stack.length > 0) {
      const f = stack[stack.length - 1]!;
      if (f.next >= f.names.length) {
        stack.pop();
        continue;
      }
      const i = f.next++;
      const name = f.names[i]!;
      const nid = f.nids[i]!;
      const entries = f.dir.entries!;
      const seen = nodes.get(nid);
      if (seen !== undefined) {
        // A nid read before: a hardlink, or a whiteout that stays skipped.
        if (seen !== null) entries.push({ name, inode: seen, hardlink: true });
        continue;
      }
      this.curName = name;
      const child = this.buildInode(nid);
      nodes.set(nid, child);
      if (child === null) continue;
      const ent: Dirent = { name, inode: child, hardlink: false };
      entries.push(ent);
      if (child.entries !== null) {
        if (stack.length >= MAX_DEPTH) this.corruptAt(`directories nest deeper than ${MAX_DEPTH} levels`, nid);
        this.pushDir(child, name, nid);
      }
      this.curName = null;
    }
    return root;
  }

  // ---------------------------------------------------------------- inodes

  /** Read one inode (not its directory entries); null for a char device 0/0. */
  private buildInode(nid: number): Inode | null {
    const buf = this.buf;
    const off = this.metaBase + nid * SLOT_SIZE;
    if (off + INODE_COMPACT_SIZE > this.len) this.corruptAt("inode is beyond the end of the image", nid);
    const format = u16(buf, off);
    if ((format & ~0xf) !== 0) this.corruptAt(`invalid inode format 0x${format.toString(16)}`, nid);
    const extended = (format & 1) !== 0;
    const layout = (format >> 1) & 7;
    const icount = u16(buf, off + 2);
    const mode = u16(buf, off + 4);
    if (!isValidFileType(mode)) this.corruptAt(`invalid file type in mode 0${mode.toString(8)}`, nid);
    const type = mode & S_IFMT;
    const u = u32(buf, off + 16);
    const inode = new Inode(mode);
    let isize: number;
    let size: number;
    let sizeBig: bigint;
    if (!extended) {
      isize = INODE_COMPACT_SIZE;
      inode.nlink = u16(buf, off + 6);
      size = u32(buf, off + 8);
      sizeBig = BigInt(size);
      inode.uid = u16(buf, off + 24);
      inode.gid = u16(buf, off + 26);
      inode.mtimeSec = this.buildSec;
      inode.mtimeNsec = this.buildNsec;
    } else {
      isize = INODE_EXTENDED_SIZE;
      if (off + INODE_EXTENDED_SIZE > this.len) this.corruptAt("inode is beyond the end of the image", nid);
      const lo = u32(buf, off + 8);
      const hi = u32(buf, off + 12);
      if (hi < 0x200000) {
        size = hi * 0x100000000 + lo;
        sizeBig = BigInt(size);
      } else {
        size = -1;
        sizeBig = buf.readBigUInt64LE(off + 8);
      }
      inode.uid = u32(buf, off + 24);
      inode.gid = u32(buf, off + 28);
      inode.mtimeSec = buf.readBigInt64LE(off + 32);
      inode.mtimeNsec = u32(buf, off + 40);
      inode.nlink = u32(buf, off + 44);
    }
    inode.size = sizeBig;
    if (type === S_IFCHR || type === S_IFBLK) inode.rdev = u;

    const xattrSize = icount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + 4 * (icount - 1);
    if (off + isize + xattrSize > this.len) this.corruptAt("xattrs run past the end of the image", nid);
    this.consume(isize + xattrSize, nid);

    // The 256 root whiteouts (real char devices 0/0) are not part of the tree.
    if (type === S_IFCHR && u === 0) return null;

    const raw: Raw = { nid, off, mode, layout, isize, xattrSize, size, sizeBig, u };
    if (type === S_IFDIR) {
      this.checkFlat(raw, "directory");
      if (size < 0 || size > this.len) this.corruptAt(`directory size ${sizeBig} is larger than the image`, nid);
      if (layout === LAYOUT_FLAT_INLINE && size % BLOCK_SIZE === 0) this.corruptAt("inline directory has an empty tail", nid);
      this.pendingDir = raw;
    } else if (type === S_IFLNK) {
      this.checkFlat(raw, "symlink");
      if (size < 0 || size >= PATH_MAX) this.corruptAt(`symlink target of ${sizeBig} bytes is too long`, nid);
      if (size === 0) this.corruptAt("empty symlink target", nid);
      const target = this.flatData(raw);
      if (target.indexOf(0) >= 0) this.corruptAt("symlink target contains a NUL byte", nid);
      inode.payload = target;
    } else if (type === S_IFREG && sizeBig !== 0n) {
      if (layout === LAYOUT_FLAT_PLAIN || layout === LAYOUT_FLAT_INLINE) {
        if (size < 0 || size > INLINE_CONTENT_MAX || size > this.len) {
          this.corruptAt(`inline file content of ${sizeBig} bytes exceeds ${INLINE_CONTENT_MAX}`, nid);
        }
        if (layout === LAYOUT_FLAT_INLINE && size % BLOCK_SIZE === 0) this.corruptAt("inline file has an empty tail", nid);
        inode.content = this.flatData(raw);
      } else if (layout !== LAYOUT_CHUNK_BASED) {
        this.corruptAt(`regular file has unsupported data layout ${layout}`, nid);
      }
      // Chunk-based: an external file; its null chunk index is not read.
    }

    if (icount !== 0) this.readXattrs(inode, raw);
    return inode;
  }

  private checkFlat(raw: Raw, what: string): void {
    if (raw.layout !== LAYOUT_FLAT_PLAIN && raw.layout !== LAYOUT_FLAT_INLINE) {
      this.corruptAt(`${what} has unsupported data layout ${raw.layout}`, raw.nid);
    }
  }

  /** The data of a flat inode of at most a few blocks: its blocks, then its inline tail. */
  private flatData(raw: Raw): Buffer {
    const size = raw.size;
    let blockBytes: number;
    let tail: number;
    if (raw.layout === LAYOUT_FLAT_INLINE) {
      tail = size % BLOCK_SIZE;
      blockBytes = size - tail;
    } else {
      tail = 0;
      blockBytes = size;
    }
    let head: Buffer | null = null;
    if (blockBytes > 0) {
      const start = raw.u * BLOCK_SIZE;
      if (start + blockBytes > this.len) this.corruptAt(`data block ${raw.u} is beyond the end of the image`, raw.nid);
      this.consume(blockBytes, raw.nid);
      head = this.buf.subarray(start, start + blockBytes);
    }
    if (tail === 0) return head ?? this.buf.subarray(0, 0);
    const tstart = raw.off + raw.isize + raw.xattrSize;
    if (tstart + tail > this.len) this.corruptAt("inline data runs past the end of the image", raw.nid);
    this.consume(tail, raw.nid);
    const t = this.buf.subarray(tstart, tstart + tail);
    return head === null ? t : Buffer.concat([head, t]);
  }

  // ---------------------------------------------------------------- xattrs

  private readXattrs(inode: Inode, raw: Raw): void {
    const buf = this.buf;
    const start = raw.off + raw.isize;
    const end = start + raw.xattrSize;
    const nShared = buf[start + 4]!;
    let p = start + XATTR_IBODY_HEADER_SIZE + 4 * nShared;
    if (p > end) this.corruptAt(`${nShared} shared xattr ids do not fit in the xattr body`, raw.nid);
    const st: XattrState = { used: 0, names: null };
    // Inline entries first, in on-disk order.
    while (p + XATTR_ENTRY_HEADER_SIZE <= end) {
      const nameLen = buf[p]!;
      const index = buf[p + 1]!;
      const valueSize = u16(buf, p + 2);
      const nameStart = p + XATTR_ENTRY_HEADER_SIZE;
      const valueStart = nameStart + nameLen;
      const valueEnd = valueStart + valueSize;
      if (valueEnd > end) this.corruptAt("xattr entry runs past the end of the xattr body", raw.nid);
      const info = this.keyInfo(index, nameStart, nameLen, raw.nid);
      this.applyXattr(inode, info, buf.subarray(valueStart, valueEnd), st, raw.nid);
      p = nameStart + ((nameLen + valueSize + 3) & ~3);
    }
    // Then the shared ones, in the order of their ids.
    const ids = start + XATTR_IBODY_HEADER_SIZE;
    for (let i = 0; i < nShared; i++) {
      const id = u32(buf, ids + 4 * i);
      let sh = this.sharedCache.get(id);
      if (sh === undefined) {
        const e = this.xattrBase + id * 4;
        if (e + XATTR_ENTRY_HEADER_SIZE > this.len) this.corruptAt(`shared xattr ${id} is beyond the end of the image`, raw.nid);
        const nameLen = buf[e]!;
        const index = buf[e + 1]!;
        const valueSize = u16(buf, e + 2);
        const valueStart = e + XATTR_ENTRY_HEADER_SIZE + nameLen;
        if (valueStart + valueSize > this.len) this.corruptAt(`shared xattr ${id} runs past the end of the image`, raw.nid);
        this.consume(XATTR_ENTRY_HEADER_SIZE + nameLen + valueSize, raw.nid);
        sh = { info: this.keyInfo(index, e + XATTR_ENTRY_HEADER_SIZE, nameLen, raw.nid), value: buf.subarray(valueStart, valueStart + valueSize) };
        this.sharedCache.set(id, sh);
      }
      this.applyXattr(inode, sh.info, sh.value, st, raw.nid);
    }
  }

  /** Decode (prefix index, suffix) into a key and decide what to do with it. */
  private keyInfo(index: number, nameStart: number, nameLen: number, nid: number): KeyInfo {
    const prefix = XATTR_PREFIX_BY_INDEX[index];
    if (prefix === undefined) this.corruptAt(`unknown xattr name prefix index ${index}`, nid);
    const name = prefix + this.buf.toString("latin1", nameStart, nameStart + nameLen);
    let info = this.keyCache.get(name);
    if (info !== undefined) return info;
    if (name.length === 0) this.corruptAt("empty xattr name", nid);
    if (name.length > XATTR_NAME_MAX) this.corruptAt(`xattr name of ${name.length} bytes is too long`, nid);
    if (name.indexOf("\0") >= 0) this.corruptAt("xattr name contains a NUL byte", nid);
    let action = XAction.Keep;
    let kept = name;
    if (name === XATTR_REDIRECT) action = XAction.Redirect;
    else if (name === XATTR_METACOPY) action = XAction.Metacopy;
    else if (name === XATTR_ESC_WHITEOUT) action = XAction.Whiteout;
    else if (name === XATTR_ESC_WHITEOUTS || name === XATTR_USER_WHITEOUT || name === XATTR_USER_WHITEOUTS) action = XAction.Drop;
    else if (name.startsWith(OVERLAY_PREFIX)) {
      if (name.startsWith(OVERLAY_ESC_PREFIX)) kept = OVERLAY_PREFIX + name.slice(OVERLAY_ESC_PREFIX.length);
      else action = XAction.Drop;
    }
    info = { action, key: Buffer.from(kept, "latin1"), name };
    this.keyCache.set(name, info);
    return info;
  }

  private applyXattr(inode: Inode, info: KeyInfo, value: Buffer, st: XattrState, nid: number): void {
    // Every xattr of an inode is counted once, kept or not, so that a key
    // cannot appear twice (upstream would let the last one win).
    if (st.names === null) st.names = info.name;
    else {
      if (typeof st.names === "string") st.names = new Set([st.names]);
      if (st.names.has(info.name)) this.corruptAt(`xattr ${info.name} appears twice`, nid);
      st.names.add(info.name);
    }
    const isReg = (inode.mode & S_IFMT) === S_IFREG;
    switch (info.action) {
      case XAction.Redirect:
        if (isReg) {
          let v = value;
          if (v.length > 1 && v[0] === 0x2f) v = v.subarray(1);
          const z = v.indexOf(0);
          inode.payload = z < 0 ? v : v.subarray(0, z);
        }
        return;
      case XAction.Metacopy:
        if (isReg && value.length === METACOPY_SIZE) inode.digest = value.subarray(4, METACOPY_SIZE);
        return;
      case XAction.Whiteout:
        if (isReg) {
          inode.mode = ((inode.mode & ~S_IFMT) | S_IFCHR) >>> 0;
          inode.rdev = 0;
          inode.size = 0n;
          inode.content = null;
          return;
        }
        // On anything else it is an ordinary escaped overlay xattr.
        break;
      case XAction.Drop:
        return;
      case XAction.Keep:
        break;
    }
    const cost = 7 + info.key.length + value.length + (inode.xattrs.length === 0 ? XATTR_IBODY_HEADER_SIZE : 0);
    st.used += cost;
    if (st.used > XATTR_BUDGET) this.corruptAt("xattrs exceed the 64 KiB per-inode limit", nid);
    const x: Xattr = { key: info.key, value };
    inode.xattrs.push(x);
  }

  // ----------------------------------------------------------- directories

  /** Read a directory's dirents (blocks, then inline tail) and push it on the walk stack. */
  private pushDir(dir: Inode, name: Buffer | null, nid: number): void {
    const raw = this.pendingDir!;
    this.pendingDir = null;
    const frame: Frame = { dir, name, names: [], nids: [], next: 0 };
    this.stack.push(frame);
    this.curName = null;
    const size = raw.size;
    if (size === 0) return;
    const tailpacked = raw.layout === LAYOUT_FLAT_INLINE;
    const nBlocks = Math.ceil(size / BLOCK_SIZE);
    const oobBlocks = tailpacked ? nBlocks - 1 : nBlocks;
    const prev: PrevName = { name: null };
    if (oobBlocks > 0) {
      const base = raw.u * BLOCK_SIZE;
      for (let b = 0; b < oobBlocks; b++) {
        let groupSize = BLOCK_SIZE;
        if (!tailpacked && b + 1 === oobBlocks) groupSize = size % BLOCK_SIZE || BLOCK_SIZE;
        const gstart = base + b * BLOCK_SIZE;
        if (gstart + groupSize > this.len) this.corruptAt(`directory block ${raw.u + b} is beyond the end of the image`, nid);
        this.readGroup(frame, gstart, groupSize, prev, nid);
      }
    }
    if (tailpacked) {
      const tail = size % BLOCK_SIZE;
      const tstart = raw.off + raw.isize + raw.xattrSize;
      if (tstart + tail > this.len) this.corruptAt("inline directory entries run past the end of the image", nid);
      this.readGroup(frame, tstart, tail, prev, nid);
    }
  }

  /** One self-contained group of dirents: headers, then names without NULs. */
  private readGroup(frame: Frame, start: number, groupSize: number, prev: PrevName, nid: number): void {
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
    let nameoff = first;
    for (let i = 0; i < n; i++) {
      const d = start + i * DIRENT_SIZE;
      let nameEnd: number;
      if (i + 1 < n) {
        const nextOff = u16(buf, d + DIRENT_SIZE + 8);
        if (nextOff <= nameoff || nextOff > groupSize) {
          this.corruptAt(`directory entry ${i + 1} has name offset ${nextOff} after ${nameoff} (block of ${groupSize} bytes)`, nid);
        }
        nameEnd = start + nextOff;
      } else {
        // The last name runs to the first NUL or the end of the group.
        if (nameoff >= groupSize) this.corruptAt("last directory entry has an empty name", nid);
        const z = buf.indexOf(0, start + nameoff);
        nameEnd = z < 0 || z > end ? end : z;
      }
      const nameStart = start + nameoff;
      const nameLen = nameEnd - nameStart;
      if (nameLen === 0) this.corruptAt("directory entry with an empty name", nid);
      if (nameLen > MAX_NAME_LENGTH) this.corruptAt(`directory entry name of ${nameLen} bytes is too long`, nid);
      for (let k = nameStart; k < nameEnd; k++) {
        const c = buf[k]!;
        if (c === 0x2f || c === 0) {
          this.corruptAt(`directory entry name ${printable(buf.subarray(nameStart, nameEnd))} contains ${c === 0 ? "a NUL byte" : "'/'"}`, nid);
        }
      }
      const name = buf.subarray(nameStart, nameEnd);
      const p = prev.name;
      if (p !== null && compareNames(p, name) >= 0) {
        this.corruptAt(`directory entries ${printable(p)} and ${printable(name)} are not in strictly ascending order`, nid);
      }
      prev.name = name;
      nameoff = nameEnd - start;
      // "." and ".." are the directory itself and its parent: not entries of the tree.
      if (buf[nameStart] === 0x2e && (nameLen === 1 || (nameLen === 2 && buf[nameStart + 1] === 0x2e))) continue;
      if (filter !== null && !filter.has(name.toString("latin1"))) continue;
      const lo = u32(buf, d);
      const hi = u32(buf, d + 4);
      frame.names.push(name);
      // Exact below 2^53; anything larger is far beyond the image and fails when read.
      frame.nids.push(hi < 0x200000 ? hi * 0x100000000 + lo : Number.MAX_SAFE_INTEGER);
    }
  }

  // ---------------------------------------------------------------- errors

  private consume(n: number, nid: number): void {
    this.consumed += n;
    if (this.consumed > this.len) {
      this.corruptAt("image data is used more than once (overlapping inodes or shared blocks)", nid);
    }
  }

  /** Path of the entry being read, built from the walk stack (for messages only). */
  private where(): string {
    const parts: Buffer[] = [];
    for (const f of this.stack) if (f.name !== null) parts.push(f.name);
    if (this.curName !== null) parts.push(this.curName);
    if (parts.length === 0) return "/";
    // Long paths keep their last components.
    let s = "";
    for (let i = parts.length - 1; i >= 0; i--) {
      s = "/" + printable(parts[i]!) + s;
      if (s.length > 200 && i > 0) return "…" + s;
    }
    return s;
  }

  private corruptAt(msg: string, nid: number): never {
    corrupt(`${msg} (nid ${nid}, at ${this.where()})`);
  }
}

interface XattrState {
  used: number;
  names: string | Set<string> | null;
}

interface PrevName {
  name: Buffer | null;
}

function u16(b: Buffer, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

function u32(b: Buffer, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 0x1000000;
}

function compareNames(a: Buffer, b: Buffer): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
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

/**
 * Build the inode tree of a composefs image. Throws CfsError (never anything
 * else) when the image is not a composefs image or is inconsistent.
 */
export function readImage(buf: Buffer, opts: ReadOptions = {}): Inode {
  const r = new ImageReader(buf, opts);
  return r.read(u16(buf, SUPER_OFFSET + 14));
}
