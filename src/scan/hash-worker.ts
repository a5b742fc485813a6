/**
 * Worker thread: fs-verity digests of whole files (and, for a digest store,
 * the copy into it). Files are read in 1 MiB pieces, so memory stays flat
 * however large they are; a file that changes while it is read is an error.
 */
import fs from "node:fs";
import { parentPort } from "node:worker_threads";
import { FsVerityHasher, type VerityAlgorithm } from "../fsverity/digest.js";
import type { HashJob, HashResult } from "./hash-pool.js";

const CHUNK = 1 << 20;
const buf = Buffer.allocUnsafe(CHUNK);

function hashOne(job: HashJob, alg: VerityAlgorithm): HashResult {
  let fd = -1;
  try {
    fd = fs.openSync(job.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const before = fs.fstatSync(fd, { bigint: true });
    if (before.ino !== BigInt(job.ino) || before.size !== BigInt(job.size) || before.mtimeNs !== BigInt(job.mtimeNs)) {
      return { id: job.id, error: "changed while it was read" };
    }
    const h = new FsVerityHasher(alg);
    let total = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, 0, CHUNK, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      total += n;
    }
    const after = fs.fstatSync(fd, { bigint: true });
    if (total !== job.size || after.size !== before.size || after.mtimeNs !== before.mtimeNs || after.ctimeNs !== before.ctimeNs) {
      return { id: job.id, error: "changed while it was read" };
    }
    return { id: job.id, digest: h.digest() };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return { id: job.id, error: err.code ?? err.message };
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

parentPort!.on("message", (msg: { alg: VerityAlgorithm; jobs: HashJob[] }) => {
  const results = msg.jobs.map((j) => hashOne(j, msg.alg));
  parentPort!.postMessage(results);
});
