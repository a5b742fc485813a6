/**
 * The package as a user gets it: `npm pack` of a fresh copy of the sources
 * (prepack compiles dist/), `npm install -g` of the tarball into a temporary
 * prefix (the native addons fs-xattr and fs-ext compiled by node-gyp), then
 * the installed `cfsctl` run from a directory outside the checkout. Skips,
 * saying why, only when npm cannot reach the packages it needs.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { cfsctl, FIXTURES, ROOT, tmpdir } from "./helpers.js";

const PACKAGE = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { name: string; version: string };
const SAMPLE = path.join(FIXTURES, "sample-rootfs");

/** The environment without the npm_* variables of an `npm test` around us. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return env;
}

function run(cmd: string, args: string[], cwd: string, env = cleanEnv()): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: "utf8", maxBuffer: 64 << 20 });
}

/**
 * run() without blocking this worker: npm pack and npm install -g (which
 * compiles three addons) can take a minute on a loaded machine, and a test
 * worker blocked that long loses its connection to the test runner.
 */
function runAsync(cmd: string, args: string[], cwd: string, env = cleanEnv()): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** npm's words for "the registry (or the cache) did not answer". */
const UNREACHABLE = /ENOTCACHED|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|network|request to .* failed/i;

const hasNpm = spawnSync("npm", ["--version"], { encoding: "utf8" }).status === 0;
if (!hasNpm) console.log("packaging test skipped: npm is not installed");

describe("npm pack and npm install -g", () => {
  it.skipIf(!hasNpm)("installs a working cfsctl, with a one-line error where a native addon is missing", { timeout: 240_000 }, async (ctx) => {
    const tmp = tmpdir("cfsctl-pack-");

    // A fresh copy of what the package is built from: no dist/, so prepack must build it.
    const src = path.join(tmp, "src-copy");
    fs.mkdirSync(src);
    for (const f of ["package.json", "tsconfig.json", "README.md", "bin", "src", "doc", "native", "binding.gyp"]) {
      fs.cpSync(path.join(ROOT, f), path.join(src, f), { recursive: true });
    }
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(src, "node_modules"));
    const packDir = path.join(tmp, "pack");
    fs.mkdirSync(packDir);
    const pack = await runAsync("npm", ["pack", "--pack-destination", packDir, "--json"], src);
    expect(pack.status, `npm pack failed:\n${pack.stdout}${pack.stderr}`).toBe(0);
    const tarball = path.join(packDir, `${PACKAGE.name}-${PACKAGE.version}.tgz`);
    expect(fs.existsSync(tarball)).toBe(true);
    const files = (JSON.parse(pack.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
    for (const f of ["bin/cfsctl", "dist/cli/main.js", "dist/cli/commands/diff.js", "dist/scan/hash-worker.js", "native/cfsctl_native.c", "binding.gyp", "package.json", "README.md"]) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => f.startsWith("src/") || f.startsWith("test/") || f.startsWith("fixtures/"))).toEqual([]);

    // Install it as a user would; the dependencies come from npm's cache or the registry.
    const prefix = path.join(tmp, "prefix");
    fs.mkdirSync(path.join(prefix, "lib", "node_modules"), { recursive: true });
    const install = await runAsync(
      "npm",
      ["install", "-g", "--prefix", prefix, "--prefer-offline", "--no-audit", "--no-fund", "--allow-scripts=fs-ext,fs-xattr,cfsctl", tarball],
      tmp,
    );
    if (install.status !== 0 && UNREACHABLE.test(install.stderr)) {
      const reason = install.stderr.split("\n").find((l) => UNREACHABLE.test(l)) ?? "no answer";
      console.warn(`packaging test skipped: npm cannot reach the packages cfsctl depends on (${reason.trim()})`);
      ctx.skip();
    }
    expect(install.status, `npm install -g failed:\n${install.stdout}${install.stderr}`).toBe(0);
    const bin = path.join(prefix, "bin", "cfsctl");
    const pkgDir = path.join(prefix, "lib", "node_modules", PACKAGE.name);
    for (const addon of ["fs-xattr", "fs-ext"]) {
      const release = path.join(pkgDir, "node_modules", addon, "build", "Release");
      expect(fs.existsSync(release) && fs.readdirSync(release).some((f) => f.endsWith(".node")), `${addon} was not compiled`).toBe(true);
    }
    // cfsctl's own addon (native/), compiled by its install script.
    expect(fs.existsSync(path.join(pkgDir, "build", "Release", "cfsctl_native.node")), "cfsctl_native was not compiled").toBe(true);

    // Run from outside the checkout.
    const cwd = path.join(tmp, "elsewhere");
    fs.mkdirSync(cwd);
    const version = run(bin, ["--version"], cwd);
    expect(version.stderr).toBe("");
    expect(version.stdout).toBe(`${PACKAGE.version}\n`);

    const help = run(bin, ["--help"], cwd);
    expect(help.status).toBe(0);
    for (const c of ["create-image", "compute-id", "create-dumpfile", "import-oci", "dump", "diff", "mkcomposefs", "info", "fsck", "gc", "mount"]) {
      expect(help.stdout).toMatch(new RegExp(`^  ${c}\\b`, "m"));
    }

    const expected = cfsctl(["compute-id", SAMPLE]);
    expect(expected.status).toBe(0);
    const id = run(bin, ["compute-id", SAMPLE], cwd);
    expect(id.stderr).toBe("");
    expect(id.stdout).toBe(expected.stdout.toString());
    const repo = path.join(tmp, "repo");
    const created = run(bin, ["--quiet", "--repo", repo, "create-image", "--name", "sample", SAMPLE], cwd);
    expect(created.status, created.stderr).toBe(0);
    expect(created.stdout).toBe(expected.stdout.toString());
    expect(fs.existsSync(path.join(repo, "images", "refs", "sample"))).toBe(true);
    const same = run(bin, ["--repo", repo, "diff", "refs/sample", SAMPLE], cwd);
    expect(same.stdout + same.stderr).toBe("");
    expect(same.status).toBe(0);

    // Without the compiled fs-xattr, the native scanner needs it not.
    const xattrBuild = path.join(pkgDir, "node_modules", "fs-xattr", "build");
    fs.renameSync(xattrBuild, `${xattrBuild}.away`);
    const nativeOnly = run(bin, ["compute-id", SAMPLE], cwd);
    expect(nativeOnly.stderr).toBe("");
    expect(nativeOnly.stdout).toBe(expected.stdout.toString());
    // Without either: the JavaScript scanner needs fs-xattr; one line saying what to install, no stack trace.
    const nativeBuild = path.join(pkgDir, "build");
    fs.renameSync(nativeBuild, `${nativeBuild}.away`);
    const broken = run(bin, ["compute-id", SAMPLE], cwd);
    expect(broken.status).toBe(1);
    expect(broken.stdout).toBe("");
    expect(broken.stderr).toMatch(/^cfsctl: error: the native addon fs-xattr could not be loaded \(.*\); .*python3, make and a C\+\+ compiler \(g\+\+\).*\n$/);
    expect(broken.stderr.split("\n").length).toBe(2);
    expect(broken.stderr).toContain(`run \`npm rebuild fs-xattr\` in ${fs.realpathSync(pkgDir)}\n`);
    // Commands that read no xattrs still work.
    expect(run(bin, ["--help"], cwd).status).toBe(0);
    const image = path.join(repo, "images", "refs", "sample");
    const dump = run(bin, ["dump", image], cwd);
    expect(dump.status, dump.stderr).toBe(0);
    expect(dump.stdout).toMatch(/^\/ /);

    // The advice works: rebuilding the addon where the message says brings compute-id back.
    const rebuild = run("npm", ["rebuild", "fs-xattr"], fs.realpathSync(pkgDir));
    expect(rebuild.status, rebuild.stderr).toBe(0);
    expect(run(bin, ["compute-id", SAMPLE], cwd).stdout).toBe(expected.stdout.toString());
  });
});
