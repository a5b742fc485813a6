/**
 * Reading the result of the native scanDir() (native/cfsctl_native.c,
 * encode_entry): one directory's entries, sorted by name bytes. A u32 entry
 * count and the offset of the tail, then per entry
 *
 *   u32 name offset, u32 name length (in the tail)
 *   u32 st_mode, st_uid, st_gid, st_nlink, st_rdev (low 32 bits)
 *   f64 st_size, f64 st_ino (as a JS number), u32 st_ino low, high, u32 st_dev low, high
 *   f64 st_mtime seconds, u32 nanoseconds
 *   u32 xattr count, then per xattr: u32 name length, name, u32 value length, value
 *   u32 data offset, u32 data length (in the tail; 0xffffffff: none): a
 *       symlink's target, or a small file's content
 *
 * all little-endian, then the tail. The tail is copied once (`tail`) and
 * names and data are views of it: one allocation a directory, not one a
 * name. One cursor, refilled by next().
 */
export class PackedEntries {
  readonly count: number;
  /** Names, symlink targets and small contents of the whole directory. */
  readonly tail: Buffer;
  private pos = 8;
  nameStart = 0;
  nameEnd = 0;
  mode = 0;
  uid = 0;
  gid = 0;
  nlink = 0;
  rdev = 0;
  size = 0;
  ino = 0;
  inoLo = 0;
  inoHi = 0;
  devLo = 0;
  devHi = 0;
  mtimeSec = 0;
  mtimeNsec = 0;
  xattrCount = 0;
  xattrStart = 0;
  /** In the tail; dataLen -1: no data. */
  dataLen = -1;
  dataStart = 0;

  constructor(readonly buf: Buffer) {
    this.count = buf.readUInt32LE(0);
    this.tail = Buffer.from(buf.subarray(buf.readUInt32LE(4)));
  }

  /** Decode the next entry into the fields. */
  next(): void {
    const b = this.buf;
    let p = this.pos;
    this.nameStart = b.readUInt32LE(p);
    this.nameEnd = this.nameStart + b.readUInt32LE(p + 4);
    p += 8;
    this.mode = b.readUInt32LE(p);
    this.uid = b.readUInt32LE(p + 4);
    this.gid = b.readUInt32LE(p + 8);
    this.nlink = b.readUInt32LE(p + 12);
    this.rdev = b.readUInt32LE(p + 16);
    this.size = b.readDoubleLE(p + 20);
    this.ino = b.readDoubleLE(p + 28);
    this.inoLo = b.readUInt32LE(p + 36);
    this.inoHi = b.readUInt32LE(p + 40);
    this.devLo = b.readUInt32LE(p + 44);
    this.devHi = b.readUInt32LE(p + 48);
    this.mtimeSec = b.readDoubleLE(p + 52);
    this.mtimeNsec = b.readUInt32LE(p + 60);
    p += 64;
    this.xattrCount = b.readUInt32LE(p);
    p += 4;
    this.xattrStart = p;
    for (let i = 0; i < this.xattrCount; i++) {
      p += 4 + b.readUInt32LE(p);
      p += 4 + b.readUInt32LE(p);
    }
    this.dataStart = b.readUInt32LE(p);
    const dataLen = b.readUInt32LE(p + 4);
    this.dataLen = dataLen === 0xffffffff ? -1 : dataLen;
    this.pos = p + 8;
  }

  /** The current entry's name (a view of the tail). */
  name(): Buffer {
    return this.tail.subarray(this.nameStart, this.nameEnd);
  }

  /** The current entry's data (a view of the tail), or null. */
  data(): Buffer | null {
    return this.dataLen < 0 ? null : this.tail.subarray(this.dataStart, this.dataStart + this.dataLen);
  }

  /** Each xattr of the current entry, as views of the buffer. */
  forEachXattr(fn: (name: Buffer, value: Buffer) => void): void {
    eachXattr(this.buf, this.xattrStart, this.xattrCount, fn);
  }
}

/** Each xattr of a packed xattr list (readXattrs: u32 count, then name and value pairs), as views of `buf`. */
export function forEachPackedXattr(buf: Buffer, fn: (name: Buffer, value: Buffer) => void): void {
  eachXattr(buf, 4, buf.readUInt32LE(0), fn);
}

/** `count` (u32 name length, name, u32 value length, value) pairs from buf[p…]. */
function eachXattr(buf: Buffer, p: number, count: number, fn: (name: Buffer, value: Buffer) => void): void {
  for (let i = 0; i < count; i++) {
    const nl = buf.readUInt32LE(p);
    const name = buf.subarray(p + 4, p + 4 + nl);
    p += 4 + nl;
    const vl = buf.readUInt32LE(p);
    const value = buf.subarray(p + 4, p + 4 + vl);
    p += 4 + vl;
    fn(name, value);
  }
}
