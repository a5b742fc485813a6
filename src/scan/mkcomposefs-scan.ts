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
  const res = await walk(dir, {
    hardlinks: false,
    useEpoch: opts.useEpoch,
    skipDevices: opts.skipDevices,
    xattrs: opts.skipXattrs ? "none" : opts.userXattrs ? "user" : "all",
    inlineMax: SCAN_INLINE_MAX,
    algorithm: "sha256",
    threads: opts.threads,
  });
  if (opts.digestStore) {
    for (const f of res.external) copyToDigestStore(opts.digestStore, f.path, f.inode.payload!.toString("latin1"));
  }
  return res.root;
}

/**
 * Place a file at STORE/XX/YYYY… as mkcomposefs --digest-store does
 * (tools/mkcomposefs.c copy_file_with_dirs_if_needed): nothing if present,
 * else a temporary file (reflinked where the filesystem can), mode 0644,
 * fsync, rename.
 */
function copyToDigestStore(store: string, src: Buffer, objectPath: string): void {
  const dest = path.join(store, objectPath);
  if (fs.existsSync(dest)) return;
  const dir = path.dirname(dest);
  const tmp = path.join(store, `.tmp${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    fs.copyFileSync(src, tmp, fs.constants.COPYFILE_FICLONE);
    const fd = fs.openSync(tmp, "r+");
    try {
      fs.fchmodSync(fd, 0o644);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, dest);
  } catch (e) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* not created */
    }
    throw describeSystemError(e, `cannot fill store ${store}`);
  }
}
