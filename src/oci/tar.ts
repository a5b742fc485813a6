/**
 * A streaming tar reader: ustar, POSIX PAX ('x' per entry; 'g' global
 * headers are skipped), GNU long names and link targets ('L', 'K') and
 * base-256 numbers. Memory is one block plus the member being read in
 * pieces, whatever the archive size. An archive that ends at a member
 * boundary without its end-of-archive blocks is accepted (`umoci insert`
 * writes such layers); a member cut short is an error. GNU sparse members
 * are refused.
 *
 * cfsctl reads tar itself rather than through tar-stream: giving layers back
 * bit for bit needs each member's raw offsets, which tar-stream hides.
 */
import { CfsError } from "../util/errors.js";

export interface TarEntry {
  /** Path as stored (PAX path > GNU long name > ustar prefix/name). */
  path: Buffer;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Whole seconds (PAX fractions are dropped toward minus infinity). */
  mtime: bigint;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
  xattrs: Array<{ key: Buffer; value: Buffer }>;
}

/** Pulls exact byte counts out of an async stream of chunks. */
class ByteReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private done = false;
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(n: number): Promise<boolean> {
    while (this.have < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else if (r.value.length > 0) {
        this.chunks.push(r.value);
        this.have += r.value.length;
      }
    }
    return this.have >= n;
  }

  /** Exactly n bytes, or fewer at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const take = Math.min(n, this.have);
    const joined = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = joined.subarray(0, take);
    const rest = joined.subarray(take);
    this.chunks = rest.length ? [rest] : [];
    this.have = rest.length;
    return out;
  }

  /** Up to n bytes (at least one unless at the end), for streaming contents. */
  async readSome(n: number): Promise<Buffer> {
    if (this.have === 0) await this.fill(1);
    if (this.have === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length <= n) {
      this.chunks.shift();
      this.have -= first.length;
      return first;
    }
    this.chunks[0] = first.subarray(n);
    this.have -= n;
    return first.subarray(0, n);
  }
}

function cstring(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

function num(field: Buffer, what: string): number {
  if (field[0]! & 0x80) {
    // base-256: big-endian two's complement with the top bit of the first byte set
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
  return parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  const stored = cstring(h.subarray(148, 156)).toString("latin1").trim();
  return /^[0-7]+$/.test(stored) && parseInt(stored, 8) === sum;
}

/** PAX records: "LEN key=value\n", values raw bytes. */
function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let p = 0;
  while (p < data.length) {
    const sp = data.indexOf(0x20, p);
    if (sp < 0) throw new CfsError("tar: malformed PAX header");
    const len = Number(data.toString("latin1", p, sp));
    if (!Number.isInteger(len) || len <= sp - p + 1 || p + len > data.length || data[p + len - 1] !== 0x0a) {
      throw new CfsError("tar: malformed PAX record");
    }
    const rec = data.subarray(sp + 1, p + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new CfsError("tar: malformed PAX record");
    out.set(rec.toString("utf8", 0, eq), rec.subarray(eq + 1));
    p += len;
  }
  return out;
}

const MAX_META = 1 << 20;

export class TarReader {
  private readonly r: ByteReader;
  private remaining = 0;
  private padding = 0;
  constructor(chunks: AsyncIterable<Buffer>) {
    this.r = new ByteReader(chunks[Symbol.asyncIterator]());
  }

  private async block(): Promise<Buffer | null> {
    const b = await this.r.read(512);
    if (b.length === 0) return null;
    if (b.length < 512) throw new CfsError("tar: archive truncated inside a header");
    return b;
  }

  private async data(size: number): Promise<Buffer> {
    if (size > MAX_META) throw new CfsError(`tar: metadata member of ${size} bytes`);
    const d = await this.r.read(size);
    if (d.length < size) throw new CfsError("tar: archive truncated");
    await this.r.read((512 - (size % 512)) % 512);
    return d;
  }

  /** The next entry, or null at the end of the archive. Its contents must be read (or skipped) before the next call. */
  async next(): Promise<TarEntry | null> {
    if (this.remaining > 0 || this.padding > 0) await this.skipContent();
    let pax: Map<string, Buffer> | null = null;
    let longName: Buffer | null = null;
    let longLink: Buffer | null = null;
    for (;;) {
      const h = await this.block();
      if (!h) {
        if (pax || longName || longLink) throw new CfsError("tar: archive truncated after an extended header");
        return null;
      }
      if (h.every((b) => b === 0)) return null; // end-of-archive
      if (!checksumOk(h)) throw new CfsError("tar: header checksum mismatch (not a tar archive, or corrupt)");
      const type = h[156] === 0 ? "0" : String.fromCharCode(h[156]!);
      const size = num(h.subarray(124, 136), "size");
      if (size < 0) throw new CfsError("tar: negative size");
      if (type === "x") {
        pax = parsePax(await this.data(size));
        continue;
      }
      if (type === "g") {
        await this.data(size);
        continue;
      }
      if (type === "L") {
        longName = cstring(await this.data(size));
        continue;
      }
      if (type === "K") {
        longLink = cstring(await this.data(size));
        continue;
      }
      if (type === "S" || (pax && [...pax.keys()].some((k) => k.startsWith("GNU.sparse.")))) {
        throw new CfsError("tar: GNU sparse files are not supported");
      }
      const ustar = h.toString("latin1", 257, 263) === "ustar\0";
      let name = cstring(h.subarray(0, 100));
      const prefix = ustar ? cstring(h.subarray(345, 500)) : Buffer.alloc(0);
      if (prefix.length > 0) name = Buffer.concat([prefix, Buffer.from("/"), name]);
      if (longName) name = longName;
      let linkname = longLink ?? cstring(h.subarray(157, 257));
      const e: TarEntry = {
        path: name,
        type,
        mode: num(h.subarray(100, 108), "mode"),
        uid: num(h.subarray(108, 116), "uid"),
        gid: num(h.subarray(116, 124), "gid"),
        size,
        mtime: BigInt(num(h.subarray(136, 148), "mtime")),
        linkname,
        devmajor: num(h.subarray(329, 337), "devmajor"),
        devminor: num(h.subarray(337, 345), "devminor"),
        xattrs: [],
      };
      if (pax) {
        const g = (k: string) => pax!.get(k);
        if (g("path")) e.path = g("path")!;
        if (g("linkpath")) linkname = e.linkname = g("linkpath")!;
        if (g("size")) e.size = Number(g("size")!.toString("latin1"));
        if (g("uid")) e.uid = Number(g("uid")!.toString("latin1"));
        if (g("gid")) e.gid = Number(g("gid")!.toString("latin1"));
        const mt = g("mtime");
        if (mt) {
          const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(mt.toString("latin1"));
          if (!m) throw new CfsError("tar: bad PAX mtime");
          let sec = BigInt(m[2]!);
          const frac = m[3] !== undefined && /[1-9]/.test(m[3]);
          if (m[1]) sec = -sec - (frac ? 1n : 0n);
          e.mtime = sec;
        }
        for (const [k, v] of pax) {
          if (k.startsWith("SCHILY.xattr.")) e.xattrs.push({ key: Buffer.from(k.slice(13), "utf8"), value: v });
          else if (k.startsWith("LIBARCHIVE.xattr.")) {
            e.xattrs.push({ key: Buffer.from(decodeURIComponent(k.slice(17)), "utf8"), value: Buffer.from(v.toString("latin1"), "base64") });
          }
        }
        if (!Number.isSafeInteger(e.size) || e.size < 0) throw new CfsError("tar: bad PAX size");
      }
      const hasData = type === "0" || type === "7";
      this.remaining = hasData ? e.size : 0;
      this.padding = hasData ? (512 - (e.size % 512)) % 512 : 0;
      if (!hasData && e.size > 0 && type !== "1" && type !== "2" && type !== "5") {
        // Other types carry no data we use; skip it.
        this.remaining = e.size;
        this.padding = (512 - (e.size % 512)) % 512;
      }
      return e;
    }
  }

  /** Read the current entry's contents in pieces. */
  async *content(): AsyncGenerator<Buffer> {
    while (this.remaining > 0) {
      const b = await this.r.readSome(Math.min(this.remaining, 1 << 20));
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
}
