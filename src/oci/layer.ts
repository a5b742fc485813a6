/**
 * Reading one layer blob: decompression chosen from the first bytes (gzip,
 * zstd or plain tar), sha256 of the stored and of the uncompressed bytes
 * (checked against the descriptor and the config's diff_id), and the split
 * of the tar into inline bytes and external objects: the data of every
 * regular, non-sparse member over 64 bytes becomes an object (composefs-rs
 * splits the same way), everything else stays inline, so `cat` gives the
 * uncompressed layer back bit for bit.
 */
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import zlib from "node:zlib";
import { FsVerityHasher, type VerityAlgorithm } from "../fsverity/digest.js";
import { CfsError, describeSystemError } from "../util/errors.js";
import { zstdDecompress } from "../util/zstd.js";
import { loadCfsNative } from "../util/native.js";
import { StreamSha256 } from "../util/stream-sha256.js";
import type { LayerBlob } from "./source.js";
import { TarReader, expandSparse, type ExternalRef, type TarEntry } from "./tar.js";
import { makeDirs } from "../util/make-dirs.js";
import { onInterruptStop } from "../util/interrupt.js";

export const INLINE_MAX = 64;
/** Whether files created 0644 come out with fewer bits (then they are chmod-ed). */
const UMASK_STRIPS_0644 = (process.umask() & 0o644) !== 0;

/** The native addon writes buffered contents (open, write, writeback, close in a libuv thread). */
const native = loadCfsNative();
// Interrupted, the background writes create no more temporary objects (the repository removes those made).
if (native !== null) onInterruptStop(() => native.stopWrites());
/** Contents up to this size are hashed before they are written (and written in the background). */
const BUFFERED_MAX = 4 << 20;
/** Bytes of stream chunks that background writes may hold at most. */
const IN_FLIGHT_BYTES = 64 << 20;
/** A native write job takes this many files, or files of this many bytes, at most (it may go over by one file). */
const BATCH_FILES = 32;
const BATCH_BYTES = 1 << 20;

/** Where the split layer goes (a split stream writer in the repository). */
export interface LayerSink {
  inline(b: Buffer): Promise<void>;
  external(digest: Buffer, size: number): Promise<void>;
}

/** A file's contents as the image needs them. */
export type EntryData = { inline: Buffer } | { digest: Buffer };

/** Objects written to temporary files while reading, to be named once the import succeeds. */
export interface PendingObject {
  digest: Buffer;
  tmp: string;
}

export interface ObjectStoreOptions {
  /** The repository's objects/ directory (temporary files go there). */
  dir: string;
  algorithm: VerityAlgorithm;
  hasObject(digest: Buffer): boolean;
  tmpName(): string;
  /** Bytes of stream chunks queued writes may hold (default 64 MiB; tests make it small). */
  heldBytesMax?: number;
}

/** Bytes of a stream that may wait to be hashed before its reader waits for the hashing. */
const HASH_BACKLOG = 32 << 20;

async function* hashing(src: AsyncIterable<Buffer>, h: StreamSha256): AsyncGenerator<Buffer> {
  for await (const b of src) {
    await h.updateBounded(b, HASH_BACKLOG);
    yield b;
  }
}

/** A CfsError's message with `label` in front, unless it names the layer already. */
function named(label: string, e: unknown): unknown {
  if (!(e instanceof CfsError) || e.message.startsWith(`${label}: `)) return e;
  return new CfsError(`${label}: ${e.message}`);
}

/** The uncompressed bytes of a blob, decompressor chosen from its first bytes. */
async function* decompressed(raw: AsyncIterable<Buffer>, onPlain: () => void): AsyncGenerator<Buffer> {
  const it = raw[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let have = 0;
  while (have < 4) {
    const r = await it.next();
    if (r.done) break;
    head.push(r.value);
    have += r.value.length;
  }
  const first = Buffer.concat(head);
  const rest = async function* () {
    if (first.length) yield first;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  };
  if (first.length >= 2 && first[0] === 0x1f && first[1] === 0x8b) {
    const gunzip = zlib.createGunzip({ chunkSize: 1 << 20 });
    const src = Readable.from(rest());
    src.on("error", (e) => gunzip.destroy(e));
    src.pipe(gunzip);
    try {
      for await (const b of gunzip) yield b as Buffer;
    } catch (e) {
      if (e instanceof CfsError) throw e;
      // The caller names the layer.
      throw new CfsError(`gzip: ${(e as Error).message}`);
    }
    return;
  }
  // A zstd frame, or a skippable frame (magic 0x184d2a50..5f) that zstd passes over.
  if (first.length >= 4 && (first.readUInt32LE(0) === 0xfd2fb528 || (first.readUInt32LE(0) & 0xfffffff0) === 0x184d2a50)) {
    yield* zstdDecompress(rest(), "zstd");
    return;
  }
  onPlain();
  yield* rest();
}

export interface LayerDigests {
  /** sha256 of the blob as stored. */
  blob: string;
  /** sha256 of the uncompressed tar (the diff_id). */
  diffId: string;
  /** Bytes of the uncompressed tar. */
  size: number;
}

/**
 * Reads a layer, calling `onEntry` for every member with its contents
 * resolved. Large contents are written once, to a temporary object file,
 * while they are hashed.
 */
export class LayerReader {
  /** Objects this layer (and earlier ones) wrote, by hex digest. */
  readonly pending = new Map<string, PendingObject>();

  constructor(private readonly store: ObjectStoreOptions) {}

  async read(blob: LayerBlob, sink: LayerSink | null, onEntry: (e: TarEntry, data: EntryData | null) => void): Promise<LayerDigests> {
    const blobHash = new StreamSha256();
    const diffHash = new StreamSha256();
    let raw: Readable;
    try {
      raw = blob.open();
    } catch (e) {
      throw new CfsError(`${blob.label}: ${(e as Error).message}`);
    }
    const rawChunks = hashing(raw as AsyncIterable<Buffer>, blobHash);
    // An uncompressed blob is its own tar: its digest is the diff_id, hashed once.
    let isPlain = false;
    const plainBytes = decompressed(rawChunks, () => (isPlain = true));
    const plain = (async function* () {
      for await (const b of plainBytes) {
        if (!isPlain) await diffHash.updateBounded(b, HASH_BACKLOG);
        yield b;
      }
    })();
    let tapped: Buffer[] = [];
    const tar = new TarReader(plain, sink ? (b) => tapped.push(b) : undefined);
    const flush = async () => {
      if (!sink || tapped.length === 0) return;
      const parts = tapped;
      tapped = [];
      for (const p of parts) await sink.inline(p);
    };
    try {
      await this.entries(tar, flush, async (e) => {
        const digest = await this.storeContent(tar.content(true), e.size);
        if (sink) await sink.external(digest, e.dataSize);
        return digest;
      }, onEntry);
    } catch (e) {
      raw.destroy();
      throw named(blob.label, e);
    }
    const blobDigest = `sha256:${(await blobHash.digest()).toString("hex")}`;
    const diffId = isPlain ? blobDigest : `sha256:${(await diffHash.digest()).toString("hex")}`;
    return { blob: blobDigest, diffId, size: tar.offset };
  }

  /**
   * A layer already stored as a split stream: its entries again, without
   * reading the blob. Large contents are the stream's object references.
   */
  async readStored(chunks: AsyncIterable<{ inline: Buffer } | { external: Buffer }>, label: string, onEntry: (e: TarEntry, data: EntryData | null) => void): Promise<void> {
    const source = async function* (): AsyncGenerator<Buffer | ExternalRef> {
      for await (const c of chunks) yield "inline" in c ? c.inline : c;
    };
    const tar = new TarReader(source());
    try {
      await this.entries(tar, async () => undefined, async () => (await tar.externalContent()).external, onEntry);
    } catch (e) {
      throw named(label, e);
    }
  }

  /** Every member of a layer; `large` gives the digest of a regular member over 64 bytes. */
  private async entries(
    tar: TarReader,
    flush: () => Promise<void>,
    large: (e: TarEntry) => Promise<Buffer>,
    onEntry: (e: TarEntry, data: EntryData | null) => void,
  ): Promise<void> {
    for (;;) {
      const e = await tar.next();
      await flush();
      if (!e) break;
      const regular = e.type === "0" || e.type === "7";
      if (regular && !e.sparse && e.dataSize > INLINE_MAX) {
        const digest = await large(e);
        await flush(); // the padding after the contents
        onEntry(e, { digest });
        continue;
      }
      if (!regular) {
        for await (const _ of tar.content()) void _;
        await flush();
        onEntry(e, null);
        continue;
      }
      // Small contents, or a sparse file (its stored pieces stay inline).
      const stored = this.tapFlushing(tar.content(), flush);
      const content = e.sparse ? expandSparse(e.sparse, e.size, stored) : stored;
      if (e.size > INLINE_MAX) {
        onEntry(e, { digest: await this.storeContent(content, e.size) });
      } else {
        const parts: Buffer[] = [];
        for await (const b of content) parts.push(b);
        onEntry(e, { inline: Buffer.concat(parts) });
      }
      await flush();
    }
    await tar.drain();
    await flush();
  }

  private async *tapFlushing(src: AsyncIterable<Buffer>, flush: () => Promise<void>): AsyncGenerator<Buffer> {
    for await (const b of src) {
      yield b;
      await flush();
    }
  }

  /**
   * Hash contents and keep them as a temporary object file; the digest
   * names it later. Contents up to BUFFERED_MAX are hashed first and written
   * afterwards, in the background (libuv's threads create and write files
   * while the main thread reads on), and not at all when the object exists;
   * larger contents are written while they stream by. The pieces are the
   * stream's own chunks (a stream never reuses a chunk it handed out), held
   * until written rather than copied.
   */
  private async storeContent(content: AsyncIterable<Buffer>, size: number): Promise<Buffer> {
    const h = new FsVerityHasher(this.store.algorithm);
    if (size <= BUFFERED_MAX) {
      const parts: Buffer[] = [];
      let got = 0;
      for await (const b of content) {
        h.update(b);
        parts.push(b);
        got += b.length;
      }
      if (got !== size) throw new CfsError(`member contents of ${got} bytes, header says ${size}`);
      const digest = h.digest();
      const hex = digest.toString("hex");
      if (!this.pending.has(hex) && !this.store.hasObject(digest)) {
        // Beside its final name (objects/XX/): naming it later touches one directory.
        const sub = path.join(this.store.dir, hex.slice(0, 2));
        // The native writer makes a missing objects/XX itself, off this thread.
        if (native === null && !this.dirs.has(sub)) {
          if (makeDirs(sub, 0o755) !== undefined) this.madeDirs.push(sub);
          this.dirs.add(sub);
        }
        const tmp = path.join(sub, this.store.tmpName());
        this.pending.set(hex, { digest, tmp });
        await this.background(tmp, parts);
      }
      return digest;
    }
    const tmp = path.join(this.store.dir, this.store.tmpName());
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
    if (UMASK_STRIPS_0644) fs.fchmodSync(fd, 0o644); // objects are world-readable whatever the umask
    let written = 0;
    try {
      for await (const b of content) {
        h.update(b);
        let off = 0;
        while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off);
        written += b.length;
      }
      if (written !== size) throw new CfsError(`member contents of ${written} bytes, header says ${size}`);
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    fs.closeSync(fd);
    const digest = h.digest();
    const hex = digest.toString("hex");
    if (this.pending.has(hex) || this.store.hasObject(digest)) fs.rmSync(tmp, { force: true });
    else this.pending.set(hex, { digest, tmp });
    return digest;
  }

  private readonly dirs = new Set<string>();
  /** objects/XX directories this import made (removed again, when empty, after a failure). */
  private readonly madeDirs: string[] = [];
  private inFlight = new Set<Promise<void>>();
  /**
   * The chunks queued writes hold (a piece keeps its whole chunk alive),
   * with how many writes hold each, and their bytes: the bound is on this
   * memory, not on the bytes to write.
   */
  private readonly held = new Map<ArrayBufferLike, number>();
  private heldBytes = 0;
  private writeError: unknown = null;

  /** The chunks behind `parts` that no queued write holds yet, and their bytes. */
  private newChunks(parts: Buffer[]): { chunks: ArrayBufferLike[]; bytes: number } {
    const chunks: ArrayBufferLike[] = [];
    let bytes = 0;
    for (const p of parts) {
      const c = p.buffer;
      if (chunks.includes(c)) continue;
      chunks.push(c);
      if (!this.held.has(c)) bytes += c.byteLength;
    }
    return { chunks, bytes };
  }

  /** Files gathered for the next native job: many small files cost one libuv thread wake-up. */
  private batch: { tmps: string[]; parts: Buffer[]; counts: number[]; chunks: ArrayBufferLike[][]; bytes: number } | null = null;

  /** Write a file in the background, keeping the memory queued writes hold bounded. */
  private async background(tmp: string, parts: Buffer[]): Promise<void> {
    let need = this.newChunks(parts);
    while (this.heldBytes + need.bytes > (this.store.heldBytesMax ?? IN_FLIGHT_BYTES) && (this.inFlight.size > 0 || this.batch !== null)) {
      if (this.batch !== null) this.submitBatch();
      else await Promise.race(this.inFlight);
      need = this.newChunks(parts);
    }
    if (this.writeError) throw this.writeError;
    const { chunks } = need;
    for (const c of chunks) {
      const n = this.held.get(c) ?? 0;
      if (n === 0) this.heldBytes += c.byteLength;
      this.held.set(c, n + 1);
    }
    if (native !== null) {
      const b = (this.batch ??= { tmps: [], parts: [], counts: [], chunks: [], bytes: 0 });
      b.tmps.push(tmp);
      for (const p of parts) {
        b.parts.push(p);
        b.bytes += p.length;
      }
      b.counts.push(parts.length);
      b.chunks.push(chunks);
      if (b.tmps.length >= BATCH_FILES || b.bytes >= BATCH_BYTES) this.submitBatch();
      return;
    }
    this.track(
      (async () => {
        const fh = await fs.promises.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
        try {
          if (UMASK_STRIPS_0644) await fh.chmod(0o644); // objects are world-readable whatever the umask
          await fh.writev(parts);
        } finally {
          await fh.close();
        }
      })().catch((e) => {
        this.writeError ??= describeSystemError(e, `write ${tmp}`);
      }),
      [chunks],
    );
  }

  /** Hand the gathered files to the addon (one job in a libuv thread). */
  private submitBatch(): void {
    const b = this.batch!;
    this.batch = null;
    this.track(
      native!.writeFiles(b.tmps, b.parts, b.counts, UMASK_STRIPS_0644).then(
        (results) =>
          results.forEach((r, i) => {
            if (r === "made") this.madeDirs.push(path.dirname(b.tmps[i]!));
            else if (r !== null) {
              const [code, syscall] = r.split(" ");
              this.writeError ??= describeSystemError(Object.assign(new Error(r), { code, syscall }), `write ${b.tmps[i]}`);
            }
          }),
        (e) => {
          this.writeError ??= describeSystemError(e, `write ${b.tmps[0]}`);
        },
      ),
      b.chunks,
    );
  }

  /** A write job in flight; when it ends, the chunks its files held are let go. */
  private track(done: Promise<void>, held: ArrayBufferLike[][]): void {
    const job = done.finally(() => {
      for (const chunks of held) {
        for (const c of chunks) {
          const n = this.held.get(c)! - 1;
          if (n > 0) this.held.set(c, n);
          else {
            this.held.delete(c);
            this.heldBytes -= c.byteLength;
          }
        }
      }
      this.inFlight.delete(job);
    });
    this.inFlight.add(job);
  }

  /** Wait for every background write; throws the first failure. */
  async settle(): Promise<void> {
    if (this.batch !== null) this.submitBatch();
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
    if (this.writeError) throw this.writeError;
  }

  /** Remove every temporary file (after a failure; background writes must be settled first). */
  discard(): void {
    for (const p of this.pending.values()) fs.rmSync(p.tmp, { force: true });
    this.pending.clear();
    for (const d of this.madeDirs.splice(0)) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* not empty: another writer uses it */
      }
    }
  }
}
