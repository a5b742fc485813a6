/**
 * A file the walk saw as a regular file can be replaced before it is hashed,
 * copied or read whole: by a FIFO (whose open and reads block), a device
 * (whose reads never end) or a file of another size. Each must be a
 * "changed while it was read" error, never a hang. The hashers run in a
 * child process with a time limit, so a hang fails the test instead of
 * stopping the suite.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { copyScanned, Failure } from "../src/scan/hash-batch.js";
import { readScanned } from "../src/scan/open-scanned.js";
import { ROOT, tmpdir } from "./helpers.js";

const work = tmpdir();
const fifo = path.join(work, "fifo");
spawnSync("mkfifo", [fifo]);
const file = path.join(work, "file");
fs.writeFileSync(file, Buffer.alloc(200_000, 7));
const st = fs.statSync(file);
// A FIFO and an endless device where the walk saw regular files, small and large.
const cases = [
  { path: fifo, size: 100 },
  { path: fifo, size: 5 << 20 },
  { path: "/dev/zero", size: 100 },
  { path: "/dev/zero", size: 5 << 20 },
];

/** hashBatch of the cases in a child process (compiled code, as the CLI runs it). */
function hashInChild(env: NodeJS.ProcessEnv, store: string | null): { status: number | null; out: string; err: string } {
  const script = `
    const { hashBatch } = await import(${JSON.stringify(path.join(ROOT, "dist/scan/hash-batch.js"))});
    const cases = ${JSON.stringify(cases)};
    const enc = new TextEncoder();
    const out = [];
    for (const c of cases) {
      const p = enc.encode(c.path);
      const r = hashBatch({ alg: "sha256", store: ${JSON.stringify(store)}, first: 0, paths: p, ends: Uint32Array.of(p.length), meta: Float64Array.of(c.size, ${st.ino}, ${st.mtimeMs}) });
      out.push(r.errors?.[0] ?? "hashed");
    }
    console.log(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, ...env }, timeout: 30_000, encoding: "utf8" });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

describe("a file replaced after the walk saw it", () => {
  for (const [name, env] of [
    ["native hasher", {}],
    ["JavaScript hasher", { CFSCTL_NATIVE: "0" }],
  ] as const) {
    for (const store of [null, path.join(work, `objects-${name.split(" ")[0]}`)]) {
      it(`is a changed file to the ${name}${store ? " with a store" : ""}, not a hang`, () => {
        const r = hashInChild(env, store);
        expect(r.status, r.err).toBe(0);
        expect(JSON.parse(r.out)).toEqual(cases.map(() => "changed while it was read"));
      });
    }
  }

  it("is never opened for a store's copy: copyScanned refuses what is no longer that regular file", () => {
    const job = { path: Buffer.from(file), size: st.size, ino: st.ino, mtimeMs: st.mtimeMs };
    for (const other of [fifo, "/dev/zero"]) {
      expect(() => copyScanned({ ...job, path: Buffer.from(other) }, path.join(work, "copy-x"))).toThrow(Failure);
    }
    expect(fs.existsSync(path.join(work, "copy-x"))).toBe(false);
    // Another file at the same path (another inode).
    const other = path.join(work, "other");
    fs.writeFileSync(other, "x");
    expect(() => copyScanned({ ...job, path: Buffer.from(other) }, path.join(work, "copy-y"))).toThrow(Failure);
  });

  it("copyScanned copies the file it opened, through /proc or, without it, by reads", () => {
    const job = { path: Buffer.from(file), size: st.size, ino: st.ino, mtimeMs: st.mtimeMs };
    copyScanned(job, path.join(work, "copy-proc"));
    copyScanned(job, path.join(work, "copy-reads"), path.join(work, "no-proc"));
    for (const c of ["copy-proc", "copy-reads"]) {
      expect(fs.readFileSync(path.join(work, c)).equals(fs.readFileSync(file))).toBe(true);
      expect(fs.statSync(path.join(work, c)).mode & 0o777).toBe(0o644);
    }
    // By reads, a file of another size than the walk saw is refused.
    expect(() => copyScanned({ ...job, size: st.size - 1 }, path.join(work, "copy-short"), path.join(work, "no-proc"))).toThrow(Failure);
  });

  it("readScanned (a policy file read whole) answers null for a FIFO, a device or another size", () => {
    expect(readScanned(fifo, 10)).toBeNull();
    expect(readScanned("/dev/zero", 10)).toBeNull();
    expect(readScanned(file, st.size - 1)).toBeNull();
    expect(readScanned(file, st.size)!.equals(fs.readFileSync(file))).toBe(true);
  });
});
