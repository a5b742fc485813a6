/**
 * A pool of worker threads hashing files in parallel with the directory walk:
 * the walk adds files as it finds them, the workers hash while it goes on.
 *
 * A batch travels as three typed arrays whose buffers are transferred, not
 * copied: the paths end to end, where each ends, and (size, inode, mtime)
 * per file as the walk's lstat gave them. Its digests come back the same way,
 * one array of `n × digest length` bytes, so a file costs no object and no
 * message of its own either way.
 */
import fs from "node:fs";
import os from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker, isMainThread } from "node:worker_threads";
import { digestLength, verityAlgorithmId, type VerityAlgorithm } from "../fsverity/digest.js";
import { shareInterruptFlag } from "../util/interrupt.js";
import { loadCfsNative } from "../util/native.js";
import { hashBatch } from "./hash-batch.js";

const native = loadCfsNative();

export interface HashJob {
  id: number;
  path: Buffer;
  size: number;
  ino: string;
  mtimeNs: string;
}

/** A digest, and with a store the temporary file holding a copy (when the object was missing). */
export type HashResult = { id: number; digest: Buffer; tmp?: string } | { id: number; error: string; path: string };

/** What a worker is sent: files `first`..`first + n - 1`. */
export interface HashBatch {
  alg: VerityAlgorithm;
  store: string | null;
  first: number;
  /** The paths' bytes end to end. */
  paths: Uint8Array;
  /** ends[i]: where path i ends in `paths`. */
  ends: Uint32Array;
  /** Per file: size, st_ino and st_mtime in ms, as a plain (non-bigint) fs.Stats gives them. */
  meta: Float64Array;
}

/** What a worker answers: digests end to end; per file an error or a temporary copy, when any. */
export interface HashBatchResult {
  first: number;
  n: number;
  digests: Uint8Array;
  errors: (string | null)[] | null;
  /** The path of each failed file, for messages. */
  errorPaths: (string | null)[] | null;
  tmps: (string | null)[] | null;
}

/** Called once per file, in no particular order: a digest (a view of a shared buffer) or an error. */
export type HashCallback = (id: number, digest: Buffer | null, error: string | null, path: string | null, tmp: string | null) => void;

/** A batch is sent when it holds this many files… */
const BATCH_FILES = 128;
/** …or this many bytes of file data, so a worker is never handed a long tail alone. */
const BATCH_BYTES = 8 << 20;
/** Batches queued at a worker: it never waits for the walk to yield to get the next. */
const DEPTH = 2;
/**
 * Batches handed to libuv per CPU (unless a thread count was asked for).
 * The walk lets finished batches in only every 512 entries, so a thread
 * that finishes must find the next batch already queued in libuv: with one
 * per CPU, only 17k of /usr's 116k files were hashed when its walk ended
 * (the rest after it, 3.8 s in all); with four, 67k (3.3 s). Eight
 * measured no better. Until finish(), the addon's hash gate lets only one
 * thread fewer than there are CPUs hash at once: the walk keeps a CPU of
 * its own (/usr/share: 1.06 s before, 1.01 s after, six runs each).
 */
const LIBUV_DEPTH = 4;

/** st_mtime in ms exactly as node computes fs.Stats#mtimeMs from the timespec. */
export function mtimeMsOf(mtimeNs: bigint): number {
  let sec = mtimeNs / 1_000_000_000n;
  let nsec = mtimeNs % 1_000_000_000n;
  if (nsec < 0n) {
    sec -= 1n;
    nsec += 1_000_000_000n;
  }
  return Number(sec) * 1e3 + Number(nsec) / 1e6;
}

function workerUrl(): URL {
  const here = new URL("./hash-worker.js", import.meta.url);
  if (fs.existsSync(fileURLToPath(here))) return here;
  // Running from src/ (tests): use the compiled worker.
  const p = fileURLToPath(here).replace(/\/src\/scan\/hash-worker\.js$/, "/dist/scan/hash-worker.js");
  return pathToFileURL(p);
}

interface Slot {
  worker: Worker;
  queued: number;
}

/**
 * Workers pull: at most DEPTH batches wait at a worker, the rest here, so one
 * large file never holds up many files queued behind it.
 */
export class HashPool {
  private readonly slots: Slot[] = [];
  private readonly ready: HashBatch[] = [];
  private inFlight = 0;
  private nextId = 0;
  private done = 0;
  private wake: (() => void) | null = null;
  private failure: Error | null = null;
  private readonly onResult: HashCallback;
  private readonly hashLen: number;
  private collected: Map<number, HashResult> | null = null;

  // The batch being filled.
  private paths = Buffer.allocUnsafe(16384);
  private pathFill = 0;
  private ends: number[] = [];
  private meta: number[] = [];
  private bytes = 0;
  private first = 0;

  /**
   * `store`: an objects/ directory; files whose object is missing there are
   * copied to temporary names in it (see hash-worker.ts). Without
   * `onResult`, results are kept and `finish()` returns them.
   */
  constructor(
    private readonly alg: VerityAlgorithm,
    threads?: number,
    private readonly store: string | null = null,
    onResult?: HashCallback,
  ) {
    if (onResult) {
      this.onResult = onResult;
    } else {
      const map = (this.collected = new Map());
      this.onResult = (id, digest, error, path, tmp) => {
        if (error !== null) map.set(id, { id, error, path: path ?? "a file" });
        else map.set(id, tmp ? { id, digest: digest!, tmp } : { id, digest: digest! });
      };
    }
    this.hashLen = digestLength(alg);
    this.threads = threads ?? Math.max(1, os.availableParallelism());
    // Without a store, batches only need hashing: the native hasher does it
    // in libuv's threads (hashFilesAsync), with no worker isolate to start.
    this.inLibuv = native !== null && store === null && isMainThread;
    // A thread count the user asked for (mkcomposefs --threads) is how many hash at once.
    this.libuvLimit = threads === undefined ? this.threads * LIBUV_DEPTH : this.threads;
  }

  private readonly threads: number;
  private readonly libuvLimit: number;
  private readonly inLibuv: boolean;
  private libuvBatches = 0;
  /** Whether the native hash gate is limiting libuv's hashing threads (see setHashLimit). */
  private gated = false;

  private ungate(): void {
    if (!this.gated) return;
    this.gated = false;
    native!.setHashLimit(0);
  }
  private started = false;
  private finishing = false;

  /**
   * The workers start with the first batch the walk fills: a tree whose
   * files fit in one batch is hashed on the main thread at finish(), with no
   * thread started at all.
   */
  private startWorkers(): void {
    if (this.started || this.inLibuv) return;
    this.started = true;
    const url = workerUrl();
    for (let i = 0; i < this.threads; i++) {
      // Workers only hash: small heaps keep the process's memory flat.
      const worker = new Worker(url, {
        resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 },
        workerData: { interrupt: shareInterruptFlag() },
      });
      const slot: Slot = { worker, queued: 0 };
      worker.on("message", (r: HashBatchResult) => {
        slot.queued--;
        this.receive(r);
      });
      worker.on("error", (e) => {
        this.failure = e;
        if (this.wake) this.wake();
      });
      this.slots.push(slot);
    }
  }

  private receive(r: HashBatchResult): void {
    const hashLen = this.hashLen;
    const digests = Buffer.from(r.digests.buffer, r.digests.byteOffset, r.digests.byteLength);
    for (let k = 0; k < r.n; k++) {
      const error = r.errors?.[k] ?? null;
      this.onResult(
        r.first + k,
        error === null ? digests.subarray(k * hashLen, (k + 1) * hashLen) : null,
        error,
        r.errorPaths?.[k] ?? null,
        r.tmps?.[k] ?? null,
      );
    }
    this.done += r.n;
    this.inFlight--;
    this.dispatch();
    if (this.wake) this.wake();
  }

  /**
   * Queue a file (`base` + the first `pathLen` bytes of `path`); returns its
   * id (0, 1, 2… in the order added).
   */
  addFile(path: Uint8Array, size: number, ino: number, mtimeMs: number, base: Uint8Array | null = null, pathLen = path.length): number {
    const at = base === null ? this.pathFill : this.pathFill + base.length;
    const need = at + pathLen;
    if (need > this.paths.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, this.paths.length * 2));
      this.paths.copy(grown, 0, 0, this.pathFill);
      this.paths = grown;
    }
    if (base !== null) this.paths.set(base, this.pathFill);
    if (pathLen === path.length) {
      this.paths.set(path, at);
    } else {
      // A prefix of a longer buffer (the walk's scratch path): copied without a view object.
      const dst = this.paths;
      for (let i = 0; i < pathLen; i++) dst[at + i] = path[i]!;
    }
    this.pathFill = need;
    this.ends.push(need);
    this.meta.push(size, ino, mtimeMs);
    this.bytes += size;
    if (this.ends.length >= BATCH_FILES || this.bytes >= BATCH_BYTES) this.seal();
    return this.nextId++;
  }

  /** The old interface (fsck): one job with its stat as strings. */
  add(job: HashJob): void {
    if (job.id !== this.nextId) throw new Error("internal: hash jobs must be numbered 0, 1, 2…");
    this.addFile(job.path, job.size, Number(BigInt(job.ino)), mtimeMsOf(BigInt(job.mtimeNs)));
  }

  private seal(): void {
    const n = this.ends.length;
    if (n === 0) return;
    // A copy of its own, transferred to the worker.
    const paths = new Uint8Array(this.pathFill);
    paths.set(this.paths.subarray(0, this.pathFill));
    this.ready.push({
      alg: this.alg,
      store: this.store,
      first: this.first,
      paths,
      ends: Uint32Array.from(this.ends),
      meta: Float64Array.from(this.meta),
    });
    this.first += n;
    this.pathFill = 0;
    this.ends = [];
    this.meta = [];
    this.bytes = 0;
    if (!this.finishing) this.startWorkers();
    this.dispatch();
  }

  private dispatch(): void {
    if (this.inLibuv) {
      if (!this.gated && !this.finishing && this.libuvLimit > this.threads) {
        // While the walk runs it is the critical path: one CPU stays its own.
        this.gated = true;
        native!.setHashLimit(Math.max(1, this.threads - 1));
      }
      while (this.ready.length > 0 && this.libuvBatches < this.libuvLimit) this.hashInLibuv(this.ready.shift()!);
      return;
    }
    while (this.ready.length > 0) {
      let best: Slot | null = null;
      for (const s of this.slots) if (s.queued < DEPTH && (best === null || s.queued < best.queued)) best = s;
      if (best === null) return;
      const b = this.ready.shift()!;
      best.queued++;
      this.inFlight++;
      best.worker.postMessage(b, [b.paths.buffer as ArrayBuffer, b.ends.buffer as ArrayBuffer, b.meta.buffer as ArrayBuffer]);
    }
  }

  /** One batch hashed by the native addon in a libuv thread. */
  private hashInLibuv(b: HashBatch): void {
    const n = b.ends.length;
    const digests = new Uint8Array(n * this.hashLen);
    this.libuvBatches++;
    this.inFlight++;
    native!.hashFilesAsync(b.paths, b.ends, b.meta, verityAlgorithmId(b.alg), digests).then(
      (errors) => {
        this.libuvBatches--;
        let errorPaths: (string | null)[] | null = null;
        if (errors !== null) {
          const paths = Buffer.from(b.paths.buffer, b.paths.byteOffset, b.paths.byteLength);
          errorPaths = errors.map((e, i) => (e === null ? null : paths.toString("utf8", i === 0 ? 0 : b.ends[i - 1]!, b.ends[i]!)));
        }
        this.receive({ first: b.first, n, digests, errors, errorPaths, tmps: null });
      },
      (e: Error) => {
        this.libuvBatches--;
        this.failure = e;
        if (this.wake) this.wake();
      },
    );
  }

  /**
   * Wait for every file: each has had its onResult call (or, without one,
   * the results by id). Batches no worker has room for are hashed here
   * meanwhile: when the workers are behind (a tree of large files, or CPUs
   * busy with other work), the main thread would otherwise only wait.
   */
  async finish(): Promise<Map<number, HashResult>> {
    this.finishing = true;
    this.ungate();
    this.seal();
    try {
      while (!this.failure && this.done < this.nextId) {
        this.dispatch();
        if (this.ready.length > 0) {
          const b = this.ready.shift()!;
          this.inFlight++;
          this.receive(hashBatch(b));
          // Let the workers' results in (and new batches out) between two.
          await new Promise((r) => setImmediate(r));
          continue;
        }
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = null;
      }
    } finally {
      await Promise.all(this.slots.map((s) => s.worker.terminate()));
    }
    if (this.failure) throw this.failure;
    return this.collected ?? new Map();
  }

  /** Stop the workers without waiting for results (after an error). */
  async abort(): Promise<void> {
    this.ungate();
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
