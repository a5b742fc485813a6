/**
 * The composefs EROFS format in one place: constants and on-disk structures,
 * with their encoders and decoders. All integers are little-endian.
 *
 * Sources: upstream libcomposefs/erofs_fs.h (the kernel's fs/erofs/erofs_fs.h),
 * libcomposefs/lcfs-erofs.h (the composefs header) and lcfs-writer-erofs.c.
 */

export const BLOCK_SIZE = 4096;
export const BLOCK_BITS = 12;
/** Inodes are addressed in 32-byte slots: nid = byte offset / 32. */
export const SLOT_SIZE = 32;

/** composefs header at offset 0 (struct lcfs_erofs_header_s). */
export const COMPOSEFS_MAGIC = 0xd078629a;
export const COMPOSEFS_HEADER_VERSION = 1;
export const COMPOSEFS_HEADER_SIZE = 32;
/** Header flag: the image holds POSIX ACL xattrs (mount without `noacl`). */
export const COMPOSEFS_FLAG_HAS_ACL = 1;
/** Highest composefs format version (LCFS_VERSION_MAX). */
export const COMPOSEFS_VERSION_MAX = 1;

/** EROFS superblock at offset 1024, 128 bytes. */
export const SUPER_OFFSET = 1024;
export const SUPER_SIZE = 128;
export const EROFS_MAGIC = 0xe0f5e1e2;
export const FEATURE_COMPAT_SB_CHKSUM = 1;
export const FEATURE_COMPAT_MTIME = 2;
export const FEATURE_COMPAT_XATTR_FILTER = 4;
/**
 * Inodes start right after the superblock: the root, first of them, has nid
 * 36, unless its inline tail would cross a block and it starts the next one.
 */
export const FIRST_INODE_OFFSET = SUPER_OFFSET + SUPER_SIZE;

export const INODE_COMPACT_SIZE = 32;
export const INODE_EXTENDED_SIZE = 64;

/** i_format data layouts (bits 1..3; bit 0 is "extended"). */
export const LAYOUT_FLAT_PLAIN = 0;
export const LAYOUT_COMPRESSED_FULL = 1;
export const LAYOUT_FLAT_INLINE = 2;
export const LAYOUT_COMPRESSED_COMPACT = 3;
export const LAYOUT_CHUNK_BASED = 4;

/** Chunk-based files: i_u low 16 bits hold chunkbits - 12 (5 bits used). */
export const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
export const CHUNK_FORMAT_INDEXES = 0x20;
/** A chunk with no data (EROFS_NULL_ADDR). */
export const NULL_ADDR = 0xffffffff;
/** External files need at most this many chunks (LCFS_MAX_NONINLINE_CHUNKS). */
export const MAX_NONINLINE_CHUNKS = 1024;

/** Directory entries: 12 bytes each, names follow without NULs. */
export const DIRENT_SIZE = 12;
export const FT_UNKNOWN = 0;
export const FT_REG_FILE = 1;
export const FT_DIR = 2;
export const FT_CHRDEV = 3;
export const FT_BLKDEV = 4;
export const FT_FIFO = 5;
export const FT_SOCK = 6;
export const FT_SYMLINK = 7;

/** Xattr body header (struct erofs_xattr_ibody_header): 12 bytes. */
export const XATTR_IBODY_HEADER_SIZE = 12;
/** Xattr entry header (struct erofs_xattr_entry): 4 bytes. */
export const XATTR_ENTRY_HEADER_SIZE = 4;
/** At most this many shared xattr references per inode (EROFS_XATTR_LONG_PREFIX). */
export const MAX_SHARED_REFS = 128;
export const XATTR_FILTER_SEED = 0x25bbe08f;
export const XATTR_FILTER_BITS = 32;

/**
 * Xattr name prefixes by index, as the writer matches them (first match wins;
 * upstream's writer never emits index 5, `lustre.`, but readers know it).
 */
export const XATTR_PREFIXES: ReadonlyArray<readonly [string, number]> = [
  ["user.", 1],
  ["system.posix_acl_access", 2],
  ["system.posix_acl_default", 3],
  ["trusted.", 4],
  ["security.", 6],
];
export const XATTR_PREFIX_BY_INDEX: ReadonlyArray<string | undefined> = [
  "",
  "user.",
  "system.posix_acl_access",
  "system.posix_acl_default",
  "trusted.",
  "lustre.",
  "security.",
];

/** overlayfs xattrs that composefs adds or escapes. */
export const OVERLAY_PREFIX = "trusted.overlay.";
export const OVERLAY_ESCAPED_PREFIX = "trusted.overlay.overlay.";
export const XATTR_METACOPY = "trusted.overlay.metacopy";
export const XATTR_REDIRECT = "trusted.overlay.redirect";
export const XATTR_OPAQUE = "trusted.overlay.opaque";
export const XATTR_ESCAPED_WHITEOUT = "trusted.overlay.overlay.whiteout";
export const XATTR_ESCAPED_WHITEOUTS = "trusted.overlay.overlay.whiteouts";
export const XATTR_ESCAPED_OPAQUE = "trusted.overlay.overlay.opaque";
export const XATTR_USER_WHITEOUT = "user.overlay.whiteout";
export const XATTR_USER_WHITEOUTS = "user.overlay.whiteouts";
export const XATTR_USER_OPAQUE = "user.overlay.opaque";
/** fsverity hash algorithm ids in the metacopy xattr. */
export const FSVERITY_HASH_SHA256 = 1;
export const FSVERITY_HASH_SHA512 = 2;

const TWO_32 = 4294967296;
const SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** EROFS chunking of an external file (erofs_compute_chunking). */
export function chunking(size: bigint): { chunkBits: number; chunkCount: number } {
  // chunkbits = ilog2(size - 1) + 1, at least the block size, at most 12 + 31.
  if (size >= 0n && size <= SAFE_BIG) {
    // Plain numbers: exact below 2^53, and no BigInt garbage per file.
    const n = Number(size);
    let chunkBits: number;
    if (n <= 1) chunkBits = 1;
    else {
      const m = n - 1;
      const hi = Math.floor(m / TWO_32);
      chunkBits = hi > 0 ? 64 - Math.clz32(hi) : 32 - Math.clz32(m);
    }
    if (chunkBits < BLOCK_BITS) chunkBits = BLOCK_BITS;
    if (chunkBits - BLOCK_BITS > CHUNK_FORMAT_BLKBITS_MASK) chunkBits = CHUNK_FORMAT_BLKBITS_MASK + BLOCK_BITS;
    // A shift where it fits 31 bits: `**` is a call to pow() in code not yet compiled.
    const count = Math.ceil(n / (chunkBits <= 30 ? 1 << chunkBits : 2 ** chunkBits));
    return { chunkBits, chunkCount: count > 0xffffffff ? 0xffffffff : count };
  }
  let chunkBits: number;
  if (size <= 1n) chunkBits = 1;
  else chunkBits = (size - 1n).toString(2).length;
  if (chunkBits < BLOCK_BITS) chunkBits = BLOCK_BITS;
  if (chunkBits - BLOCK_BITS > CHUNK_FORMAT_BLKBITS_MASK) chunkBits = CHUNK_FORMAT_BLKBITS_MASK + BLOCK_BITS;
  const chunkSize = 1n << BigInt(chunkBits);
  const count = (size + chunkSize - 1n) / chunkSize;
  return { chunkBits, chunkCount: count > 0xffffffffn ? 0xffffffff : Number(count) };
}

/** Split an xattr key into (prefix index, suffix) as the writer does. */
const PREFIX_BYTES = XATTR_PREFIXES.map(([p, i]) => [Buffer.from(p, "latin1"), i] as const);

export function xattrKeyIndex(key: Buffer): { index: number; suffix: Buffer } {
  for (const [prefix, index] of PREFIX_BYTES) {
    if (key.length >= prefix.length && key.compare(prefix, 0, prefix.length, 0, prefix.length) === 0) {
      return { index, suffix: key.subarray(prefix.length) };
    }
  }
  return { index: 0, suffix: key };
}

/** Size of one xattr entry, padded to 4 bytes. */
export function xattrEntrySize(suffixLen: number, valueLen: number): number {
  return roundUp(XATTR_ENTRY_HEADER_SIZE + suffixLen + valueLen, 4);
}

/** The decoded superblock fields composefs uses. */
export interface SuperBlock {
  magic: number;
  checksum: number;
  featureCompat: number;
  blkszbits: number;
  rootNid: number;
  inos: bigint;
  buildTime: bigint;
  buildTimeNsec: number;
  blocks: number;
  metaBlkAddr: number;
  xattrBlkAddr: number;
  featureIncompat: number;
}

export function encodeSuperBlock(buf: Buffer, off: number, sb: SuperBlock): void {
  buf.writeUInt32LE(sb.magic, off);
  buf.writeUInt32LE(sb.checksum, off + 4);
  buf.writeUInt32LE(sb.featureCompat, off + 8);
  buf[off + 12] = sb.blkszbits;
  buf[off + 13] = 0; // sb_extslots
  buf.writeUInt16LE(sb.rootNid, off + 14);
  buf.writeBigUInt64LE(sb.inos, off + 16);
  buf.writeBigUInt64LE(BigInt.asUintN(64, sb.buildTime), off + 24);
  buf.writeUInt32LE(sb.buildTimeNsec, off + 32);
  buf.writeUInt32LE(sb.blocks, off + 36);
  buf.writeUInt32LE(sb.metaBlkAddr, off + 40);
  buf.writeUInt32LE(sb.xattrBlkAddr, off + 44);
  // uuid (16) and volume_name (16) stay zero
  buf.writeUInt32LE(sb.featureIncompat, off + 80);
}

export function decodeSuperBlock(buf: Buffer, off: number): SuperBlock {
  return {
    magic: buf.readUInt32LE(off),
    checksum: buf.readUInt32LE(off + 4),
    featureCompat: buf.readUInt32LE(off + 8),
    blkszbits: buf[off + 12]!,
    rootNid: buf.readUInt16LE(off + 14),
    inos: buf.readBigUInt64LE(off + 16),
    buildTime: buf.readBigInt64LE(off + 24),
    buildTimeNsec: buf.readUInt32LE(off + 32),
    blocks: buf.readUInt32LE(off + 36),
    metaBlkAddr: buf.readUInt32LE(off + 40),
    xattrBlkAddr: buf.readUInt32LE(off + 44),
    featureIncompat: buf.readUInt32LE(off + 80),
  };
}

/** One inode header, compact or extended, as stored. */
export interface InodeHeader {
  extended: boolean;
  layout: number;
  xattrIcount: number;
  mode: number;
  nlink: number;
  size: bigint;
  /** i_u: block address, rdev, or chunk format. */
  u: number;
  ino: number;
  uid: number;
  gid: number;
  /** Extended inodes only; compact ones use the superblock build time. */
  mtimeSec: bigint;
  mtimeNsec: number;
}

export function encodeInode(buf: Buffer, off: number, h: InodeHeader): void {
  encodeInodeFields(buf, off, h.extended, h.layout, h.xattrIcount, h.mode, h.nlink, h.size, h.u, h.ino, h.uid, h.gid, h.mtimeSec, h.mtimeNsec);
}

/** Little-endian stores as plain byte writes (no bounds-checking call per field). */
export function put16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v;
  buf[off + 1] = v >>> 8;
}

export function put32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v;
  buf[off + 1] = v >>> 8;
  buf[off + 2] = v >>> 16;
  buf[off + 3] = v >>> 24;
}

/** A 64-bit two's complement value, little-endian (no BigInt arithmetic below 2^53). */
function put64(buf: Buffer, off: number, v: bigint): void {
  if (v >= 0n && v <= SAFE_BIG) {
    const n = Number(v);
    put32(buf, off, n % TWO_32);
    put32(buf, off + 4, Math.floor(n / TWO_32));
  } else {
    buf.writeBigUInt64LE(BigInt.asUintN(64, v), off);
  }
}

/** encodeInode with the fields as arguments (the writer's hot path: no header object). */
export function encodeInodeFields(
  buf: Buffer,
  off: number,
  extended: boolean,
  layout: number,
  xattrIcount: number,
  mode: number,
  nlink: number,
  size: bigint,
  u: number,
  ino: number,
  uid: number,
  gid: number,
  mtimeSec: bigint,
  mtimeNsec: number,
): void {
  put16(buf, off, (layout << 1) | (extended ? 1 : 0));
  put16(buf, off + 2, xattrIcount);
  put16(buf, off + 4, mode & 0xffff);
  if (!extended) {
    put16(buf, off + 6, nlink & 0xffff);
    put32(buf, off + 8, size >= 0n && size <= 0xffffffffn ? Number(size) : Number(BigInt.asUintN(32, size)));
    put32(buf, off + 16, u >>> 0);
    put32(buf, off + 20, ino >>> 0);
    put16(buf, off + 24, uid & 0xffff);
    put16(buf, off + 26, gid & 0xffff);
  } else {
    put64(buf, off + 8, size);
    put32(buf, off + 16, u >>> 0);
    put32(buf, off + 20, ino >>> 0);
    put32(buf, off + 24, uid >>> 0);
    put32(buf, off + 28, gid >>> 0);
    put64(buf, off + 32, mtimeSec);
    put32(buf, off + 40, mtimeNsec >>> 0);
    put32(buf, off + 44, nlink >>> 0);
  }
}

/** Decode the inode at byte offset off; the caller checks bounds (64 bytes or 32). */
export function decodeInode(buf: Buffer, off: number): InodeHeader {
  const format = buf.readUInt16LE(off);
  const extended = (format & 1) === 1;
  const base = {
    extended,
    layout: (format >> 1) & 0x7,
    xattrIcount: buf.readUInt16LE(off + 2),
    mode: buf.readUInt16LE(off + 4),
  };
  if (!extended) {
    return {
      ...base,
      nlink: buf.readUInt16LE(off + 6),
      size: BigInt(buf.readUInt32LE(off + 8)),
      u: buf.readUInt32LE(off + 16),
      ino: buf.readUInt32LE(off + 20),
      uid: buf.readUInt16LE(off + 24),
      gid: buf.readUInt16LE(off + 26),
      mtimeSec: 0n,
      mtimeNsec: 0,
    };
  }
  return {
    ...base,
    size: buf.readBigUInt64LE(off + 8),
    u: buf.readUInt32LE(off + 16),
    ino: buf.readUInt32LE(off + 20),
    uid: buf.readUInt32LE(off + 24),
    gid: buf.readUInt32LE(off + 28),
    mtimeSec: buf.readBigInt64LE(off + 32),
    mtimeNsec: buf.readUInt32LE(off + 40),
    nlink: buf.readUInt32LE(off + 44),
  };
}

/** Format bits 4..15 must be zero in a valid image. */
export function inodeFormatIsValid(format: number): boolean {
  return (format & ~0xf) === 0;
}

/**
 * Deepest directory nesting cfsctl writes and reads (the root is level 0; a
 * directory at level 2048 is refused): a deeper path cannot fit in
 * PATH_MAX, and upstream composefs-info overflows its stack at about 1500
 * levels. The writer refuses what the reader would call corrupt.
 */
export const MAX_DIR_DEPTH = 2048;
