/** Shared test helpers: fixture paths, running the CLI, fsck.erofs, temp dirs. */
import { execFileSync, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";

export const ROOT = path.resolve(import.meta.dirname, "..");
export const FIXTURES = path.join(ROOT, "fixtures");
export const ASSETS = path.join(FIXTURES, "composefs-assets");
export const CLI = path.join(ROOT, "bin", "cfsctl");

export const isRoot = process.getuid?.() === 0;

/**
 * Let the test runner's messages in. vitest's worker answers its RPC calls
 * only when the event loop runs: synchronous work of over a minute (a long
 * loop, or many synchronous tests in a row, as the stress settings such as
 * CFSCTL_RANDOM_TREES=900 make) ends the run with "Timeout calling onTaskUpdate".
 */
export function letRunnerIn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** A fresh temporary directory inside the run's own (removed when the run ends: test/global-setup.ts). */
export function tmpdir(prefix = "cfsctl-test-"): string {
  return fs.mkdtempSync(path.join(process.env.CFSCTL_TEST_TMP ?? os.tmpdir(), prefix));
}

export interface RunResult {
  status: number;
  stdout: Buffer;
  stderr: string;
}

/** Run the CLI; with `timeout` (ms), a run that takes longer is killed (status -1). */
export function cfsctl(args: string[], opts: { input?: Buffer | string; env?: NodeJS.ProcessEnv; cwd?: string; timeout?: number } = {}): RunResult {
  const r: SpawnSyncReturns<Buffer> = spawnSync(process.execPath, [CLI, ...args], {
    input: opts.input,
    cwd: opts.cwd,
    timeout: opts.timeout,
    env: { ...process.env, ...opts.env },
    maxBuffer: 1 << 30,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** The asset files that have an expected image (a .sha256 and the dumpfile). */
export function assetNames(): string[] {
  return fs
    .readdirSync(ASSETS)
    .filter((f) => f.endsWith(".sha256"))
    .map((f) => f.slice(0, -".sha256".length))
    .filter((a) => fs.existsSync(path.join(ASSETS, a)))
    .sort();
}

/** Upstream tests/test-checksums.sh parses these without CFS_PARSE_STRICT. */
export const NOT_STRICT = new Set(["no-newline.dump", "longlink.dump", "honggfuzz-longlink-unterminated.dump"]);

export function assetDump(name: string): Buffer {
  const raw = fs.readFileSync(path.join(ASSETS, name));
  return name.endsWith(".gz") ? zlib.gunzipSync(raw) : raw;
}

export function assetVersion(name: string): number | undefined {
  const p = path.join(ASSETS, `${name}.version`);
  return fs.existsSync(p) ? Number(fs.readFileSync(p, "utf8").trim()) : undefined;
}

export function readText(p: string): string {
  return fs.readFileSync(p, "utf8");
}

export function gunzipText(p: string): Buffer {
  return zlib.gunzipSync(fs.readFileSync(p));
}

export const hasFsckErofs = spawnSync("fsck.erofs", ["--help"]).error === undefined;

/** fsck.erofs on an image file; throws with its output when it complains. */
export function fsckErofs(imagePath: string): void {
  const r = spawnSync("fsck.erofs", [imagePath]);
  if (r.error) throw new Error(`fsck.erofs not runnable: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`fsck.erofs ${imagePath} failed (${r.status}): ${r.stdout}${r.stderr}`);
  }
}

export function writeTemp(dir: string, name: string, data: Buffer): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, data);
  return p;
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8" });
}

/** One row of fixtures/fsverity/vectors.tsv: a file's size and seed, its fs-verity digests, its sha256. */
export interface VerityVector {
  size: number;
  seed: string;
  sha256: string;
  sha512: string;
  contentSha256: string;
}

export function verityVectors(): VerityVector[] {
  return fs
    .readFileSync(path.join(FIXTURES, "fsverity", "vectors.tsv"), "utf8")
    .trim()
    .split("\n")
    .slice(1)
    .map((l) => {
      const [size, seed, sha256, sha512, contentSha256] = l.split("\t");
      return { size: Number(size), seed: seed!, sha256: sha256!, sha512: sha512!, contentSha256: contentSha256! };
    });
}

/** The vectors' file contents: AES-256-CTR keystream keyed by sha256(seed) (see fixtures/fsverity/README.md). */
export function vectorContent(seed: string, size: number): Buffer {
  const key = createHash("sha256").update(seed, "utf8").digest();
  const c = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(size)), c.final()]);
}

export { rng, type Rng } from "./prng.mjs";
