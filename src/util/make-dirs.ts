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
  const made = tryMkdir(p, mode);
  if (made !== "missing-parent") return made;
  const parent = path.dirname(p);
  if (parent === p) return tryMkdirOrThrow(p, mode);
  const first = makeDirs(parent, mode);
  const self = tryMkdirOrThrow(p, mode);
  return first ?? self;
}

/** mkdir p: p, undefined (a directory already), or "missing-parent". */
function tryMkdir(p: string, mode: number): string | undefined | "missing-parent" {
  try {
    fs.mkdirSync(p, { mode });
    return p;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return "missing-parent";
    if (code === "EEXIST" && isDirectory(p)) return undefined;
    throw e;
  }
}

function tryMkdirOrThrow(p: string, mode: number): string | undefined {
  try {
    fs.mkdirSync(p, { mode });
    return p;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST" && isDirectory(p)) return undefined;
    throw e;
  }
}

/** Whether p is a directory (following a symlink, as mkdir -p does). */
function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
