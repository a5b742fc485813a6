/**
 * Split streams, the composefs-rs format (crates/composefs/src/splitstream.rs,
 * splitstream_format.rs): a file stored as inline bytes plus references to
 * objects, so a layer tarball is kept once (its file contents are the same
 * objects the image uses) and can be given back bit for bit.
 *
 * All integers little-endian.
 *   header (32): "SplitStream" (11) | version u8 = 0 | flags u16 = 0 |
 *                algorithm u8 (1 sha256, 2 sha512) | lg_blocksize u8 = 12 |
 *                info range [start, end) u64 × 2
 *   info (96):   ranges (u64 × 2 each) of stream_refs, object_refs, stream,
 *                named_refs; content_type u64; stream_size u64 (total bytes)
 *   stream_refs, object_refs: flat arrays of digests
 *   named_refs:  zstd of "INDEX:NAME\0" records (INDEX into stream_refs)
 *   stream:      zstd of chunks, each an i64: -N then N inline bytes, or
 *                K >= 0, the object object_refs[K]
 * Sections are written in the order header, info, stream_refs, object_refs,
 * named_refs, stream, as composefs-rs writes them.
 */
import fs from "node:fs";
import path from "node:path";
import { FsVerityHasher, type VerityAlgorithm } from "../fsverity/digest.js";
import { CfsError, describeSystemError } from "../util/errors.js";
import { ByteReader } from "../util/byte-reader.js";
import { ZstdWriter, zstdDecompress, zstdDecompressSync, zstdStoredFrame } from "../util/zstd.js";

export const SPLITSTREAM_MAGIC = Buffer.from("SplitStream", "latin1");
const HEADER_SIZE = 32;
const INFO_SIZE = 96;
const LG_BLOCKSIZE = 12;

/** composefs-rs content types: 8 ASCII bytes read as a little-endian u64. */
export const CONTENT_TYPE_LAYER = Buffer.from("ocilayer", "latin1");
export const CONTENT_TYPE_CONFIG = Buffer.from("ociconfg", "latin1");

const ALGORITHM_ID: Record<VerityAlgorithm, number> = { sha256: 1, sha512: 2 };
const DIGEST_SIZE: Record<VerityAlgorithm, number> = { sha256: 32, sha512: 64 };

/** Inline bytes are flushed as one chunk at this size (bounded memory). */
const INLINE_FLUSH = 1 << 20;
/** Compressor input is written in pieces of about this size. */
const OUT_BATCH = 256 << 10;

function i64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(BigInt(n));
  return b;
}

function writeAll(fd: number, b: Uint8Array): void {
  let off = 0;
  while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off);
}

/**
 * Writes one split stream to a temporary file in `dir` (the repository's
 * objects/). finish() gives the file and its fs-verity digest; naming it is
 * the caller's job, after the objects it refers to are durable.
 */
export class SplitStreamWriter {
  private readonly streamTmp: string;
  private readonly streamFd: number;
  private readonly zstd: ZstdWriter;
  private inline: Buffer[] = [];
  private inlineSize = 0;
  private readonly objectRefs: Buffer[] = [];
  private readonly objectIndex = new Map<string, number>();
  private readonly streamRefs: Buffer[] = [];
  private readonly namedRefs = new Map<string, number>();
  private total = 0;
  private closed = false;

  constructor(
    private readonly dir: string,
    private readonly algorithm: VerityAlgorithm,
    private readonly contentType: Buffer,
    private readonly tmpName: () => string,
  ) {
    this.streamTmp = path.join(dir, tmpName());
    try {
      this.streamFd = fs.openSync(this.streamTmp, "wx", 0o600);
    } catch (e) {
      throw describeSystemError(e, `create ${this.streamTmp}`);
    }
    this.zstd = new ZstdWriter(this.streamFd, "split stream");
  }

  /** Size of everything written so far (the size of the original file). */
  get size(): number {
    return this.total;
  }

  async addInline(b: Buffer): Promise<void> {
    if (b.length === 0) return;
    this.inline.push(Buffer.from(b));
    this.inlineSize += b.length;
    this.total += b.length;
    if (this.inlineSize >= INLINE_FLUSH) await this.flush();
  }

  async addExternal(digest: Buffer, size: number): Promise<void> {
    await this.flush();
    const key = digest.toString("hex");
    let idx = this.objectIndex.get(key);
    if (idx === undefined) {
      idx = this.objectRefs.length;
      this.objectRefs.push(Buffer.from(digest));
      this.objectIndex.set(key, idx);
    }
    this.total += size;
    await this.emit(i64(idx));
  }

  /** Bytes for the compressor, handed over in large pieces (one pipe write each). */
  private out: Buffer[] = [];
  private outSize = 0;
  private async emit(b: Buffer): Promise<void> {
    this.out.push(b);
    this.outSize += b.length;
    if (this.outSize >= OUT_BATCH) await this.drainOut();
  }
  private async drainOut(): Promise<void> {
    if (this.outSize === 0) return;
    const data = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out);
    this.out = [];
    this.outSize = 0;
    await this.zstd.write(data);
  }

  /** A named reference to another split stream (keeps it alive for gc). */
  addNamedStreamRef(name: string, digest: Buffer): void {
    let idx = this.streamRefs.findIndex((d) => d.equals(digest));
    if (idx < 0) {
      idx = this.streamRefs.length;
      this.streamRefs.push(Buffer.from(digest));
    }
    this.namedRefs.set(name, idx);
  }

  private async flush(): Promise<void> {
    if (this.inlineSize === 0) return;
    const data = this.inline.length === 1 ? this.inline[0]! : Buffer.concat(this.inline);
    this.inline = [];
    this.inlineSize = 0;
    await this.emit(i64(-data.length));
    await this.emit(data);
  }

  /** The complete split stream as a temporary file, and its fs-verity digest. */
  async finish(): Promise<{ tmp: string; digest: Buffer }> {
    await this.flush();
    await this.drainOut();
    await this.zstd.finish();
    fs.closeSync(this.streamFd);
    this.closed = true;
    const streamLen = fs.statSync(this.streamTmp).size;
    const names = [...this.namedRefs.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const named = zstdStoredFrame(Buffer.from(names.map(([n, i]) => `${i}:${n}\0`).join(""), "utf8"));
    const streamRefs = Buffer.concat(this.streamRefs);
    const objectRefs = Buffer.concat(this.objectRefs);
    const infoStart = HEADER_SIZE;
    const srStart = infoStart + INFO_SIZE;
    const orStart = srStart + streamRefs.length;
    const nrStart = orStart + objectRefs.length;
    const stStart = nrStart + named.length;
    const head = Buffer.alloc(stStart);
    SPLITSTREAM_MAGIC.copy(head, 0);
    head[11] = 0;
    head.writeUInt16LE(0, 12);
    head[14] = ALGORITHM_ID[this.algorithm];
    head[15] = LG_BLOCKSIZE;
    head.writeBigUInt64LE(BigInt(infoStart), 16);
    head.writeBigUInt64LE(BigInt(srStart), 24);
    const ranges = [
      [srStart, orStart],
      [orStart, nrStart],
      [stStart, stStart + streamLen],
      [nrStart, stStart],
    ];
    ranges.forEach(([s, e], i) => {
      head.writeBigUInt64LE(BigInt(s!), infoStart + i * 16);
      head.writeBigUInt64LE(BigInt(e!), infoStart + i * 16 + 8);
    });
    this.contentType.copy(head, infoStart + 64);
    head.writeBigUInt64LE(BigInt(this.total), infoStart + 72);
    streamRefs.copy(head, srStart);
    objectRefs.copy(head, orStart);
    named.copy(head, nrStart);

    const tmp = path.join(this.dir, this.tmpName());
    const h = new FsVerityHasher(this.algorithm);
    const out = fs.openSync(tmp, "wx", 0o644);
    fs.fchmodSync(out, 0o644); // whatever the umask: objects are world-readable
    try {
      writeAll(out, head);
      h.update(head);
      const src = fs.openSync(this.streamTmp, "r");
      try {
        const buf = Buffer.allocUnsafe(1 << 20);
        for (;;) {
          const n = fs.readSync(src, buf, 0, buf.length, null);
          if (n === 0) break;
          writeAll(out, buf.subarray(0, n));
          h.update(buf.subarray(0, n));
        }
      } finally {
        fs.closeSync(src);
      }
    } catch (e) {
      fs.closeSync(out);
      fs.rmSync(tmp, { force: true });
      throw e;
    } finally {
      fs.rmSync(this.streamTmp, { force: true });
    }
    fs.closeSync(out);
    return { tmp, digest: h.digest() };
  }

  /** Throw the work away (after a failure). */
  abort(): void {
    this.zstd.abort();
    if (!this.closed) {
      try {
        fs.closeSync(this.streamFd);
      } catch {
        /* already closed */
      }
      this.closed = true;
    }
    fs.rmSync(this.streamTmp, { force: true });
  }
}

export type Chunk = { inline: Buffer } | { external: Buffer };

export interface SplitStreamFile {
  contentType: Buffer;
  streamSize: bigint;
  objectRefs: Buffer[];
  streamRefs: Buffer[];
  namedRefs: Map<string, Buffer>;
  /** The chunks in order. */
  chunks(): AsyncGenerator<Chunk>;
}

/** Open a split stream; every offset and count in it is checked before use. */
export function openSplitStream(file: string, algorithm: VerityAlgorithm, what: string): SplitStreamFile {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    throw describeSystemError(e, `open ${what}`);
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    const bad = (why: string) => new CfsError(`${what}: not a valid split stream (${why})`);
    const read = (start: number, end: number): Buffer => {
      const b = Buffer.alloc(end - start);
      let off = 0;
      while (off < b.length) {
        const n = fs.readSync(fd, b, off, b.length - off, start + off);
        if (n === 0) throw bad("file truncated");
        off += n;
      }
      return b;
    };
    if (fileSize < HEADER_SIZE) throw bad("too short");
    const h = read(0, HEADER_SIZE);
    if (!h.subarray(0, 11).equals(SPLITSTREAM_MAGIC)) throw bad("no SplitStream magic");
    if (h[11] !== 0) throw bad(`version ${h[11]}`);
    const alg = h[14] === 1 ? "sha256" : h[14] === 2 ? "sha512" : null;
    if (alg === null) throw bad(`algorithm ${h[14]}`);
    if (alg !== algorithm) throw new CfsError(`${what}: a ${alg} split stream in a ${algorithm} repository`);
    if (h[15] !== LG_BLOCKSIZE) throw bad(`block size 2^${h[15]}`);
    const range = (b: Buffer, at: number, name: string): [number, number] => {
      const s = b.readBigUInt64LE(at);
      const e = b.readBigUInt64LE(at + 8);
      if (s > e || e > BigInt(fileSize)) throw bad(`${name} range outside the file`);
      return [Number(s), Number(e)];
    };
    const [is, ie] = range(h, 16, "info");
    if (ie - is < INFO_SIZE) throw bad("info section too short");
    const info = read(is, is + INFO_SIZE);
    const [srs, sre] = range(info, 0, "stream_refs");
    const [ors, ore] = range(info, 16, "object_refs");
    const [sts, ste] = range(info, 32, "stream");
    const [nrs, nre] = range(info, 48, "named_refs");
    const size = DIGEST_SIZE[alg];
    if ((sre - srs) % size || (ore - ors) % size) throw bad("reference array not a whole number of digests");
    const split = (b: Buffer) => Array.from({ length: b.length / size }, (_, i) => b.subarray(i * size, (i + 1) * size));
    const streamRefs = split(read(srs, sre));
    const objectRefs = split(read(ors, ore));
    const namedRefs = new Map<string, Buffer>();
    if (nre > nrs) {
      if (nre - nrs > 16 << 20) throw bad("named_refs section too large");
      const text = zstdDecompressSync(read(nrs, nre), `${what}: zstd`).toString("utf8");
      for (const rec of text.split("\0")) {
        if (rec === "") continue;
        const m = /^([0-9]+):(.*)$/s.exec(rec);
        const ref = m ? streamRefs[Number(m[1])] : undefined;
        if (!m || !ref) throw bad("bad named reference");
        namedRefs.set(m[2]!, ref);
      }
    }
    const contentType = Buffer.from(info.subarray(64, 72));
    const streamSize = info.readBigUInt64LE(72);
    return {
      contentType,
      streamSize,
      objectRefs,
      streamRefs,
      namedRefs,
      chunks: () => readChunks(file, sts, ste, objectRefs, streamSize, bad, what),
    };
  } finally {
    fs.closeSync(fd);
  }
}

async function* readChunks(
  file: string,
  start: number,
  end: number,
  objectRefs: Buffer[],
  streamSize: bigint,
  bad: (why: string) => Error,
  what: string,
): AsyncGenerator<Chunk> {
  if (end === start) return;
  const compressed = fs.createReadStream(file, { start, end: end - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
  const r = new ByteReader(zstdDecompress(compressed, `${what}: zstd`)[Symbol.asyncIterator](), undefined);
  let inlineTotal = 0n;
  for (;;) {
    const head = await r.read(8);
    if (head.length === 0) break;
    if (head.length < 8) throw bad("stream ends inside a chunk header");
    const v = head.readBigInt64LE(0);
    if (v < 0n) {
      const n = -v;
      inlineTotal += n;
      if (inlineTotal > streamSize) throw bad("more inline data than the stream's size");
      let left = Number(n);
      while (left > 0) {
        const piece = await r.readSome(Math.min(left, 1 << 20));
        if (piece.length === 0) throw bad("stream ends inside an inline chunk");
        yield { inline: piece };
        left -= piece.length;
      }
    } else {
      const ref = objectRefs[Number(v)];
      if (v >= BigInt(objectRefs.length) || !ref) throw bad(`object index ${v} out of range`);
      yield { external: ref };
    }
  }
}
