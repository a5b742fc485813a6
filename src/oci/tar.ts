/**
 * A streaming tar reader: ustar, POSIX PAX ('x' per entry; 'g' global
 * headers are skipped), GNU long names and link targets ('L', 'K'),
 * base-256 numbers, and GNU sparse members (old GNU 'S' and PAX formats
 * 0.1 and 1.0). Memory is one block plus the metadata of the member being
 * read, whatever the archive size.
 *
 * Every byte read passes through an optional tap, except member contents
 * read with `content(true)`: that is how a layer is split into a stream of
 * inline bytes and external objects and later given back bit for bit.
 *
 * An archive that ends at a member boundary without its end-of-archive
 * blocks, or inside the padding of its last member, is accepted (`umoci
 * insert` writes such layers); a member cut short is an error.
 */
import { ByteReader, type ExternalRef } from "../util/byte-reader.js";
import { CfsError } from "../util/errors.js";

export type { ExternalRef };

export interface TarEntry {
  /** Path as stored (PAX path > GNU long name > ustar prefix/name). */
  path: Buffer;
  /** Typeflag; NUL is reported as "0". */
  type: string;
  mode: number;
  uid: number;
  gid: number;
  /** Size of the file the entry describes (a sparse file's real size). */
  size: number;
  /** Whole seconds (PAX fractions are dropped toward minus infinity). */
  mtime: bigint;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
  xattrs: Array<{ key: Buffer; value: Buffer }>;
  /** Bytes of member data `content()` yields (a sparse file's stored pieces only). */
  dataSize: number;
  /** A sparse file's data map: [offset, length] pairs in file order, or null. */
  sparse: Array<[number, number]> | null;
}

function cstring(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

function num(field: Buffer, what: string): number {
  if (field[0]! & 0x80) {
    // base-256 (GNU): big-endian two's complement, top bit of the first byte set
    let v = BigInt(field[0]! & 0x3f);
    const negative = (field[0]! & 0x40) !== 0;
    for (let i = 1; i < field.length; i++) v = (v << 8n) | BigInt(field[i]!);
    if (negative) v -= 1n << BigInt(field.length * 8 - 2);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new CfsError(`tar: ${what} out of range`);
    return Number(v);
  }
  const s = cstring(field).toString("latin1").trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new CfsError(`tar: bad ${what} field ${JSON.stringify(s)}`);
  const v = parseInt(s, 8);
  if (!Number.isSafeInteger(v)) throw new CfsError(`tar: ${what} out of range`);
  return v;
}

function checksumOk(h: Buffer): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  const stored = cstring(h.subarray(148, 156)).toString("latin1").trim();
  if (!/^[0-7]+$/.test(stored)) return false;
  const v = parseInt(stored, 8);
  // Some old tars summed signed chars; POSIX says unsigned. Accept both, as GNU tar does.
  return v === unsigned || v === signed;
}

/** PAX values that are names (C strings to every tar): a NUL byte in one is an error. */
const PAX_STRINGS = new Set(["path", "linkpath", "uname", "gname", "GNU.sparse.name"]);

/** PAX records: "LEN key=value\n", values raw bytes. A later record of the same key wins. */
function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let p = 0;
  while (p < data.length) {
    if (data[p] === 0) break; // NUL padding after the last record
    const sp = data.indexOf(0x20, p);
    if (sp < 0 || sp - p > 20) throw new CfsError("tar: malformed PAX header");
    const lenText = data.toString("latin1", p, sp);
    const len = /^[0-9]+$/.test(lenText) ? Number(lenText) : NaN;
    if (!Number.isSafeInteger(len) || len <= sp - p + 1 || p + len > data.length || data[p + len - 1] !== 0x0a) {
      throw new CfsError("tar: malformed PAX record");
    }
    const rec = data.subarray(sp + 1, p + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new CfsError("tar: malformed PAX record");
    // As Go's archive/tar (and so umoci and podman) decides: a key never
    // holds a NUL byte, and neither do the values that are C strings.
    // Latin-1: each byte a character, so an xattr name keeps its bytes whatever they are.
    const key = rec.toString("latin1", 0, eq);
    const value = rec.subarray(eq + 1);
    if (key.length === 0) throw new CfsError("tar: malformed PAX record (no name)");
    if (key.includes("\0")) throw new CfsError(`tar: NUL byte in a PAX record name ${JSON.stringify(key)}`);
    if (PAX_STRINGS.has(key) && value.includes(0)) throw new CfsError(`tar: NUL byte in PAX ${key} ${JSON.stringify(value.toString("utf8"))}`);
    out.set(key, value);
    p += len;
  }
  return out;
}

/** %XX escapes (each a byte) of a latin1 string to bytes; null for a malformed escape. */
function percentDecode(s: string): Buffer | null {
  const out = Buffer.allocUnsafe(s.length);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c !== 0x25) {
      out[n++] = c;
      continue;
    }
    const hex = s.slice(i + 1, i + 3);
    if (!/^[0-9a-fA-F]{2}$/.test(hex)) return null;
    out[n++] = parseInt(hex, 16);
    i += 2;
  }
  return out.subarray(0, n);
}

function paxNumber(v: Buffer, what: string): number {
  const s = v.toString("latin1");
  if (!/^[0-9]+$/.test(s)) throw new CfsError(`tar: bad PAX ${what} ${JSON.stringify(s.slice(0, 40))}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new CfsError(`tar: PAX ${what} out of range`);
  return n;
}

/** Metadata members (PAX, long names, sparse maps) are held in memory: bound them. */
const MAX_META = 1 << 20;
const MAX_SPARSE_PIECES = 1 << 16;

function checkSparseMap(map: Array<[number, number]>, realSize: number, stored: number): void {
  let end = 0;
  let total = 0;
  for (const [off, len] of map) {
    if (off < end || off + len > realSize) throw new CfsError("tar: bad sparse map");
    end = off + len;
    total += len;
  }
  if (total !== stored) throw new CfsError("tar: sparse map does not match the stored data");
}

export class TarReader {
  private readonly r: ByteReader;
  private remaining = 0;
  private padding = 0;
  private ended = false;
  constructor(chunks: AsyncIterable<Buffer | ExternalRef>, tap?: (b: Buffer) => void) {
    this.r = new ByteReader(chunks[Symbol.asyncIterator](), tap);
  }

  /**
   * For an archive rebuilt from a split stream: the current member's data is
   * an external object, not in the byte stream. Returns its reference; the
   * padding after it is read as usual.
   */
  async externalContent(): Promise<ExternalRef> {
    const ref = await this.r.takeRef();
    if (!ref) throw new CfsError("split stream: a large member without its object reference");
    this.remaining = 0;
    if (this.padding > 0) await this.r.read(this.padding);
    this.padding = 0;
    return ref;
  }

  /** Bytes consumed from the archive so far. */
  get offset(): number {
    return this.r.offset;
  }

  private async block(): Promise<Buffer | null> {
    const b = await this.r.read(512);
    if (b.length === 0) return null;
    if (b.length < 512) throw new CfsError("tar: archive truncated inside a header");
    return b;
  }

  private async data(size: number, what: string): Promise<Buffer> {
    if (size > MAX_META) throw new CfsError(`tar: ${what} of ${size} bytes (too large)`);
    const d = await this.r.read(size);
    if (d.length < size) throw new CfsError("tar: archive truncated");
    const pad = (512 - (size % 512)) % 512;
    if ((await this.r.read(pad)).length < pad) throw new CfsError("tar: archive truncated");
    return d;
  }

  /** The next entry, or null at the end of the archive. Its contents must be read (or skipped) before the next call. */
  async next(): Promise<TarEntry | null> {
    if (this.ended) return null;
    if (this.remaining > 0 || this.padding > 0) await this.skipContent();
    let pax: Map<string, Buffer> | null = null;
    let paxBytes = 0;
    let longName: Buffer | null = null;
    let longLink: Buffer | null = null;
    for (;;) {
      const h = await this.block();
      if (!h) {
        if (pax || longName || longLink) throw new CfsError("tar: archive truncated after an extended header");
        this.ended = true;
        return null;
      }
      if (h.every((b) => b === 0)) {
        if (pax || longName || longLink) throw new CfsError("tar: end of archive after an extended header");
        this.ended = true;
        return null;
      }
      if (!checksumOk(h)) throw new CfsError(`tar: header checksum mismatch at byte ${this.r.offset - 512} (not a tar archive, or corrupt)`);
      const type = h[156] === 0 ? "0" : String.fromCharCode(h[156]!);
      const size = num(h.subarray(124, 136), "size");
      if (size < 0) throw new CfsError("tar: negative size");
      if (type === "x") {
        // Several PAX headers before one member add up, to the limit of one
        // (a copy of the records so far for each made thousands quadratic).
        paxBytes += size;
        if (paxBytes > MAX_META) throw new CfsError(`tar: PAX headers of more than ${MAX_META} bytes for one member (too large)`);
        const more = parsePax(await this.data(size, "PAX header"));
        if (pax === null) pax = more;
        else for (const [k, v] of more) pax.set(k, v);
        continue;
      }
      if (type === "g") {
        await this.data(size, "global PAX header");
        continue;
      }
      if (type === "L") {
        longName = cstring(await this.data(size, "GNU long name"));
        continue;
      }
      if (type === "K") {
        longLink = cstring(await this.data(size, "GNU long link name"));
        continue;
      }
      const ustar = h.toString("latin1", 257, 263) === "ustar\0";
      let name = cstring(h.subarray(0, 100));
      const prefix = ustar ? cstring(h.subarray(345, 500)) : Buffer.alloc(0);
      if (prefix.length > 0) name = Buffer.concat([prefix, Buffer.from("/"), name]);
      if (longName) name = longName;
      const e: TarEntry = {
        path: name,
        type,
        mode: num(h.subarray(100, 108), "mode"),
        uid: num(h.subarray(108, 116), "uid"),
        gid: num(h.subarray(116, 124), "gid"),
        size,
        mtime: BigInt(num(h.subarray(136, 148), "mtime")),
        linkname: longLink ?? cstring(h.subarray(157, 257)),
        devmajor: type === "3" || type === "4" ? num(h.subarray(329, 337), "devmajor") : 0,
        devminor: type === "3" || type === "4" ? num(h.subarray(337, 345), "devminor") : 0,
        xattrs: [],
        dataSize: size,
        sparse: null,
      };
      if (pax) this.applyPax(e, pax);
      // Typeflag NUL and a name ending in `/`: a directory of a V7-era archive (as Go's archive/tar reads it).
      if (h[156] === 0 && e.path[e.path.length - 1] === 0x2f) e.type = "5";
      if (type === "S") await this.oldGnuSparse(e, h);
      // Members whose data is file contents; every other type's data (rare) is skipped.
      this.remaining = e.dataSize;
      this.padding = (512 - (e.dataSize % 512)) % 512;
      if (e.sparse && pax?.get("GNU.sparse.major")?.toString() === "1") await this.pax1SparseMap(e);
      if (e.type === "S") e.type = "0";
      return e;
    }
  }

  private applyPax(e: TarEntry, pax: Map<string, Buffer>): void {
    // An empty value deletes the record (POSIX pax; Go's archive/tar keeps the
    // ustar field then): `path=` means the header's name, not the root.
    // SCHILY.xattr.* records are read below: an empty value is an empty xattr.
    const g = (k: string) => {
      const v = pax.get(k);
      return v === undefined || v.length === 0 ? undefined : v;
    };
    if (g("path")) e.path = g("path")!;
    if (g("linkpath")) e.linkname = g("linkpath")!;
    if (g("size")) e.size = e.dataSize = paxNumber(g("size")!, "size");
    if (g("uid")) e.uid = paxNumber(g("uid")!, "uid");
    if (g("gid")) e.gid = paxNumber(g("gid")!, "gid");
    const mt = g("mtime");
    if (mt) {
      const m = /^(-?)(\d{1,16})(?:\.(\d*))?$/.exec(mt.toString("latin1"));
      if (!m) throw new CfsError("tar: bad PAX mtime");
      let sec = BigInt(m[2]!);
      const frac = m[3] !== undefined && /[1-9]/.test(m[3]);
      if (m[1]) sec = -sec - (frac ? 1n : 0n);
      e.mtime = sec;
    }
    for (const [k, v] of pax) {
      // SCHILY.xattr names are taken as they are, as Go's archive/tar
      // (containers/storage, umoci), libarchive and composefs-rs read them.
      // GNU tar alone writes `%` and `=` in a name as %25 and %3D and decodes
      // them when it extracts; Go cannot write a name with `=` at all.
      if (k.startsWith("SCHILY.xattr.")) e.xattrs.push({ key: Buffer.from(k.slice(13), "latin1"), value: v });
      else if (k.startsWith("LIBARCHIVE.xattr.")) {
        // libarchive: name URL-encoded (%XX a byte), value base64
        const key = percentDecode(k.slice(17));
        if (key === null) throw new CfsError(`tar: bad LIBARCHIVE.xattr name ${JSON.stringify(k)}`);
        if (key.includes(0)) throw new CfsError(`tar: NUL byte in a PAX record name ${JSON.stringify(k)}`);
        e.xattrs.push({ key, value: Buffer.from(v.toString("latin1"), "base64") });
      }
    }
    // GNU sparse in PAX: 0.1 has the map in GNU.sparse.map, 1.0 in the data area.
    const major = g("GNU.sparse.major")?.toString();
    const minor = g("GNU.sparse.minor")?.toString();
    if (major !== undefined || g("GNU.sparse.map") || g("GNU.sparse.offset") || g("GNU.sparse.size")) {
      if (g("GNU.sparse.name")) e.path = g("GNU.sparse.name")!;
      const real = g("GNU.sparse.realsize") ?? g("GNU.sparse.size");
      if (!real) throw new CfsError("tar: PAX sparse member without its real size");
      e.size = paxNumber(real, "sparse size");
      if (major === "1" && minor === "0") {
        e.sparse = []; // the map is read from the data area
      } else if (g("GNU.sparse.map") && (major === undefined || major === "0")) {
        const nums = g("GNU.sparse.map")!.toString("latin1").split(",");
        if (nums.length % 2 !== 0 || nums.length / 2 > MAX_SPARSE_PIECES) throw new CfsError("tar: bad GNU.sparse.map");
        const map: Array<[number, number]> = [];
        for (let i = 0; i < nums.length; i += 2) map.push([paxNumber(Buffer.from(nums[i]!), "sparse offset"), paxNumber(Buffer.from(nums[i + 1]!), "sparse length")]);
        checkSparseMap(map, e.size, e.dataSize);
        e.sparse = map;
      } else {
        throw new CfsError(`tar: GNU sparse format ${major ?? "0"}.${minor ?? "0"} is not supported`);
      }
    }
  }

  /** Old GNU sparse: 4 map entries in the header, then extension blocks of 21. */
  private async oldGnuSparse(e: TarEntry, h: Buffer): Promise<void> {
    const map: Array<[number, number]> = [];
    const take = (b: Buffer, at: number, n: number) => {
      for (let i = 0; i < n; i++) {
        const o = b.subarray(at + i * 24, at + i * 24 + 12);
        if (o[0] === 0) return;
        map.push([num(o, "sparse offset"), num(b.subarray(at + i * 24 + 12, at + i * 24 + 24), "sparse length")]);
      }
    };
    take(h, 386, 4);
    let extended = h[482] !== 0;
    e.size = num(h.subarray(483, 495), "sparse real size");
    while (extended) {
      const x = await this.block();
      if (!x) throw new CfsError("tar: archive truncated in a sparse map");
      take(x, 0, 21);
      if (map.length > MAX_SPARSE_PIECES) throw new CfsError("tar: sparse map too large");
      extended = x[504] !== 0;
    }
    checkSparseMap(map, e.size, e.dataSize);
    e.sparse = map;
  }

  /** PAX sparse 1.0: the map is decimal lines at the start of the data area, padded to a block. */
  private async pax1SparseMap(e: TarEntry): Promise<void> {
    let text = "";
    let consumed = 0;
    const line = async (): Promise<number> => {
      for (;;) {
        const nl = text.indexOf("\n");
        if (nl >= 0) {
          const s = text.slice(0, nl);
          text = text.slice(nl + 1);
          if (!/^[0-9]{1,20}$/.test(s)) throw new CfsError("tar: bad sparse map");
          const v = Number(s);
          if (!Number.isSafeInteger(v)) throw new CfsError("tar: bad sparse map");
          return v;
        }
        if (consumed + 512 > e.dataSize || consumed >= MAX_META) throw new CfsError("tar: bad sparse map");
        const b = await this.r.read(512);
        if (b.length < 512) throw new CfsError("tar: archive truncated in a sparse map");
        consumed += 512;
        text += b.toString("latin1");
      }
    };
    const n = await line();
    if (n > MAX_SPARSE_PIECES) throw new CfsError("tar: sparse map too large");
    const map: Array<[number, number]> = [];
    for (let i = 0; i < n; i++) map.push([await line(), await line()]);
    e.dataSize -= consumed;
    this.remaining = e.dataSize;
    checkSparseMap(map, e.size, e.dataSize);
    e.sparse = map;
  }

  /**
   * The current entry's stored data in pieces. `silent`: these bytes do not
   * go through the tap (they become an external object); the padding does.
   */
  async *content(silent = false): AsyncGenerator<Buffer> {
    while (this.remaining > 0) {
      const b = await this.r.readSome(Math.min(this.remaining, 1 << 20), silent);
      if (b.length === 0) throw new CfsError("tar: archive truncated inside a file");
      this.remaining -= b.length;
      yield b;
    }
    // The last member of an `umoci insert` layer may lack its padding.
    if (this.padding > 0) await this.r.read(this.padding);
    this.padding = 0;
  }

  private async skipContent(): Promise<void> {
    for await (const _ of this.content()) void _;
  }

  /** After the end: read (and tap) whatever follows the end-of-archive block. */
  async drain(): Promise<void> {
    for (;;) {
      const b = await this.r.readSome(1 << 20);
      if (b.length === 0) return;
    }
  }
}

/** A sparse file's contents: the stored pieces placed at their offsets, zeros between. */
export async function* expandSparse(map: Array<[number, number]>, realSize: number, stored: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const zeros = Buffer.alloc(1 << 16);
  const holes = function* (n: number) {
    while (n > 0) {
      const k = Math.min(n, zeros.length);
      yield zeros.subarray(0, k);
      n -= k;
    }
  };
  let pos = 0;
  let piece = 0;
  let left = map.length ? map[0]![1] : 0;
  if (map.length) yield* holes(map[0]![0]);
  if (map.length) pos = map[0]![0];
  for await (let b of stored) {
    while (b.length > 0) {
      while (left === 0) {
        piece++;
        if (piece >= map.length) throw new CfsError("tar: sparse data longer than its map");
        yield* holes(map[piece]![0] - pos);
        pos = map[piece]![0];
        left = map[piece]![1];
      }
      const k = Math.min(left, b.length);
      yield b.subarray(0, k);
      b = b.subarray(k);
      left -= k;
      pos += k;
    }
  }
  // trailing empty pieces and the final hole
  while (piece + 1 < map.length) {
    piece++;
    yield* holes(map[piece]![0] - pos);
    pos = map[piece]![0];
    if (map[piece]![1] !== 0) throw new CfsError("tar: sparse data shorter than its map");
  }
  yield* holes(realSize - pos);
}
