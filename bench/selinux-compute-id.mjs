// compute-id of a ~100k-entry tree with and without an SELinux policy in it
// (the real Debian MLS policy of fixtures/selinux): what relabelling adds.
// The two trees are timed in turns (plain, labelled, plain, ...) so that a
// change in the machine's load hits both; medians (and the best run) of wall
// time, and of user+system CPU time.
// Usage: node bench/selinux-compute-id.mjs   (RUNS=5; CFSCTL=path/to/cfsctl
// to time another build; KEEP=1 keeps bench/out/selinux-tree for the next run)
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { CFSCTL, OUT, ROOT } from "./lib.mjs";

const runs = Number(process.env.RUNS ?? 5);
const cfsctl = process.env.CFSCTL ?? CFSCTL;
const base = path.join(OUT, "selinux-tree");
const plain = path.join(base, "plain");
const labelled = path.join(base, "labelled");
const n = 100_000;
if (!fs.existsSync(path.join(base, "done"))) {
  fs.rmSync(base, { recursive: true, force: true });
  const dirs = ["usr/bin", "usr/lib/x86_64-linux-gnu", "usr/share/doc", "usr/share/locale", "etc", "var/lib/dpkg/info", "usr/libexec", "opt/app"];
  let made = 0;
  for (let d = 0; made < n; d++) {
    const dir = path.join(plain, dirs[d % dirs.length], `pkg${d}`);
    fs.mkdirSync(dir, { recursive: true });
    made++;
    for (let f = 0; f < 40 && made < n; f++, made++) fs.writeFileSync(path.join(dir, `file${f}${f % 3 ? ".so" : ".conf"}`), `x${f}`);
  }
  fs.cpSync(plain, labelled, { recursive: true });
  fs.cpSync(path.join(ROOT, "fixtures/selinux/policy/etc"), path.join(labelled, "etc"), { recursive: true });
  fs.writeFileSync(path.join(base, "done"), "");
}

/** One run: wall seconds, user+system CPU seconds. */
function run(dir) {
  const r = spawnSync("/usr/bin/time", ["-f", "%e %U %S", process.execPath, cfsctl, "compute-id", dir], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`compute-id ${dir} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const [e, u, s] = r.stderr.trim().split("\n").pop().split(" ").map(Number);
  return { wall: e, cpu: u + s, digest: r.stdout.trim() };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = { plain: [], labelled: [] };
run(plain); // warm-up: page cache, module cache
run(labelled);
for (let i = 0; i < runs; i++) {
  results.plain.push(run(plain));
  results.labelled.push(run(labelled));
}
const row = (name, rs) => {
  const wall = median(rs.map((r) => r.wall));
  const cpu = median(rs.map((r) => r.cpu));
  const best = Math.min(...rs.map((r) => r.wall));
  console.log(`${name.padEnd(42)} ${wall.toFixed(3)} s (best ${best.toFixed(3)} s)  cpu ${cpu.toFixed(3)} s`);
  return { wall, cpu, best };
};
const a = row(`compute-id, no policy (${n} entries)`, results.plain);
const b = row("compute-id, with the MLS policy", results.labelled);
const pct = (x, y) => (((y - x) / x) * 100).toFixed(1);
console.log(`ratio ${(b.wall / a.wall).toFixed(2)}: relabelling adds ${pct(a.wall, b.wall)} % (median wall), ${pct(a.best, b.best)} % (best wall), ${pct(a.cpu, b.cpu)} % (median cpu); ${runs} runs each`);
if (!process.env.KEEP) fs.rmSync(base, { recursive: true, force: true });
