// Start-up time: wall time of `cfsctl --version` (median of N runs after a
// few warm-ups) for an installed copy (npm pack + npm install -g into
// bench/out/startup-prefix, or the one given with --installed BIN), for the
// checkout's bin/cfsctl, and for bare `node -e 0`, the floor.
// Usage: node bench/startup.mjs [--runs N] [--installed /usr/local/bin/cfsctl]
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CFSCTL, OUT, ROOT } from "./lib.mjs";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const runs = Number(opt("--runs", 20));
const warmup = 3;

function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return env;
}

/** Pack the checkout (prepack compiles dist/) and install the tarball into a prefix of its own. */
function installCopy() {
  const prefix = path.join(OUT, "startup-prefix");
  const pack = path.join(OUT, "startup-pack");
  fs.rmSync(prefix, { recursive: true, force: true });
  fs.rmSync(pack, { recursive: true, force: true });
  fs.mkdirSync(path.join(prefix, "lib", "node_modules"), { recursive: true });
  fs.mkdirSync(pack, { recursive: true });
  const step = (cmd, a, cwd) => {
    const r = spawnSync(cmd, a, { cwd, env: cleanEnv(), encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${cmd} ${a.join(" ")} failed:\n${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  step("npm", ["pack", "--pack-destination", pack], ROOT);
  const tgz = fs.readdirSync(pack).find((f) => f.endsWith(".tgz"));
  step("npm", ["install", "-g", "--prefix", prefix, "--prefer-offline", "--no-audit", "--no-fund", "--allow-scripts=fs-ext,fs-xattr", path.join(pack, tgz)], os.tmpdir());
  return path.join(prefix, "bin", "cfsctl");
}

/** Wall milliseconds of one run of argv (no shell), from a directory outside the checkout. */
function once(argv) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { cwd: os.tmpdir(), stdio: ["ignore", "ignore", "pipe"] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed (${r.status}): ${r.error?.message ?? r.stderr}`);
  return ms;
}

/** Median, min and max of each command, the commands taking turns so that a change of load hits them alike. */
function timeAll(rows) {
  const times = rows.map(() => []);
  for (let i = 0; i < warmup + runs; i++) {
    rows.forEach(([, argv], j) => {
      const ms = once(argv);
      if (i >= warmup) times[j].push(ms);
    });
  }
  return rows.map(([name], j) => {
    const t = times[j].sort((a, b) => a - b);
    return { name, median: t[Math.floor(t.length / 2)], min: t[0], max: t[t.length - 1] };
  });
}

const given = opt("--installed", null);
const installed = given !== null ? path.resolve(given) : installCopy();
const rows = [
  ["node -e 0", [process.execPath, "-e", "0"]],
  ["cfsctl --version (installed)", [installed, "--version"]],
  ["cfsctl --version (checkout)", [process.execPath, CFSCTL, "--version"]],
  ["cfsctl --help (installed)", [installed, "--help"]],
];
console.log(`node ${process.version}, ${runs} runs each after ${warmup} warm-ups; installed copy: ${installed}`);
const results = timeAll(rows);
const floor = results[0].median;
const w = Math.max(...results.map((r) => r.name.length));
for (const r of results) {
  const over = r === results[0] ? "" : `  (+${(r.median - floor).toFixed(1)} ms over node)`;
  console.log(`${r.name.padEnd(w)}  median ${r.median.toFixed(1)} ms  [${r.min.toFixed(1)}–${r.max.toFixed(1)}]${over}`);
}
