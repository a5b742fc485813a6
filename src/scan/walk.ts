/**
 * The directory scanner: reads lstat and xattrs of every entry below a
 * directory (never following symlinks, never crossing a mount point), inlines
 * small files and hashes the others in worker threads while the walk goes on.
 *
 * Names stay raw bytes (Buffer paths), so any name a filesystem holds works.
 * Xattrs are read through an O_PATH|O_NOFOLLOW descriptor's /proc/self/fd/N
 * path, as upstream read_xattrs does: a symlink's own xattrs, never its
 * target's, and an ASCII path whatever bytes the real name has.
 *
 * Names are read as latin1 strings (one byte a character: sorted as strings
 * they are in byte order) and become Buffers from the shared allocation
 * pool; paths are built in one scratch buffer. A directory of 50k entries
 * thus costs no ArrayBuffer per name and no Buffer per path.
 */
import fs from "node:fs";
import nodePath from "node:path";
import { isMainThread } from "node:worker_threads";
import { CfsError, describeFileError, describeSystemError } from "../util/errors.js";
import { digestToObjectPath, type VerityAlgorithm } from "../fsverity/digest.js";
import { Inode, NO_XATTRS, PATH_MAX, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "../model/inode.js";
import { MAX_DIR_DEPTH } from "../erofs/format.js";
import { HashPool } from "./hash-pool.js";
import { loadCfsNative, loadXattrAddon, type XattrAddon } from "../util/native.js";
import { mountPointsBelow } from "./mounts.js";
import { openScanned } from "./open-scanned.js";
import { O_PATH } from "../util/open-any-length.js";
import { PackedEntries, forEachPackedXattr } from "./packed-entries.js";

/**
 * fs-xattr, for the JavaScript walk only (loaded when it runs); where it
 * cannot load, reading an xattr fails with one line saying what to install.
 */
let xattr: XattrAddon | null = null;

/** The native scanner, where it was built (else the JavaScript walk below). */
const native = loadCfsNative();

export interface WalkOptions {
  /** One inode per (st_dev, st_ino) with several names found (container rules). */
  hardlinks: boolean;
  useEpoch: boolean;
  skipDevices: boolean;
  xattrs: "all" | "user" | "none";
  /** Files of 1..inlineMax bytes are stored inline. */
  inlineMax: number;
  algorithm: VerityAlgorithm;
  /** Only whole-second mtimes are needed (the container rules drop the nanoseconds). */
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
  /** With a store: the files copied to temporary names (objects missing there); else none. */
  external: ExternalFile[];
  entries: number;
}

const NS_PER_SEC = 1_000_000_000n;

function show(p: Buffer): string {
  return p.toString("utf8");
}

const NON_ASCII = /[^\x00-\x7f]/;

/**
 * All xattrs of one entry. fs-xattr's calls follow symlinks and take string
 * paths: a symlink, or a name that is not plain ASCII, is read through an
 * O_PATH|O_NOFOLLOW descriptor's /proc/self/fd/N path; anything else by its
 * own path (one call instead of three, where most entries have none).
 */
function readXattrs(at: Buffer, ascii: string | null, path: Buffer, inode: Inode, mode: "all" | "user", isSymlink: boolean): void {
  if (!isSymlink && ascii !== null) {
    readXattrsAt(ascii, path, inode, mode);
    return;
  }
  let fd: number;
  try {
    fd = fs.openSync(at, O_PATH | fs.constants.O_NOFOLLOW);
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
    names = xattr!.listAttributesSync(at);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTSUP" || code === "EOPNOTSUPP") return;
    throw describeSystemError(e, `${show(path)}: listing xattrs`);
  }
  for (const name of names) {
    if (mode === "user" && !name.startsWith("user.")) continue;
    // fs-xattr hands names over as UTF-8 strings: other bytes cannot be read back by name.
    if (name.includes("\ufffd")) throw new CfsError(`${show(path)}: xattr name is not valid UTF-8 (reading it needs the native addon): ${name}`);
    let value: Buffer;
    try {
      value = xattr!.getAttributeSync(at, name);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENODATA") continue; // removed meanwhile
      throw describeSystemError(e, `${show(path)}: reading xattr ${name}`);
    }
    if (!inode.setXattr(Buffer.from(name, "utf8"), Buffer.from(value))) {
      throw new CfsError(`${show(path)}: xattrs too large for a composefs image (${name})`);
    }
  }
}

/** A symlink's target (1 to PATH_MAX - 1 bytes, as the kernel gives them) as its payload and size. */
function setSymlinkTarget(inode: Inode, target: Buffer, path: Buffer): void {
  if (target.length === 0 || target.length >= PATH_MAX) throw new CfsError(`${show(path)}: invalid symlink target`);
  inode.payload = target;
  inode.size = BigInt(target.length);
}

/** A directory nested deeper than any image may hold (checked before its files are hashed or stored). */
function tooDeep(path: Buffer): CfsError {
  return new CfsError(`${show(path)}: directories nest deeper than ${MAX_DIR_DEPTH} levels (the most a composefs image holds here)`);
}

/** The one error for a mount point met below the scanned root (`what` it is). */
function mountPointError(path: Buffer, what: string): CfsError {
  return new CfsError(`${show(path)}: a mount point (${what}); cfsctl never crosses mount points`);
}

/** An xattr the native scanner read (views of its buffer: copied here), with readXattrsAt's checks. */
function setXattrChecked(inode: Inode, path: Buffer, name: Buffer, value: Buffer): void {
  // Names are bytes, as upstream takes them (only the fs-xattr fallback needs UTF-8).
  if (!inode.setXattr(Buffer.from(name), Buffer.from(value))) {
    throw new CfsError(`${show(path)}: xattrs too large for a composefs image (${name.toString("utf8")})`);
  }
}

const small = Buffer.allocUnsafe(4096);

/** A file of a few bytes (at `at`, named `path` in messages), which must still have the size lstat gave. */
function readSmallFile(at: Buffer, path: Buffer, size: number): Buffer {
  let fd = -1;
  try {
    fd = openScanned(at);
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
  dev: bigint;
  /** st_ino as a double (as a plain fs.Stats has it, for the workers' check) and exact. */
  ino: number;
  inoBig: bigint;
  mtimeSec: bigint;
  mtimeNsec: number;
  /** st_mtime in ms as a plain fs.Stats has it (what the hash workers compare). */
  mtimeMs: number;
}

let lastSec = -1n;

/**
 * One bigint lstat (a plain one has st_mtime as a double of milliseconds,
 * which cannot tell a whole second from one 100 ns short of the next, and
 * dpkg-installed trees are all whole seconds: measured, a plain lstat plus a
 * bigint one where needed cost more than the bigint one alone).
 */
function lstatMeta(m: Meta, path: Buffer, wholeSeconds: boolean): void {
  const s = fs.lstatSync(path, { bigint: true });
  m.mode = Number(s.mode);
  m.uid = Number(s.uid);
  m.gid = Number(s.gid);
  m.rdev = Number(s.rdev & 0xffffffffn);
  m.nlink = Number(s.nlink);
  m.size = Number(s.size); // beyond 2^53: refused as too large (fillLeaf)
  m.dev = s.dev;
  m.ino = Number(s.ino);
  m.inoBig = s.ino;
  const ns = s.mtimeNs;
  let sec = ns / NS_PER_SEC;
  let rem = ns % NS_PER_SEC;
  if (rem < 0n) {
    sec -= 1n;
    rem += NS_PER_SEC;
  }
  // Files share their second: one BigInt kept for a run of them.
  if (sec === lastSec) sec = lastSec;
  else lastSec = sec;
  m.mtimeSec = sec;
  m.mtimeNsec = wholeSeconds ? 0 : Number(rem);
  // st_mtime in ms exactly as node computes fs.Stats#mtimeMs (what the workers compare).
  m.mtimeMs = Number(sec) * 1e3 + Number(rem) / 1e6;
}

export async function walk(dir: string, opts: WalkOptions): Promise<WalkResult> {
  const rootPath = Buffer.from(dir);
  const wholeSeconds = opts.wholeSeconds === true && opts.useEpoch === false;
  const m: Meta = { mode: 0, uid: 0, gid: 0, rdev: 0, nlink: 0, size: 0, dev: 0n, ino: 0, inoBig: 0n, mtimeSec: 0n, mtimeNsec: 0, mtimeMs: 0 };
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
  // A mount below the root, even of this filesystem (same st_dev): refused before the walk.
  const mounts = mountPointsBelow(rootPath);
  if (mounts.length > 0) {
    const at = mounts[0]!;
    let what = "another mount";
    try {
      what = fs.lstatSync(at, { bigint: true }).dev === rootDev ? "a bind mount of the same filesystem" : "another filesystem";
    } catch {
      /* hidden below another mount: just a mount */
    }
    throw mountPointError(at, what);
  }
  // The walk looks entries up relative to the directory it is in (see
  // walkDir); the workers, which share the working directory, get absolute
  // paths, and messages show them as given.
  let cwd0: string | null = null;
  if (isMainThread) {
    try {
      cwd0 = process.cwd();
    } catch {
      cwd0 = null;
    }
  }
  const relativeRoot = rootPath[0] !== 0x2f;
  if (cwd0 !== null && relativeRoot && NON_ASCII.test(cwd0)) cwd0 = null;
  const base = relativeRoot && cwd0 !== null ? Buffer.from(cwd0.endsWith("/") ? cwd0 : cwd0 + "/") : null;
  const baseStr = base?.toString("utf8") ?? "";
  const absolute = (p: string): string => (relativeRoot ? baseStr + p : p);
  // Regular files stored as objects, by hash job id.
  const files: Inode[] = [];
  let tmps: (string | null)[] | null = null;
  let failedId = -1;
  let failure = "";
  const store = opts.store === undefined ? null : nodePath.resolve(opts.store);
  const pool = new HashPool(opts.algorithm, opts.threads, store, (id, digest, error, path, tmp) => {
    if (error !== null || digest === null) {
      if (failedId < 0 || id < failedId) {
        failedId = id;
        const shown = path !== null && base !== null && path.startsWith(baseStr) ? path.slice(baseStr.length) : path;
        failure = `${shown ?? "a file"}: ${error === null ? "not hashed" : describeFileError(error)}`;
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

  // `at`: the entry for system calls (relative to the working directory);
  // `path`: the entry as messages name it.
  const makeInode = (at: Buffer, atAscii: string | null, path: Buffer, withXattrs = opts.xattrs !== "none"): Inode => {
    const mode = m.mode;
    // Most entries have no xattrs: the shared empty list until setXattr gives one of its own.
    const inode = new Inode(mode, NO_XATTRS);
    inode.uid = m.uid;
    inode.gid = m.gid;
    const type = mode & S_IFMT;
    if (type === S_IFCHR || type === S_IFBLK) inode.rdev = m.rdev;
    if (!opts.useEpoch) {
      inode.mtimeSec = m.mtimeSec;
      inode.mtimeNsec = m.mtimeNsec;
    }
    if (withXattrs && opts.xattrs !== "none") readXattrs(at, atAscii, path, inode, opts.xattrs, type === S_IFLNK);
    return inode;
  };

  const fillLeaf = (at: Buffer, path: Buffer, inode: Inode): void => {
    const type = inode.type;
    if (type === S_IFLNK) {
      let target: Buffer;
      try {
        // As a latin1 string: the Buffer then comes from the shared pool.
        target = Buffer.from(fs.readlinkSync(at, { encoding: "latin1" }), "latin1");
      } catch (e) {
        throw describeSystemError(e, show(path));
      }
      setSymlinkTarget(inode, target, path);
    } else if (type === S_IFREG) {
      const size = m.size;
      inode.size = BigInt(size);
      if (size === 0) return;
      if (size > Number.MAX_SAFE_INTEGER) throw new CfsError(`${show(path)}: file too large`);
      if (size <= opts.inlineMax) {
        inode.content = readSmallFile(at, path, size);
        return;
      }
      // The path goes to a worker only: nothing keeps 100k paths alive.
      files.push(inode);
      pool.addFile(path, size, m.ino, m.mtimeMs, base);
    }
  };

  const rootAscii = NON_ASCII.test(rootPath.toString("latin1")) ? null : rootPath.toString("latin1");
  const useNative = native !== null && opts.inlineMax <= 4096;
  if (!useNative && opts.xattrs !== "none") xattr ??= await loadXattrAddon();
  let root: Inode;
  if (useNative && opts.xattrs !== "none") {
    root = makeInode(rootPath, rootAscii, rootPath, false);
    let packed: Buffer;
    try {
      packed = native.readXattrs(rootPath, opts.xattrs === "all" ? 1 : 2);
    } catch (e) {
      throw describeSystemError(e, `${dir}: listing xattrs`);
    }
    forEachPackedXattr(packed, (name, value) => setXattrChecked(root, rootPath, name, value));
  } else {
    root = makeInode(rootPath, rootAscii, rootPath, opts.xattrs !== "none");
  }
  // scratch[0, len) is the path of the entry at hand; a directory's own
  // path stays in place below its entries' names while they are walked.
  let scratch = Buffer.allocUnsafe(Math.max(8192, 2 * rootPath.length));
  rootPath.copy(scratch);
  const DOT = Buffer.from(".");

  /** Put `name` at scratch[pre…] (growing scratch, keeping its first `pre` bytes); returns the path's length. */
  const appendName = (pre: number, name: Buffer): number => {
    const len = pre + name.length;
    if (len > scratch.length) {
      const grown = Buffer.allocUnsafe(2 * len);
      scratch.copy(grown, 0, 0, pre);
      scratch = grown;
    }
    scratch.set(name, pre);
    return len;
  };

  /**
   * Walk the directory scratch[0, dirLen). `rel`: where, in scratch, the path
   * relative to the working directory starts. The walk changes into every
   * directory whose absolute path is ASCII (process.chdir takes strings), so
   * the kernel resolves one name per lookup instead of the whole path: that
   * measured about 1.5 µs less per entry (lstat and two listxattr calls).
   */
  const walkDir = async (dirLen: number, dirAscii: string | null, dirInode: Inode, rel: number, depth: number): Promise<void> => {
    let names: string[];
    try {
      names = fs.readdirSync(rel >= dirLen ? DOT : scratch.subarray(rel, dirLen), { encoding: "latin1" });
    } catch (e) {
      throw describeSystemError(e, show(scratch.subarray(0, dirLen)));
    }
    names.sort();
    // `/` itself ends with the separator: no `//dev` in messages.
    let pre = dirLen;
    let preAscii = dirAscii;
    if (scratch[dirLen - 1] !== 0x2f) {
      scratch[pre++] = 0x2f;
      if (preAscii !== null) preAscii += "/";
    }
    if (rel === dirLen) rel = pre;
    for (const str of names) {
      const name = Buffer.from(str, "latin1");
      const len = appendName(pre, name);
      const path = scratch.subarray(0, len);
      const at = rel === 0 ? path : scratch.subarray(rel, len);
      // The whole path as a string when it is ASCII (for fs-xattr, which
      // takes strings, and for chdir): built only where needed, since
      // within the working directory the name alone will do.
      const isAscii = preAscii !== null && !NON_ASCII.test(str);
      const atAscii = !isAscii ? null : rel === pre ? str : rel === 0 ? preAscii + str : (preAscii + str).slice(rel);
      try {
        lstatMeta(m, at, wholeSeconds);
      } catch (e) {
        throw describeSystemError(e, show(path));
      }
      if (m.dev !== rootDev) {
        throw mountPointError(path, "another filesystem");
      }
      const type = m.mode & S_IFMT;
      if (opts.skipDevices && (type === S_IFCHR || type === S_IFBLK)) continue;
      if (++entries % 512 === 0) {
        opts.onProgress?.(entries);
        await new Promise((r) => setImmediate(r)); // let finished hash batches in
      }
      if (opts.hardlinks && type !== S_IFDIR && m.nlink > 1) {
        const key = `${m.dev}:${m.inoBig}`;
        const seen = links.get(key);
        if (seen) {
          seen.nlink++;
          dirInode.addEntry(name, seen, true);
          continue;
        }
        const inode = makeInode(at, atAscii, path);
        fillLeaf(at, path, inode);
        links.set(key, inode);
        dirInode.addEntry(name, inode, false);
        continue;
      }
      const inode = makeInode(at, atAscii, path);
      dirInode.addEntry(name, inode, false);
      if (type === S_IFDIR) {
        inode.size = BigInt(m.size);
        if (depth + 1 >= MAX_DIR_DEPTH) throw tooDeep(path);
        // Recurse right here: hardlink primaries are the first path in
        // depth-first, name-sorted order (as composefs-rs and composefs-info).
        const ascii = isAscii ? preAscii + str : null;
        if (rel !== 0 && ascii !== null) {
          enter(atAscii!, path);
          try {
            await walkDir(len, ascii, inode, len, depth + 1);
          } finally {
            leave(absolute(dirAscii!));
          }
        } else {
          await walkDir(len, ascii, inode, rel, depth + 1);
        }
      } else {
        fillLeaf(at, path, inode);
      }
    }
  };

  /**
   * The same walk with the native scanner: one call reads a whole directory
   * (names, lstat, xattrs, symlink targets, small files' contents); any
   * working-directory change happens inside that call and is undone before
   * it returns. Decisions are the ones walkDir makes, entry by entry.
   */
  const rootDevLo = Number(rootDev & 0xffffffffn);
  const rootDevHi = Number(rootDev >> 32n);
  const xattrMode = opts.xattrs === "none" ? 0 : opts.xattrs === "all" ? 1 : 2;
  // scanDir may make each directory the working directory while it reads
  // it (one-name xattr lookups): only on the main thread, and only when the
  // hash workers get absolute paths.
  const scanInCwd = isMainThread && (!relativeRoot || base !== null);
  // The BigInt of the last mtime seen, reused while seconds repeat (NaN: none yet; any number, -1 too, is an mtime).
  let lastSecNum = Number.NaN;
  let lastSecBig = 0n;
  const walkDirNative = async (dirLen: number, dirInode: Inode, depth: number): Promise<void> => {
    let e: PackedEntries;
    try {
      e = new PackedEntries(native!.scanDir(scratch.subarray(0, dirLen), xattrMode, opts.inlineMax, scanInCwd));
    } catch (err) {
      throw nativeScanError(err, scratch.subarray(0, dirLen));
    }
    let pre = dirLen;
    if (scratch[dirLen - 1] !== 0x2f) scratch[pre++] = 0x2f;
    for (let i = 0; i < e.count; i++) {
      e.next();
      const name = e.name();
      // scratch[0, len) is the entry's path (made a Buffer only for messages).
      const len = appendName(pre, name);
      if (e.devLo !== rootDevLo || e.devHi !== rootDevHi) {
        throw mountPointError(scratch.subarray(0, len), "another filesystem");
      }
      const mode = e.mode;
      const type = mode & S_IFMT;
      if (opts.skipDevices && (type === S_IFCHR || type === S_IFBLK)) continue;
      if (++entries % 512 === 0) {
        opts.onProgress?.(entries);
        await new Promise((r) => setImmediate(r)); // let finished hash batches in
      }
      let key: string | null = null;
      if (opts.hardlinks && type !== S_IFDIR && e.nlink > 1) {
        key = `${e.devHi}:${e.devLo}:${e.inoHi}:${e.inoLo}`;
        const seen = links.get(key);
        if (seen) {
          seen.nlink++;
          dirInode.addEntry(name, seen, true);
          continue;
        }
      }
      const inode = new Inode(mode, NO_XATTRS);
      inode.uid = e.uid;
      inode.gid = e.gid;
      if (type === S_IFCHR || type === S_IFBLK) inode.rdev = e.rdev;
      if (!opts.useEpoch) {
        const sec = e.mtimeSec;
        if (sec !== lastSecNum) {
          lastSecNum = sec;
          lastSecBig = BigInt(sec);
        }
        inode.mtimeSec = lastSecBig;
        inode.mtimeNsec = wholeSeconds ? 0 : e.mtimeNsec;
      }
      if (e.xattrCount > 0) {
        const path = scratch.subarray(0, len);
        e.forEachXattr((xname, value) => setXattrChecked(inode, path, xname, value));
      }
      if (key !== null) links.set(key, inode);
      dirInode.addEntry(name, inode, false);
      if (type === S_IFDIR) {
        inode.size = BigInt(e.size);
        if (depth + 1 >= MAX_DIR_DEPTH) throw tooDeep(scratch.subarray(0, len));
        await walkDirNative(len, inode, depth + 1);
      } else if (type === S_IFLNK) {
        setSymlinkTarget(inode, e.data() ?? Buffer.alloc(0), scratch.subarray(0, len));
      } else if (type === S_IFREG) {
        const size = e.size;
        inode.size = BigInt(size);
        if (size === 0) continue;
        if (size > Number.MAX_SAFE_INTEGER) throw new CfsError(`${show(scratch.subarray(0, len))}: file too large`);
        if (e.dataLen >= 0) {
          inode.content = e.data();
          continue;
        }
        files.push(inode);
        pool.addFile(scratch, size, e.ino, e.mtimeSec * 1e3 + e.mtimeNsec / 1e6, base, len);
      }
    }
  };

  /** A scanDir error as one line naming the entry (or the directory). */
  const nativeScanError = (err: unknown, dir: Buffer): Error => {
    const x = err as NodeJS.ErrnoException & { entry?: Buffer };
    if (typeof x?.code !== "string") return err as Error;
    if (!x.entry) return describeSystemError(err, show(dir));
    const path = show(Buffer.concat([dir, dir[dir.length - 1] === 0x2f ? Buffer.alloc(0) : Buffer.from("/"), x.entry]));
    if (x.code === "ECHANGED") return new CfsError(`${path}: changed while it was read`);
    if (x.syscall === "listxattr") return describeSystemError(err, `${path}: listing xattrs`);
    if (x.syscall === "getxattr") return describeSystemError(err, `${path}: reading xattrs`);
    return describeSystemError(err, path);
  };

  const enter = (to: string, path: Buffer): void => {
    try {
      process.chdir(to);
    } catch (e) {
      throw describeSystemError(e, show(path));
    }
  };
  const leave = (to: string): void => {
    try {
      process.chdir(to);
    } catch (e) {
      // Never look names up anywhere else.
      throw describeSystemError(e, to);
    }
  };

  try {
    if (useNative) {
      await walkDirNative(rootPath.length, root, 0);
    } else if (cwd0 !== null && rootAscii !== null) {
      enter(rootAscii, rootPath);
      await walkDir(rootPath.length, rootAscii, root, rootPath.length, 0);
    } else {
      await walkDir(rootPath.length, rootAscii, root, 0, 0);
    }
  } catch (e) {
    await pool.abort();
    throw e;
  } finally {
    if (cwd0 !== null) {
      try {
        process.chdir(cwd0);
      } catch {
        // Removed meanwhile: nothing to return to.
      }
    }
  }
  await pool.finish();
  if (failedId >= 0) {
    // Nothing of a failed scan stays in a store.
    if (tmps) for (const t of tmps as (string | null | undefined)[]) if (t) fs.rmSync(t, { force: true });
    throw new CfsError(failure);
  }
  const external: ExternalFile[] = [];
  if (tmps) for (let i = 0; i < files.length; i++) if (tmps[i]) external.push({ inode: files[i]!, tmp: tmps[i]! });
  opts.onProgress?.(entries);
  return { root, external, entries };
}
