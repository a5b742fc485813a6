/**
 * Naming the objects the hash workers copied to temporary names: one syncfs
 * makes all of them durable, then each is linked to its final name (an
 * existing object is never rewritten) and the temporary name removed. A run
 * killed at any point leaves at worst unnamed temporary files.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { digestToObjectPath } from "../fsverity/digest.js";
import { describeSystemError } from "../util/errors.js";
import type { ExternalFile } from "./walk.js";

/** syncfs(2) of the filesystem holding `dir` (coreutils `sync -f`), or sync(2). */
export function syncFilesystem(dir: string): void {
  const r = spawnSync("sync", ["-f", dir]);
  if (r.status !== 0) spawnSync("sync");
}

function adopt(tmp: string, final: string): void {
  try {
    try {
      fs.linkSync(tmp, final);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      fs.mkdirSync(path.dirname(final), { recursive: true, mode: 0o755 });
      fs.linkSync(tmp, final);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw describeSystemError(e, `store object ${final}`);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/**
 * Give every stored copy its object name `store/XX/YYYY…`. `name` does the
 * naming after the one syncfs (a repository passes its own, which also
 * applies fs-verity); by default a plain link.
 */
export function commitObjects(
  store: string,
  files: ExternalFile[],
  name: (tmp: string, digest: Buffer) => void = (tmp, digest) => adopt(tmp, path.join(store, digestToObjectPath(digest))),
): void {
  try {
    if (files.some((f) => f.tmp)) syncFilesystem(store);
    for (const f of files) {
      if (!f.tmp) continue;
      name(f.tmp, f.inode.digest!);
      f.tmp = undefined;
    }
  } finally {
    for (const f of files) if (f.tmp) fs.rmSync(f.tmp, { force: true });
  }
}
