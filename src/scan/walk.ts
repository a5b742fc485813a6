/**
 * The directory scanner: reads lstat and xattrs of every entry below a
 * directory (never following symlinks, never crossing a mount point), inlines
 * small files and hashes the others in worker threads while the walk goes on.
 *
 * Names stay raw bytes (Buffer paths), so any name a filesystem holds works.
 * Xattrs are read through an O_PATH|O_NOFOLLOW descriptor's /proc/self/fd/N
 * path, as upstream read_xattrs does: a symlink's own xattrs, never its
 * target's, and an ASCII path whatever bytes the real name has.
 */
import fs from "node:fs";
import { CfsError, describeSystemError } from "../util/errors.js";
import { digestToObjectPath, type VerityAlgorithm } from "../fsverity/digest.js";
import { Inode, PATH_MAX, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "../model/inode.js";
import { HashPool } from "./hash-pool.js";
import { loadXattrAddon } from "../util/native.js";

/** Where the addon cannot load, reading an xattr fails with one line saying what to install. */
const xattr = await loadXattrAddon();

/** Linux O_PATH (not exported by node:fs). */
const O_PATH = 0o10000000;

export interface WalkOptions {
  /** One inode per (st_dev, st_ino) with several names found (container rules). */
  hardlinks: boolean;
  useEpoch: boolean;
  skipDevices: boolean;
  xattrs: "all" | "user" | "none";
  /** Files of 1..inlineMax bytes are stored inline. */
  inlineMax: number;
  algorithm: VerityAlgorithm;
  threads?: number;
  /** An objects/ directory to copy missing objects into (temporary names; see hash-worker.ts). */
  store?: string;
  onProgress?: (entries: number) => void;
}

export interface ExternalFile {
  inode: Inode;
  /** With a store: the temporary copy to rename to the object's name. */
  tmp?: string;
}

export interface WalkResult {
  root: Inode;
  /** Regular files stored as objects, with the path they were read from. */
  external: ExternalFile[];
  entries: number;
}

const SLASH = Buffer.from("/");
const NS_PER_SEC = 1_000_000_000n;

function show(p: Buffer): string {
  return p.toString("utf8");
}

function splitMtime(ns: bigint): [bigint, number] {
  let sec = ns / NS_PER_SEC;
  let rem = ns % NS_PER_SEC;
  if (rem < 0n) {
    sec -= 1n;
    rem += NS_PER_SEC;
  }
  return [sec, Number(rem)];
}

function isAscii(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]! >= 0x80) return false;
  return true;
}

/**
 * All xattrs of one entry. fs-xattr's calls follow symlinks and take string
 * paths: a symlink, or a name that is not plain ASCII, is read through an
 * O_PATH|O_NOFOLLOW descriptor's /proc/self/fd/N path; anything else by its
 * own path (one call instead of three, where most entries have none).
 */
function readXattrs(path: Buffer, inode: Inode, mode: "all" | "user", isSymlink: boolean): void {
  if (!isSymlink && isAscii(path)) {
    readXattrsAt(path.toString("latin1"), path, inode, mode);
    return;
  }
  let fd: number;
  try {
    fd = fs.openSync(path, O_PATH | fs.constants.O_NOFOLLOW);
  } catch (e) {
    throw describeSystemError(e, show(path));
  }
  try {
    readXattrsAt(`/proc/self/fd/${fd}`, path, inode, mode);
  } finally {
    fs.closeSync(fd);
  }
}

function readXattrsAt(at: string, path: Buffer, inode: Inode, mode: "all" | "user"): void {
  let names: string[];
  try {
    names = xattr.listAttributesSync(at);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTSUP" || code === "EOPNOTSUPP") return;
    throw describeSystemError(e, `${show(path)}: listing xattrs`);
  }
  for (const name of names) {
    if (mode === "user" && !name.startsWith("user.")) continue;
    if (name.includes("\ufffd")) throw new CfsError(`${show(path)}: xattr name is not valid UTF-8: ${name}`);
    let value: Buffer;
    try {
      value = xattr.getAttributeSync(at, name);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENODATA") continue; // removed meanwhile
      throw describeSystemError(e, `${show(path)}: reading xattr ${name}`);
    }
    if (!inode.setXattr(Buffer.from(name, "utf8"), Buffer.from(value))) {
      throw new CfsError(`${show(path)}: xattrs too large for a composefs image (${name})`);
    }
  }
}

const small = Buffer.allocUnsafe(4096);

/** A file of a few bytes, which must still have the size lstat gave. */
function readSmallFile(path: Buffer, size: number): Buffer {
  let fd = -1;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const n = fs.readSync(fd, small, 0, size + 1, 0);
    if (n !== size) throw new CfsError(`${show(path)}: changed while it was read`);
    return Buffer.from(small.subarray(0, n));
  } catch (e) {
    throw describeSystemError(e, show(path));
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

export async function walk(dir: string, opts: WalkOptions): Promise<WalkResult> {
  const rootPath = Buffer.from(dir);
  let st: fs.BigIntStats;
  try {
    st = fs.lstatSync(rootPath, { bigint: true });
  } catch (e) {
    throw describeSystemError(e, dir);
  }
  if ((Number(st.mode) & S_IFMT) !== S_IFDIR) throw new CfsError(`${dir}: Not a directory`);
  try {
    fs.accessSync(rootPath, fs.constants.R_OK | fs.constants.X_OK);
  } catch (e) {
    throw describeSystemError(e, dir);
  }
  const rootDev = st.dev;
  const pool = new HashPool(opts.algorithm, opts.threads, opts.store ?? null);
  const jobs: ExternalFile[] = [];
  const links = new Map<string, Inode>();
  let entries = 0;

  const makeInode = (path: Buffer, s: fs.BigIntStats): Inode => {
    const mode = Number(s.mode);
    const inode = new Inode(mode);
    inode.uid = Number(s.uid);
    inode.gid = Number(s.gid);
    const type = mode & S_IFMT;
    if (type === S_IFCHR || type === S_IFBLK) inode.rdev = Number(s.rdev & 0xffffffffn);
    if (!opts.useEpoch) [inode.mtimeSec, inode.mtimeNsec] = splitMtime(s.mtimeNs);
    if (opts.xattrs !== "none") readXattrs(path, inode, opts.xattrs, type === S_IFLNK);
    return inode;
  };

  const fillLeaf = (path: Buffer, s: fs.BigIntStats, inode: Inode): void => {
    const type = inode.type;
    if (type === S_IFLNK) {
      let target: Buffer;
      try {
        target = fs.readlinkSync(path, { encoding: "buffer" });
      } catch (e) {
        throw describeSystemError(e, show(path));
      }
      if (target.length === 0 || target.length >= PATH_MAX) throw new CfsError(`${show(path)}: invalid symlink target`);
      inode.payload = target;
      inode.size = BigInt(target.length);
    } else if (type === S_IFREG) {
      inode.size = s.size;
      if (s.size === 0n) return;
      if (s.size <= BigInt(opts.inlineMax)) {
        inode.content = readSmallFile(path, Number(s.size));
        return;
      }
      if (s.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new CfsError(`${show(path)}: file too large`);
      jobs.push({ inode });
      // The path goes to the worker only: nothing keeps 100k paths alive.
      pool.add({ id: jobs.length - 1, path, size: Number(s.size), ino: s.ino.toString(), mtimeNs: s.mtimeNs.toString() });
    }
  };

  const root = makeInode(rootPath, st);
  const walkDir = async (dirPath: Buffer, dirInode: Inode): Promise<void> => {
    let names: Buffer[];
    try {
      names = fs.readdirSync(dirPath, { encoding: "buffer" });
    } catch (e) {
      throw describeSystemError(e, show(dirPath));
    }
    names.sort(Buffer.compare);
    for (const name of names) {
      // `/` itself ends with the separator: no `//dev` in messages.
      const path = dirPath[dirPath.length - 1] === 0x2f ? Buffer.concat([dirPath, name]) : Buffer.concat([dirPath, SLASH, name]);
      let s: fs.BigIntStats;
      try {
        s = fs.lstatSync(path, { bigint: true });
      } catch (e) {
        throw describeSystemError(e, show(path));
      }
      if (s.dev !== rootDev) {
        throw new CfsError(`${show(path)}: a mount point (another filesystem); cfsctl never crosses mount points`);
      }
      const mode = Number(s.mode);
      const type = mode & S_IFMT;
      if (opts.skipDevices && (type === S_IFCHR || type === S_IFBLK)) continue;
      if (++entries % 512 === 0) {
        opts.onProgress?.(entries);
        await new Promise((r) => setImmediate(r)); // let idle hash workers take more work
      }
      if (opts.hardlinks && type !== S_IFDIR && s.nlink > 1n) {
        const key = `${s.dev}:${s.ino}`;
        const seen = links.get(key);
        if (seen) {
          seen.nlink++;
          dirInode.addEntry(name, seen, true);
          continue;
        }
        const inode = makeInode(path, s);
        fillLeaf(path, s, inode);
        links.set(key, inode);
        dirInode.addEntry(name, inode, false);
        continue;
      }
      const inode = makeInode(path, s);
      dirInode.addEntry(name, inode, false);
      if (type === S_IFDIR) {
        inode.size = s.size;
        // Recurse right here: hardlink primaries are the first path in
        // depth-first, name-sorted order (as composefs-rs and composefs-info).
        await walkDir(path, inode);
      } else {
        fillLeaf(path, s, inode);
      }
    }
  };

  try {
    await walkDir(rootPath, root);
  } catch (e) {
    await pool.abort();
    throw e;
  }
  const results = await pool.finish();
  const failed = jobs.findIndex((_, i) => {
    const r = results.get(i);
    return !r || "error" in r;
  });
  if (failed >= 0) {
    // Nothing of a failed scan stays in a store.
    for (const r of results.values()) if ("tmp" in r && r.tmp) fs.rmSync(r.tmp, { force: true });
    const r = results.get(failed);
    throw new CfsError(`${r && "path" in r ? r.path : "a file"}: ${r && "error" in r ? r.error : "not hashed"}`);
  }
  for (let i = 0; i < jobs.length; i++) {
    const r = results.get(i) as { digest: Buffer; tmp?: string };
    const j = jobs[i]!;
    j.inode.digest = Buffer.from(r.digest);
    if (r.tmp) j.tmp = r.tmp;
    j.inode.payload = Buffer.from(digestToObjectPath(r.digest));
  }
  opts.onProgress?.(entries);
  return { root, external: jobs, entries };
}
