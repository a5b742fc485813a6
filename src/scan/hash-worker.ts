/**
 * Worker thread: fs-verity digests of whole files and, when a repository is
 * given, their copy into it. Memory stays flat however large the files are
 * (1 MiB pieces); a file that changes while it is read is an error.
 *
 * Storing reads each file once: a file of up to 1 MiB is written from the
 * bytes just hashed; a larger one is copied (reflinked where the filesystem
 * can) after hashing and checked unchanged. Objects are written to
 * temporary names only; the main thread makes them durable and renames
 * them into place.
 */
import fs from "node:fs";
import path from "node:path";
import { parentPort, threadId } from "node:worker_threads";
import { FsVerityHasher, fsverityDigestSmall, BLOCK_SIZE, type VerityAlgorithm } from "../fsverity/digest.js";
import type { HashJob, HashResult } from "./hash-pool.js";

const CHUNK = 1 << 20;
const buf = Buffer.allocUnsafe(CHUNK);
const hashers = new Map<VerityAlgorithm, FsVerityHasher>();
let tmpCounter = 0;

function hasher(alg: VerityAlgorithm): FsVerityHasher {
  let h = hashers.get(alg);
  if (!h) hashers.set(alg, (h = new FsVerityHasher(alg)));
  return h.reset();
}

function unchanged(fd: number, job: HashJob, total: number): boolean {
  const st = fs.fstatSync(fd, { bigint: true });
  return total === job.size && st.ino === BigInt(job.ino) && st.size === BigInt(job.size) && st.mtimeNs === BigInt(job.mtimeNs);
}

function failure(job: HashJob, error: string): HashResult {
  return { id: job.id, error, path: Buffer.from(job.path).toString("utf8") };
}

function hashOne(job: HashJob, alg: VerityAlgorithm, store: string | null): HashResult {
  let fd = -1;
  let tmp: string | null = null;
  try {
    fd = fs.openSync(job.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    let total = 0;
    while (total < CHUNK) {
      const n = fs.readSync(fd, buf, total, CHUNK - total, null);
      if (n === 0) break;
      total += n;
    }
    const whole = total < CHUNK;
    let digest: Buffer;
    if (whole && total <= BLOCK_SIZE) {
      digest = fsverityDigestSmall(buf.subarray(0, total), alg);
    } else {
      const h = hasher(alg).update(buf.subarray(0, total));
      if (!whole) {
        for (;;) {
          const n = fs.readSync(fd, buf, 0, CHUNK, null);
          if (n === 0) break;
          h.update(buf.subarray(0, n));
          total += n;
        }
      }
      digest = h.digest();
    }
    // Compared with what the walk saw: a file written to (or replaced)
    // since then shows another size, inode or mtime.
    if (!unchanged(fd, job, total)) return failure(job, "changed while it was read");
    if (store === null) return { id: job.id, digest };

    const hex = digest.toString("hex");
    const dir = path.join(store, hex.slice(0, 2));
    if (fs.existsSync(path.join(dir, hex.slice(2)))) return { id: job.id, digest };
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    tmp = path.join(dir, `.tmp-${process.pid}-${threadId}-${tmpCounter++}`);
    if (whole) {
      const out = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
      try {
        let off = 0;
        while (off < total) off += fs.writeSync(out, buf, off, total - off);
      } finally {
        fs.closeSync(out);
      }
    } else {
      fs.copyFileSync(job.path, tmp, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE);
      fs.chmodSync(tmp, 0o644);
      if (!unchanged(fd, job, total)) return failure(job, "changed while it was read");
    }
    const done = tmp;
    tmp = null;
    return { id: job.id, digest, tmp: done };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return failure(job, err.code ? `${err.code} (${err.syscall ?? "io"})` : err.message);
  } finally {
    if (fd >= 0) fs.closeSync(fd);
    if (tmp !== null) fs.rmSync(tmp, { force: true });
  }
}

parentPort!.on("message", (msg: { alg: VerityAlgorithm; store: string | null; jobs: HashJob[] }) => {
  const results = msg.jobs.map((j) => hashOne(j, msg.alg, msg.store));
  parentPort!.postMessage(results);
});
