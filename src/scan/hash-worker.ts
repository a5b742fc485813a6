/**
 * Worker thread: fs-verity digests of whole files (and, for a digest store,
 * the copy into it). Files are read in 1 MiB pieces, so memory stays flat
 * however large they are; a file that changes while it is read is an error.
 */
import fs from "node:fs";
import { parentPort } from "node:worker_threads";
import { FsVerityHasher, fsverityDigestSmall, BLOCK_SIZE, type VerityAlgorithm } from "../fsverity/digest.js";
import type { HashJob, HashResult } from "./hash-pool.js";

const CHUNK = 1 << 20;
const buf = Buffer.allocUnsafe(CHUNK);
const hashers = new Map<VerityAlgorithm, FsVerityHasher>();

function hashOne(job: HashJob, alg: VerityAlgorithm): HashResult {
  let fd = -1;
  try {
    fd = fs.openSync(job.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    let total = 0;
    let digest: Buffer;
    // One block or less: a single read (asking for one byte more finds growth).
    const first = fs.readSync(fd, buf, 0, BLOCK_SIZE + 1, null);
    if (first <= BLOCK_SIZE) {
      total = first;
      digest = fsverityDigestSmall(buf.subarray(0, first), alg);
    } else {
      let h = hashers.get(alg);
      if (!h) hashers.set(alg, (h = new FsVerityHasher(alg)));
      h.reset().update(buf.subarray(0, first));
      total = first;
      for (;;) {
        const n = fs.readSync(fd, buf, 0, CHUNK, null);
        if (n === 0) break;
        h.update(buf.subarray(0, n));
        total += n;
      }
      digest = h.digest();
    }
    // Read to the end, then compared with what the walk saw: a file written
    // to (or replaced) since then shows another size, inode or mtime.
    const after = fs.fstatSync(fd, { bigint: true });
    if (total !== job.size || after.ino !== BigInt(job.ino) || after.size !== BigInt(job.size) || after.mtimeNs !== BigInt(job.mtimeNs)) {
      return { id: job.id, error: "changed while it was read" };
    }
    return { id: job.id, digest };
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
