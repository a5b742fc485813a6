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
import { HashPool, mtimeMsOf } from "./hash-pool.js";
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
  /**
   * Only whole-second mtimes are needed (the container rules drop the
   * nanoseconds): entries are read with a plain lstat, cheaper than a bigint
   * one, which is used only where a double is not exact enough.
   */
  wholeSeconds?: boolean;
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

/** What the walk needs of an lstat; one object, refilled for every entry. */
interface Meta {
  mode: number;
  uid: number;
  gid: number;
  rdev: number;
  nlink: number;
  size: number;
  dev: number;
  ino: number;
  /** `dev:ino` from a bigint lstat; "" from a plain one (then both are below 2^53). */
  key: string;
  mtimeSec: bigint;
  mtimeNsec: number;
  /** st_mtime in ms as a plain fs.Stats has it (what the hash workers compare). */
  mtimeMs: number;
}

const LARGE = 2 ** 53;

function fromBigint(m: Meta, s: fs.BigIntStats): void {
  m.mode = Number(s.mode);
  m.uid = Number(s.uid);
  m.gid = Number(s.gid);
  m.rdev = Number(s.rdev & 0xffffffffn);
  m.nlink = Number(s.nlink);
  m.size = Number(s.size); // beyond 2^53: refused as too large (fillLeaf)
  m.dev = Number(s.dev);
  m.ino = Number(s.ino);
  m.key = `${s.dev}:${s.ino}`;
  [m.mtimeSec, m.mtimeNsec] = splitMtime(s.mtimeNs);
  m.mtimeMs = mtimeMsOf(s.mtimeNs);
}

/**
 * Plain fs.Stats are exact but for st_mtime (a double of milliseconds) and,
 * beyond 2^53, st_ino. The second is exact when the fraction of a second is
 * well away from 0 and 1000 ms (the double is within 0.001 ms of the truth);
 * elsewhere, and for nanoseconds, a bigint lstat decides.
 */
function lstatMeta(m: Meta, path: Buffer, wholeSeconds: boolean): void {
  if (wholeSeconds) {
    const s = fs.lstatSync(path);
    const ms = s.mtimeMs;
    const sec = Math.floor(ms / 1000);
    const frac = ms - sec * 1000;
    if (frac >= 0.01 && frac <= 999.99 && Math.abs(ms) < 1e13 && s.ino < LARGE && s.size < LARGE && s.dev < LARGE) {
      m.mode = s.mode;
      m.uid = s.uid;
      m.gid = s.gid;
      m.rdev = s.rdev % 4294967296;
      m.nlink = s.nlink;
      m.size = s.size;
      m.dev = s.dev;
      m.ino = s.ino;
      m.key = "";
      m.mtimeSec = BigInt(sec);
      m.mtimeNsec = 0;
      m.mtimeMs = ms;
      return;
    }
  }
  fromBigint(m, fs.lstatSync(path, { bigint: true }));
  if (wholeSeconds) m.mtimeNsec = 0;
}

export async function walk(dir: string, opts: WalkOptions): Promise<WalkResult> {
  const rootPath = Buffer.from(dir);
  const wholeSeconds = opts.wholeSeconds === true && opts.useEpoch === false;
  const m: Meta = { mode: 0, uid: 0, gid: 0, rdev: 0, nlink: 0, size: 0, dev: 0, ino: 0, key: "", mtimeSec: 0n, mtimeNsec: 0, mtimeMs: 0 };
  try {
    lstatMeta(m, rootPath, wholeSeconds);
  } catch (e) {
    throw describeSystemError(e, dir);
  }
  if ((m.mode & S_IFMT) !== S_IFDIR) throw new CfsError(`${dir}: Not a directory`);
  try {
    fs.accessSync(rootPath, fs.constants.R_OK | fs.constants.X_OK);
  } catch (e) {
    throw describeSystemError(e, dir);
  }
  const rootDev = m.dev;
  // Regular files stored as objects, by hash job id.
  const files: Inode[] = [];
  let tmps: (string | null)[] | null = null;
  let failedId = -1;
  let failure = "";
  const pool = new HashPool(opts.algorithm, opts.threads, opts.store ?? null, (id, digest, error, path, tmp) => {
    if (error !== null || digest === null) {
      if (failedId < 0 || id < failedId) {
        failedId = id;
        failure = `${path ?? "a file"}: ${error ?? "not hashed"}`;
      }
    } else {
      const inode = files[id]!;
      inode.digest = digest;
      inode.payload = Buffer.from(digestToObjectPath(digest), "latin1");
    }
    if (tmp !== null) (tmps ??= [])[id] = tmp;
  });
  const links = new Map<string, Inode>();
  let entries = 0;

  const makeInode = (path: Buffer): Inode => {
    const mode = m.mode;
    const inode = new Inode(mode);
    inode.uid = m.uid;
    inode.gid = m.gid;
    const type = mode & S_IFMT;
    if (type === S_IFCHR || type === S_IFBLK) inode.rdev = m.rdev;
    if (!opts.useEpoch) {
      inode.mtimeSec = m.mtimeSec;
      inode.mtimeNsec = m.mtimeNsec;
    }
    if (opts.xattrs !== "none") readXattrs(path, inode, opts.xattrs, type === S_IFLNK);
    return inode;
  };

  const fillLeaf = (path: Buffer, inode: Inode): void => {
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
      const size = m.size;
      inode.size = BigInt(size);
      if (size === 0) return;
      if (size > Number.MAX_SAFE_INTEGER) throw new CfsError(`${show(path)}: file too large`);
      if (size <= opts.inlineMax) {
        inode.content = readSmallFile(path, size);
        return;
      }
      // The path goes to a worker only: nothing keeps 100k paths alive.
      files.push(inode);
      pool.addFile(path, size, m.ino, m.mtimeMs);
    }
  };

  const root = makeInode(rootPath);
  const walkDir = async (dirPath: Buffer, dirInode: Inode): Promise<void> => {
    let names: Buffer[];
    try {
      names = fs.readdirSync(dirPath, { encoding: "buffer" });
    } catch (e) {
      throw describeSystemError(e, show(dirPath));
    }
    names.sort(Buffer.compare);
    // `/` itself ends with the separator: no `//dev` in messages.
    const prefix = dirPath[dirPath.length - 1] === 0x2f ? dirPath : Buffer.concat([dirPath, SLASH]);
    for (const name of names) {
      const path = Buffer.concat([prefix, name]);
      try {
        lstatMeta(m, path, wholeSeconds);
      } catch (e) {
        throw describeSystemError(e, show(path));
      }
      if (m.dev !== rootDev) {
        throw new CfsError(`${show(path)}: a mount point (another filesystem); cfsctl never crosses mount points`);
      }
      const type = m.mode & S_IFMT;
      if (opts.skipDevices && (type === S_IFCHR || type === S_IFBLK)) continue;
      if (++entries % 512 === 0) {
        opts.onProgress?.(entries);
        await new Promise((r) => setImmediate(r)); // let finished hash batches in
      }
      if (opts.hardlinks && type !== S_IFDIR && m.nlink > 1) {
        // From a plain lstat, dev and ino are below 2^53: exact.
        const key = m.key === "" ? `${m.dev}:${m.ino}` : m.key;
        const seen = links.get(key);
        if (seen) {
          seen.nlink++;
          dirInode.addEntry(name, seen, true);
          continue;
        }
        const inode = makeInode(path);
        fillLeaf(path, inode);
        links.set(key, inode);
        dirInode.addEntry(name, inode, false);
        continue;
      }
      const inode = makeInode(path);
      dirInode.addEntry(name, inode, false);
      if (type === S_IFDIR) {
        inode.size = BigInt(m.size);
        // Recurse right here: hardlink primaries are the first path in
        // depth-first, name-sorted order (as composefs-rs and composefs-info).
        await walkDir(path, inode);
      } else {
        fillLeaf(path, inode);
      }
    }
  };

  try {
    await walkDir(rootPath, root);
  } catch (e) {
    await pool.abort();
    throw e;
  }
  await pool.finish();
  if (failedId >= 0) {
    // Nothing of a failed scan stays in a store.
    if (tmps) for (const t of tmps as (string | null | undefined)[]) if (t) fs.rmSync(t, { force: true });
    throw new CfsError(failure);
  }
  const external: ExternalFile[] = new Array(files.length);
  for (let i = 0; i < files.length; i++) {
    const tmp = tmps?.[i];
    external[i] = tmp ? { inode: files[i]!, tmp } : { inode: files[i]! };
  }
  opts.onProgress?.(entries);
  return { root, external, entries };
}
