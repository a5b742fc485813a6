/**
 * Worker thread: hashes the batches the pool sends (see hash-batch.ts) and
 * sends each result back, its digests transferred.
 */
import { parentPort, workerData } from "node:worker_threads";
import { adoptInterruptFlag } from "../util/interrupt.js";
import { hashBatch } from "./hash-batch.js";
import type { HashBatch } from "./hash-pool.js";

adoptInterruptFlag((workerData as { interrupt: SharedArrayBuffer }).interrupt);

parentPort!.on("message", (b: HashBatch) => {
  const res = hashBatch(b);
  parentPort!.postMessage(res, [res.digests.buffer as ArrayBuffer]);
});
