/**
 * Naming the objects the hash workers copied to temporary names: one syncfs
 * makes all of them durable, then each is linked to its final name (an
 * existing object is never rewritten) and the temporary name removed, many
 * at a time in libuv's threads. A run killed at any point leaves at worst
 * unnamed temporary files.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { digestToObjectPath } from "../fsverity/digest.js";
import { CfsError, describeSystemError } from "../util/errors.js";
import { nameObjectsInThreads } from "../util/name-objects.js";
import type { ExternalFile } from "./walk.js";
import { makeDirs } from "../util/make-dirs.js";

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
      makeDirs(path.dirname(final), 0o755);
      fs.linkSync(tmp, final);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw describeSystemError(e, `store object ${final}`);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** A stored copy waiting for its name. */
export interface StoredCopy {
  tmp: string;
  digest: Buffer;
}

/**
 * Links into `store` (mkcomposefs --digest-store): in batches in libuv's
 * threads where the native addon is built, each object first given
 * fs-verity where the filesystem has it, as upstream tries (its errors
 * ignored, as upstream does; a measured digest other than the name is an
 * error). What a thread could not name (and everything without the addon)
 * goes through adopt(), a plain link.
 */
async function linkAll(store: string, items: StoredCopy[]): Promise<void> {
  const namings = items.map((it) => ({ tmp: it.tmp, final: path.join(store, digestToObjectPath(it.digest)), digest: it.digest }));
  const named = await nameObjectsInThreads(namings, 1);
  let failure: unknown = null;
  namings.forEach((n, i) => {
    const r = named?.results[i];
    if (r === "stored" || r === "present") return;
    try {
      if (r?.startsWith("EVERITY:")) {
        throw new CfsError(`store object ${n.final}: the kernel measures fs-verity digest ${r.slice(8)}, cfsctl computed ${n.digest.toString("hex")}`);
      }
      if (failure === null) adopt(n.tmp, n.final);
    } catch (e) {
      failure ??= e;
    } finally {
      fs.rmSync(n.tmp, { force: true });
    }
  });
  if (failure !== null) throw failure;
}

/**
 * Give every stored copy its object name `store/XX/YYYY…`, after one
 * syncfs. `name` does the naming (a repository passes its own, which also
 * applies fs-verity) and must leave no temporary name behind; by default
 * linkAll().
 */
export async function commitObjects(
  store: string,
  files: ExternalFile[],
  name: (items: StoredCopy[]) => Promise<void> = (items) => linkAll(store, items),
): Promise<void> {
  const items: StoredCopy[] = [];
  for (const f of files) if (f.tmp) items.push({ tmp: f.tmp, digest: f.inode.digest! });
  if (items.length === 0) return;
  try {
    syncFilesystem(store);
  } catch (e) {
    for (const it of items) fs.rmSync(it.tmp, { force: true });
    throw e;
  }
  for (const f of files) f.tmp = undefined;
  await name(items);
}
