/**
 * The repository lock: shared for every process that reads or adds to the
 * repository (create-image, import-oci, fsck, mount), exclusive for gc, so a
 * gc never deletes an object a concurrent writer has just stored but not yet
 * linked. Any number of writers run at once.
 *
 * As composefs-rs does (Repository::open_path, gc), the lock is flock(2) on
 * the repository directory itself, so cfsctl and composefs-rs's cfsctl
 * exclude each other too. flock comes from the fs-ext addon; where it cannot
 * be loaded, a fallback of lock files under REPO/.locks/ gives the same
 * semantics between cfsctl processes (O_EXCL files holding the owner's pid;
 * a file whose process is gone is stale and removed).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { CfsError, describeSystemError } from "../util/errors.js";
import { makeDirs } from "../util/make-dirs.js";
import { sleepMs } from "../util/sleep.js";

export type LockMode = "shared" | "exclusive";

interface FsExt {
  flockSync(fd: number, flags: "sh" | "ex" | "shnb" | "exnb" | "un"): void;
}

let fsExt: FsExt | null | undefined;

function loadFsExt(): FsExt | null {
  if (fsExt !== undefined) return fsExt;
  if (process.env.CFSCTL_LOCK_FALLBACK) return (fsExt = null);
  try {
    const req = createRequire(import.meta.url);
    fsExt = req("fs-ext") as FsExt;
  } catch {
    fsExt = null;
  }
  return fsExt;
}

export interface RepoLock {
  readonly mode: LockMode;
  release(): void;
}

/**
 * Take the lock of the repository at `repo` (an existing directory). Blocks
 * until it is granted; `onWait` is called once if it has to wait.
 */
export function lockRepository(repo: string, mode: LockMode, onWait?: () => void): RepoLock {
  const ext = loadFsExt();
  return ext ? flockRepository(ext, repo, mode, onWait) : fileLockRepository(repo, mode, onWait);
}

function flockRepository(ext: FsExt, repo: string, mode: LockMode, onWait?: () => void): RepoLock {
  let fd: number;
  try {
    fd = fs.openSync(repo, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch (e) {
    throw describeSystemError(e, `open repository ${repo}`);
  }
  try {
    try {
      ext.flockSync(fd, mode === "shared" ? "shnb" : "exnb");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "EAGAIN" && code !== "EWOULDBLOCK") throw e;
      onWait?.();
      ext.flockSync(fd, mode === "shared" ? "sh" : "ex");
    }
  } catch (e) {
    fs.closeSync(fd);
    throw describeSystemError(e, `lock repository ${repo}`);
  }
  let held = true;
  return {
    mode,
    release() {
      if (!held) return;
      held = false;
      fs.closeSync(fd); // closing the last descriptor drops the flock
    },
  };
}

// ---- fallback: lock files ------------------------------------------------

const LOCK_DIR = ".locks";
const EXCLUSIVE = "exclusive";

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Whether a lock file is held by a live process; a stale one is removed. */
function lockFileLive(file: string): boolean {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return false;
  }
  // A file just created and not yet written: treat as live for a moment.
  if (text === "") {
    try {
      if (Date.now() - fs.statSync(file).mtimeMs < 5000) return true;
    } catch {
      return false;
    }
  }
  if (pidAlive(Number(text.trim()))) return true;
  try {
    fs.unlinkSync(file);
  } catch {
    /* somebody else removed it */
  }
  return false;
}

/** Whether dir lies on a filesystem mounted read-only (access(W_OK) says EROFS). */
function readOnlyFilesystem(dir: string): boolean {
  try {
    fs.accessSync(dir, fs.constants.W_OK);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EROFS";
  }
}

function createLockFile(file: string): boolean {
  try {
    const fd = fs.openSync(file, "wx", 0o644);
    fs.writeSync(fd, `${process.pid}\n`);
    fs.closeSync(fd);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw describeSystemError(e, `create lock file ${file}`);
  }
}

function fileLockRepository(repo: string, mode: LockMode, onWait?: () => void): RepoLock {
  const dir = path.join(repo, LOCK_DIR);
  // On a read-only filesystem nothing can change the repository: a reader
  // needs no lock file (and could not make one).
  if (mode === "shared" && readOnlyFilesystem(repo)) return { mode, release: () => {} };
  try {
    makeDirs(dir);
  } catch (e) {
    throw describeSystemError(e, `create ${dir}`);
  }
  const excl = path.join(dir, EXCLUSIVE);
  let waited = false;
  const wait = () => {
    if (!waited) onWait?.();
    waited = true;
    sleepMs(50);
  };
  let mine: string;
  if (mode === "shared") {
    mine = path.join(dir, `shared-${process.pid}-${crypto.randomBytes(6).toString("hex")}`);
    for (;;) {
      if (lockFileLive(excl)) {
        wait();
        continue;
      }
      if (!createLockFile(mine)) throw new CfsError(`lock file ${mine} exists`);
      // gc may have taken the exclusive lock meanwhile: then it goes first.
      if (!lockFileLive(excl)) break;
      fs.unlinkSync(mine);
      wait();
    }
  } else {
    mine = excl;
    while (!createLockFile(excl)) {
      lockFileLive(excl); // removes a stale one
      wait();
    }
    // Wait for the shared holders to finish.
    for (;;) {
      const live = fs.readdirSync(dir).filter((n) => n.startsWith("shared-") && lockFileLive(path.join(dir, n)));
      if (live.length === 0) break;
      wait();
    }
  }
  let held = true;
  return {
    mode,
    release() {
      if (!held) return;
      held = false;
      try {
        fs.unlinkSync(mine);
      } catch {
        /* already gone */
      }
    },
  };
}

/** Which implementation is in use (for messages and tests). */
export function lockImplementation(): "flock" | "lock-files" {
  return loadFsExt() ? "flock" : "lock-files";
}
