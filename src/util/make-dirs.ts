/**
 * `mkdir -p`: fs.mkdirSync(p, { recursive: true }) of Node 20 never returns
 * for a path under /proc (mkdir of the missing component answers ENOENT,
 * of its existing parent EEXIST, and Node tries again forever). Here each
 * component is made at most twice, so any such answer ends as an error.
 */
import fs from "node:fs";
import path from "node:path";

/** Make `p` and any missing parents; returns the first directory made (undefined: none), as mkdirSync does. */
export function makeDirs(p: string, mode = 0o777): string | undefined {
  try {
    return mkdirOnce(p, mode) ? p : undefined;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT" || path.dirname(p) === p) throw e;
  }
  // A parent is missing: make it, then try once more (ENOENT again is an error).
  const first = makeDirs(path.dirname(p), mode);
  return mkdirOnce(p, mode) ? (first ?? p) : first;
}

/** mkdir p: true when made, false when a directory is there already (following a symlink, as mkdir -p does). */
function mkdirOnce(p: string, mode: number): boolean {
  try {
    fs.mkdirSync(p, { mode });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST" && isDirectory(p)) return false;
    throw e;
  }
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
