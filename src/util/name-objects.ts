/**
 * Giving complete temporary object files their final names, many at once:
 * batches go to the native addon's nameObjects, which libuv runs on its
 * threads side by side (fs-verity where asked, link, unlink of the
 * temporary name), so a tree of 100k objects is not named one system call
 * at a time on the main thread.
 */
import { loadCfsNative } from "./native.js";

export interface Naming {
  tmp: string;
  final: string;
  /** The object's fs-verity digest (raw), when verity is asked for. */
  digest?: Uint8Array;
}

/** Per object: "stored", "present", "noverity", "EVERITY:<hex>" or "<ERRNO> <syscall>" (see native/cfsctl_native.c). */
export interface NamingResult {
  results: string[];
  verityUnsupported: boolean;
}

const BATCH = 512;
/** Fewer objects are named sooner one by one on the calling thread. */
const FEW = 64;

/**
 * verity: 0 none; 1 sha256, 2 sha512 where supported; 3, 4 the same,
 * required. Null without the addon, or for a few objects: the caller names
 * them itself.
 */
export async function nameObjectsInThreads(items: Naming[], verity: 0 | 1 | 2 | 3 | 4): Promise<NamingResult | null> {
  const native = loadCfsNative();
  if (native === null || items.length < FEW) return null;
  const size = verity === 2 || verity === 4 ? 64 : 32;
  const jobs: Promise<NamingResult>[] = [];
  for (let at = 0; at < items.length; at += BATCH) {
    const batch = items.slice(at, at + BATCH);
    const paths: string[] = [];
    for (const it of batch) paths.push(it.tmp, it.final);
    let digests = Buffer.alloc(0);
    if (verity !== 0) {
      digests = Buffer.alloc(batch.length * size);
      batch.forEach((it, i) => digests.set(it.digest!, i * size));
    }
    jobs.push(native.nameObjects(paths, verity, digests));
  }
  const done = await Promise.all(jobs);
  return { results: done.flatMap((d) => d.results), verityUnsupported: done.some((d) => d.verityUnsupported) };
}
