/**
 * Hashing a batch of files (in a worker thread, or on the main thread when
 * the walk is done and batches are still waiting): fs-verity digests of
 * whole files and, when a repository is given, their copy into it. Memory
 * stays flat however large the files are (1 MiB pieces); a file that
 * changes while it is read is an error.
 *
 * Storing reads each file once: a file of up to 1 MiB is written from the
 * bytes just hashed; a larger one is copied (reflinked where the filesystem
 * can) after hashing and checked unchanged. Objects are written to
 * temporary names only; the main thread makes them durable and renames
 * them into place.
 */
import fs from "node:fs";
import path from "node:path";
import { threadId } from "node:worker_threads";
import { FsVerityHasher, fsverityDigestSmallInto, digestLength, verityAlgorithmId, BLOCK_SIZE, type VerityAlgorithm } from "../fsverity/digest.js";
import type { HashBatch, HashBatchResult } from "./hash-pool.js";
import { loadCfsNative } from "../util/native.js";
import { openScanned } from "./open-scanned.js";
import { isInterrupted } from "../util/interrupt.js";
import { makeDirs } from "../util/make-dirs.js";

/** The native hasher (native/cfsctl_native.c), where it was built. */
const native = loadCfsNative();

const CHUNK = 1 << 20;
const hashers = new Map<VerityAlgorithm, FsVerityHasher>();
let tmpCounter = 0;
/** The read buffer (1 MiB and a byte), allocated on first use. */
let buf = Buffer.alloc(0);

function hasher(alg: VerityAlgorithm): FsVerityHasher {
  let h = hashers.get(alg);
  if (!h) hashers.set(alg, (h = new FsVerityHasher(alg)));
  return h.reset();
}

export interface Job {
  path: Buffer;
  size: number;
  ino: number;
  mtimeMs: number;
}

/** Same file, same size, same mtime as the walk's lstat (plain fs.Stats on both sides: same rounding). */
function unchanged(fd: number, job: Job, total: number): boolean {
  const st = fs.fstatSync(fd);
  return total === job.size && st.size === job.size && sameIno(st.ino, job.ino) && st.mtimeMs === job.mtimeMs;
}

/** Beyond 2^53 an inode number is rounded: the same on both sides, but allow for it. */
function sameIno(a: number, b: number): boolean {
  return a === b || (b > Number.MAX_SAFE_INTEGER && Math.abs(a - b) <= b * 2 ** -52);
}

/** A file that cannot be hashed or stored; its message goes to the result as it is. */
export class Failure {
  /** where: the path the message is about, when not the scanned file (a store's directory). */
  constructor(
    readonly message: string,
    readonly where: string | null = null,
  ) {}
}

/** Run fn, a step that only writes to the store at `where`: its system errors name that place, not the scanned file. */
function inStore<T>(where: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof Failure || typeof (e as NodeJS.ErrnoException).code !== "string") throw e;
    throw new Failure(failureMessage(e), where);
  }
}

/** Errors of a copy that come from where it goes (a full, read-only or forbidden store). */
const STORE_SIDE = new Set(["ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG"]);

/**
 * Read a file of fewer than CHUNK bytes whole into `buf` with reads of
 * size + 1 bytes: a regular file reads short only at its end, so getting
 * `size` bytes means the whole file (the fstat check catches a file that
 * grows after). Another size is a Failure.
 */
function readSmall(fd: number, size: number): void {
  let total = 0;
  for (;;) {
    const n = fs.readSync(fd, buf, total, size + 1 - total, null);
    total += n;
    if (n === 0 || total >= size) break;
  }
  if (total !== size) throw new Failure("changed while it was read");
}

/** Create `tmp` (never an existing file) holding buf[0, size). */
function writeSmall(tmp: string, size: number): void {
  const o = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
  try {
    let off = 0;
    while (off < size) off += fs.writeSync(o, buf, off, size - off);
  } finally {
    fs.closeSync(o);
  }
}

/** The objects/XX directory of the digest at digests[at…] in `store`, whether the object exists, and the digest in hex. */
function objectDir(store: string, digests: Uint8Array, at: number, len: number): { dir: string; exists: boolean; hex: string } {
  const hex = Buffer.from(digests.buffer, digests.byteOffset + at, len).toString("hex");
  const dir = path.join(store, hex.slice(0, 2));
  return { dir, exists: fs.existsSync(path.join(dir, hex.slice(2))), hex };
}

/**
 * Copy the scanned file `job` to `tmp` (never an existing file), mode 0644,
 * by the kernel, reflinked where the filesystem can. The copy is made of the
 * file opened here, which must still be the regular file the walk saw: its
 * path is looked up once (openScanned), then reopened only as
 * /proc/self/fd/N, so nothing put in its place (a FIFO) is ever opened for
 * the copy. Without /proc, the bytes are copied by reads of that descriptor.
 */
export function copyScanned(job: Job, tmp: string, procFds = "/proc/self/fd"): void {
  const fd = openScanned(job.path);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || !sameIno(st.ino, job.ino)) throw new Failure("changed while it was read");
    try {
      fs.copyFileSync(`${procFds}/${fd}`, tmp, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT" || fs.existsSync(tmp)) throw e;
      copyByReads(fd, tmp, job.size);
    }
    fs.chmodSync(tmp, 0o644);
  } finally {
    fs.closeSync(fd);
  }
}

/** Copy what fd reads to a new file `tmp`; it must read `size` bytes. */
function copyByReads(fd: number, tmp: string, size: number): void {
  const o = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
  try {
    const piece = Buffer.allocUnsafe(CHUNK);
    let total = 0;
    let pos = 0;
    while (total <= size) {
      const n = fs.readSync(fd, piece, 0, Math.min(CHUNK, size + 1 - total), pos);
      if (n === 0) break;
      pos += n;
      total += n;
      for (let off = 0; off < n; ) off += fs.writeSync(o, piece, off, n - off);
    }
    if (total !== size) throw new Failure("changed while it was read");
  } finally {
    fs.closeSync(o);
  }
}

/** A temporary name in `dir` (made if missing) for a copy being stored. */
function tmpIn(dir: string): string {
  // Interrupted: no new temporary file for the cleanup to miss.
  if (isInterrupted()) throw new Failure("interrupted");
  makeDirs(dir, 0o755);
  return path.join(dir, `.tmp-${process.pid}-${threadId}-${tmpCounter++}`);
}

/**
 * Hash one file into `out` at `at`; returns the temporary copy's path when
 * one was stored. Throws a Failure (or a system error) for a file that
 * cannot be hashed.
 */
function hashOne(job: Job, alg: VerityAlgorithm, store: string | null, out: Uint8Array, at: number): string | null {
  let fd = -1;
  let tmp: string | null = null;
  try {
    fd = openScanned(job.path);
    let total = 0;
    // A file under CHUNK is read whole and, if stored, written from those bytes.
    const whole = job.size < CHUNK;
    if (whole) {
      readSmall(fd, job.size);
      total = job.size;
      if (total <= BLOCK_SIZE) fsverityDigestSmallInto(buf.subarray(0, total), alg, out, at);
      else hasher(alg).update(buf.subarray(0, total)).digestInto(out, at);
    } else {
      const h = hasher(alg);
      // Never more than size + 1 bytes in all (see openScanned).
      while (total <= job.size) {
        const n = fs.readSync(fd, buf, 0, Math.min(CHUNK, job.size + 1 - total), null);
        if (n === 0) break;
        h.update(buf.subarray(0, n));
        total += n;
      }
      h.digestInto(out, at);
    }
    // Compared with what the walk saw: a file written to (or replaced)
    // since then shows another size, inode or mtime.
    if (!unchanged(fd, job, total)) throw new Failure("changed while it was read");
    if (store === null) return null;

    const obj = objectDir(store, out, at, digestLength(alg));
    if (obj.exists) return null;
    const dir = obj.dir;
    tmp = inStore(dir, () => tmpIn(dir));
    if (whole) {
      const t = tmp;
      inStore(dir, () => writeSmall(t, total));
    } else {
      copyToStore(job, tmp, dir);
      if (!unchanged(fd, job, total)) throw new Failure("changed while it was read");
    }
    const done = tmp;
    tmp = null;
    return done;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
    if (tmp !== null) fs.rmSync(tmp, { force: true });
  }
}

/** copyScanned, its errors on the store's side naming the store. */
function copyToStore(job: Job, tmp: string, dir: string): void {
  try {
    copyScanned(job, tmp);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!(e instanceof Failure) && code !== undefined && STORE_SIDE.has(code)) throw new Failure(failureMessage(e), dir);
    throw e;
  }
}

function failureMessage(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return e instanceof Failure ? e.message : err.code ? `${err.code} (${err.syscall ?? "io"})` : String(err.message);
}

const check = new Uint8Array(64);

/**
 * With the native hasher, storing a file whose object is missing (its
 * digest at digests[at…] already computed): the copy written is hashed
 * again and kept only if it gives that digest, so an object always holds
 * what its name says; a file that changed in between is an error. A file
 * under 1 MiB is read once more and written from those bytes; a larger one
 * is copied by the kernel (reflinked where the filesystem can) and the copy
 * hashed. Returns the temporary copy's path.
 */
function storeChecked(job: Job, alg: VerityAlgorithm, dir: string, digests: Uint8Array, at: number, hashLen: number): string {
  const algId = verityAlgorithmId(alg);
  let tmp: string | null = inStore(dir, () => tmpIn(dir));
  let fd = -1;
  try {
    if (job.size < CHUNK) {
      fd = openScanned(job.path);
      readSmall(fd, job.size);
      native!.verityDigest(buf.subarray(0, job.size), algId, check, 0);
      const t = tmp;
      inStore(dir, () => writeSmall(t, job.size));
    } else {
      copyToStore(job, tmp, dir);
      const st = fs.statSync(tmp);
      const p = Buffer.from(tmp);
      const errors = native!.hashFiles(p, Uint32Array.of(p.length), Float64Array.of(st.size, st.ino, st.mtimeMs), algId, check);
      if (errors !== null) throw new Failure(errors[0] ?? "could not hash the copy");
    }
    if (Buffer.compare(check.subarray(0, hashLen), digests.subarray(at, at + hashLen)) !== 0) throw new Failure("changed while it was read");
    const done = tmp;
    tmp = null;
    return done;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
    if (tmp !== null) fs.rmSync(tmp, { force: true });
  }
}

/**
 * Hash every file of a batch; the result's digests buffer is the batch's own
 * (transferable).
 *
 * With the native hasher, the whole batch is hashed in one call (the same
 * checks: size read, then st_size, st_ino and st_mtime against the walk's).
 * With a store, a file whose object is already there is done; a missing
 * one is copied and checked (storeChecked). Without the native hasher,
 * hashOne reads, hashes and writes the copy from the same bytes.
 */
export function hashBatch(b: HashBatch): HashBatchResult {
  if (buf.length === 0) buf = Buffer.allocUnsafe(CHUNK + 1);
  const n = b.ends.length;
  const hashLen = digestLength(b.alg);
  const digests = new Uint8Array(n * hashLen);
  const paths = Buffer.from(b.paths.buffer, b.paths.byteOffset, b.paths.byteLength);
  let errors: (string | null)[] | null = null;
  let errorPaths: (string | null)[] | null = null;
  let tmps: (string | null)[] | null = null;
  let nativeErrors: (string | null)[] | null = null;
  if (native !== null) nativeErrors = native.hashFiles(b.paths, b.ends, b.meta, verityAlgorithmId(b.alg), digests);
  // Objects of this batch already copied (hex): files of equal content are copied once.
  const copied = new Set<string>();
  let start = 0;
  for (let i = 0; i < n; i++) {
    const end = b.ends[i]!;
    const job: Job = { path: paths.subarray(start, end), size: b.meta[3 * i]!, ino: b.meta[3 * i + 1]!, mtimeMs: b.meta[3 * i + 2]! };
    start = end;
    try {
      let tmp: string | null;
      if (native === null) {
        tmp = hashOne(job, b.alg, b.store, digests, i * hashLen);
      } else {
        const error = nativeErrors?.[i] ?? null;
        if (error !== null) throw new Failure(error);
        const obj = b.store === null ? null : objectDir(b.store, digests, i * hashLen, hashLen);
        if (obj === null || obj.exists || copied.has(obj.hex)) tmp = null;
        else {
          tmp = storeChecked(job, b.alg, obj.dir, digests, i * hashLen, hashLen);
          copied.add(obj.hex);
        }
      }
      if (tmp !== null) (tmps ??= new Array<string | null>(n).fill(null))[i] = tmp;
    } catch (e) {
      (errors ??= new Array<string | null>(n).fill(null))[i] = failureMessage(e);
      (errorPaths ??= new Array<string | null>(n).fill(null))[i] = e instanceof Failure && e.where !== null ? e.where : job.path.toString("utf8");
    }
  }
  return { first: b.first, n, digests, errors, errorPaths, tmps };
}
