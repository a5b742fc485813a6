/**
 * A pool of worker threads hashing files in parallel with the directory walk:
 * the walk posts batches as it finds files, the workers hash while it goes on.
 */
import fs from "node:fs";
import os from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import type { VerityAlgorithm } from "../fsverity/digest.js";

export interface HashJob {
  id: number;
  path: Buffer;
  size: number;
  ino: string;
  mtimeNs: string;
}

/** A digest, and with a store the temporary file holding a copy (when the object was missing). */
export type HashResult = { id: number; digest: Buffer; tmp?: string } | { id: number; error: string; path: string };

const BATCH = 32;

function workerUrl(): URL {
  const here = new URL("./hash-worker.js", import.meta.url);
  if (fs.existsSync(fileURLToPath(here))) return here;
  // Running from src/ (tests): use the compiled worker.
  const p = fileURLToPath(here).replace(/\/src\/scan\/hash-worker\.js$/, "/dist/scan/hash-worker.js");
  return pathToFileURL(p);
}

/**
 * Workers pull: a batch goes to a worker only when it is idle, so one large
 * file never holds up files queued behind it. The walk must yield to the
 * event loop now and then (see Walker) for idle workers to be fed.
 */
export class HashPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly pending: HashJob[] = [];
  private inFlight = 0;
  private readonly results = new Map<number, HashResult>();
  private wake: (() => void) | null = null;
  private failure: Error | null = null;

  /**
   * `store`: an objects/ directory; files whose object is missing there are
   * copied to temporary names in it (see hash-worker.ts).
   */
  constructor(
    private readonly alg: VerityAlgorithm,
    threads = Math.max(1, os.availableParallelism()),
    private readonly store: string | null = null,
  ) {
    const url = workerUrl();
    for (let i = 0; i < threads; i++) {
      // Workers only hash: small heaps keep the process's memory flat.
      const w = new Worker(url, { resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 } });
      w.on("message", (res: HashResult[]) => {
        for (const r of res) this.results.set(r.id, r);
        this.inFlight--;
        this.idle.push(w);
        this.dispatch(false);
        if (this.wake) this.wake();
      });
      w.on("error", (e) => {
        this.failure = e;
        if (this.wake) this.wake();
      });
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  add(job: HashJob): void {
    this.pending.push(job);
    if (this.pending.length >= BATCH) this.dispatch(false);
  }

  private dispatch(all: boolean): void {
    while (this.idle.length > 0 && (this.pending.length >= BATCH || (all && this.pending.length > 0))) {
      const w = this.idle.pop()!;
      const jobs = this.pending.splice(0, BATCH);
      this.inFlight++;
      w.postMessage({ alg: this.alg, store: this.store, jobs });
    }
  }

  /** Wait for every job; results by job id. */
  async finish(): Promise<Map<number, HashResult>> {
    try {
      while (!this.failure && (this.pending.length > 0 || this.inFlight > 0)) {
        this.dispatch(true);
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = null;
      }
    } finally {
      await Promise.all(this.workers.map((w) => w.terminate()));
    }
    if (this.failure) throw this.failure;
    return this.results;
  }

  /** Stop the workers without waiting for results (after an error). */
  async abort(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
