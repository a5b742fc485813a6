/**
 * The directory scan of upstream `mkcomposefs DIR` (lcfs_build in
 * libcomposefs/lcfs-writer.c): the root keeps its own metadata, mtimes keep
 * their nanoseconds, every name is its own inode with nlink 1 (upstream does
 * not detect hardlinks), files of 1..64 bytes are inline.
 * One deliberate difference: a mount point below DIR is an error.
 */
import fs from "node:fs";
import path from "node:path";
import type { Inode } from "../model/inode.js";
import { describeSystemError } from "../util/errors.js";
import { walk } from "./walk.js";
import { commitObjects } from "./store.js";
import { makeDirs } from "../util/make-dirs.js";
import { onInterrupt, removeByPrefix } from "../util/interrupt.js";

export interface MkcomposefsScanOptions {
  useEpoch: boolean;
  skipDevices: boolean;
  skipXattrs: boolean;
  userXattrs: boolean;
  digestStore?: string;
  threads?: number;
}

/** Inline limit of a directory scan (LCFS_RECOMMENDED_INLINE_CONTENT_MAX). */
export const SCAN_INLINE_MAX = 64;

export async function scanForMkcomposefs(dir: string, opts: MkcomposefsScanOptions): Promise<Inode> {
  const store = opts.digestStore ? path.resolve(opts.digestStore) : undefined;
  let made: string | undefined;
  if (store) {
    try {
      made = makeDirs(store, 0o755);
    } catch (e) {
      throw describeSystemError(e, `cannot fill store ${store}`);
    }
  }
  // Interrupted, the store keeps no temporary copy of this run (.tmp-PID-…, see hash-batch.ts).
  const cancel = store ? onInterrupt(() => removeByPrefix(store, `.tmp-${process.pid}-`, 1)) : () => {};
  try {
    return await scanInto(dir, opts, store);
  } finally {
    cancel();
    // Upstream makes the store only to copy a file into it: a tree with
    // nothing to store leaves no store (nor the parents made for it).
    if (store && made !== undefined) removeEmptyDirs(store, made);
  }
}

/** rmdir `from` and its parents up to `upTo` while they are empty. */
function removeEmptyDirs(from: string, upTo: string): void {
  for (let d = from; ; d = path.dirname(d)) {
    try {
      fs.rmdirSync(d);
    } catch {
      return;
    }
    if (d === upTo || path.dirname(d) === d) return;
  }
}

async function scanInto(dir: string, opts: MkcomposefsScanOptions, store: string | undefined): Promise<Inode> {
  const res = await walk(dir, {
    hardlinks: false,
    useEpoch: opts.useEpoch,
    skipDevices: opts.skipDevices,
    xattrs: opts.skipXattrs ? "none" : opts.userXattrs ? "user" : "all",
    inlineMax: SCAN_INLINE_MAX,
    algorithm: "sha256",
    threads: opts.threads,
    // --digest-store: DIR/XX/YYYY…, filled as the files are hashed (see store.ts).
    store,
  });
  if (store) await commitObjects(store, res.external);
  return res.root;
}
