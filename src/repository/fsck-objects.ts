/**
 * fsck of objects/: every object's content must hash (fs-verity, the
 * repository's algorithm) to its name. Many objects are hashed by the worker
 * pool of the scanner; a few in this thread.
 */
import fs from "node:fs";
import { fsverityDigestFileSync } from "../fsverity/digest.js";
import { HashPool, type HashJob } from "../scan/hash-pool.js";
import type { FsckReport, Repository } from "./repository.js";
import { TMP_PREFIX } from "./repository.js";

const POOL_THRESHOLD = 64;

export async function checkObjects(repo: Repository, report: FsckReport, onProgress?: (n: number) => void): Promise<void> {
  const err = (p: string, message: string) => report.problems.push({ severity: "error", path: p, message });
  const warn = (p: string, message: string) => report.problems.push({ severity: "warning", path: p, message });
  const todo: { rel: string; abs: string; digest: string; st: fs.BigIntStats }[] = [];
  for (const o of repo.listObjectFiles()) {
    const base = o.rel.slice(o.rel.lastIndexOf("/") + 1);
    if (base.startsWith(TMP_PREFIX)) {
      warn(o.rel, "stray temporary file (an interrupted write; gc removes it)");
      continue;
    }
    if (o.rel.split("/").length === 2) {
      // objects/<name> where <name> is not a XX directory
      warn(o.rel, "unexpected entry in objects/");
      continue;
    }
    if (o.digest === null) {
      warn(o.rel, `unexpected entry (not named by a ${repo.algorithm} digest)`);
      continue;
    }
    let st: fs.BigIntStats;
    try {
      st = fs.lstatSync(o.abs, { bigint: true });
    } catch (e) {
      err(o.rel, `cannot stat: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      continue;
    }
    if (!st.isFile()) {
      err(o.rel, "not a regular file");
      continue;
    }
    todo.push({ rel: o.rel, abs: o.abs, digest: o.digest, st });
  }

  const check = (i: number, got: string | null, error?: string) => {
    const t = todo[i]!;
    report.objectsChecked++;
    onProgress?.(report.objectsChecked);
    if (error !== undefined) err(t.rel, `cannot read: ${error}`);
    else if (got !== t.digest) err(t.rel, `content does not match its name (fs-verity ${repo.algorithm} digest is ${got})`);
  };

  if (todo.length < POOL_THRESHOLD) {
    todo.forEach((t, i) => {
      try {
        check(i, fsverityDigestFileSync(t.abs, repo.algorithm).toString("hex"));
      } catch (e) {
        check(i, null, (e as NodeJS.ErrnoException).code ?? String(e));
      }
    });
    return;
  }
  const pool = new HashPool(repo.algorithm);
  todo.forEach((t, i) => {
    const job: HashJob = {
      id: i,
      path: Buffer.from(t.abs),
      size: Number(t.st.size),
      ino: t.st.ino.toString(),
      mtimeNs: t.st.mtimeNs.toString(),
    };
    pool.add(job);
  });
  const results = await pool.finish();
  todo.forEach((_, i) => {
    const r = results.get(i);
    if (!r) check(i, null, "not hashed");
    else if ("error" in r) check(i, null, r.error);
    else check(i, Buffer.from(r.digest).toString("hex")); // a Uint8Array after the worker message
  });
}
