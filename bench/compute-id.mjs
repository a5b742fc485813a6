// compute-id on large trees against a C hashing floor (fsverity digest of
// every file, two processes), mkfs.erofs (a C tool writing an EROFS from a
// directory) and, when found, upstream mkcomposefs --print-digest-only
// (on PATH or in CFSCTL_PEERS).
//
// Runs are interleaved (cfsctl, then each peer, RUNS times, after one
// warm-up round) so that load from other work on a shared machine falls on
// all of them alike; the table gives the median wall time, the best one,
// the median CPU time (user + system, all threads: what load does not
// inflate) and the peak RSS.
// Then checks that cfsctl mkcomposefs and upstream's give one digest for DIR.
// Usage: node bench/compute-id.mjs [DIR…]   (default /usr/share /usr; RUNS=5)
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import { CFSCTL, OUT, findPeer } from "./lib.mjs";

const dirs = process.argv.slice(2).length ? process.argv.slice(2) : ["/usr/share", "/usr"];
const runs = Number(process.env.RUNS ?? 5);
const mkcomposefs = findPeer("mkcomposefs");
const mkfsErofs = findPeer("mkfs.erofs");
const fsverity = findPeer("fsverity");

function once(cmd) {
  const r = spawnSync("/usr/bin/time", ["-f", "%e %U %S %M", "sh", "-c", cmd], { encoding: "utf8", maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const [e, u, s, m] = r.stderr.trim().split("\n").pop().split(" ").map(Number);
  return { wall: e, cpu: u + s, rssMB: m / 1024 };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

for (const dir of dirs) {
  const rows = [{ name: "cfsctl compute-id", cmd: `node ${CFSCTL} compute-id --selinux off ${dir} > /dev/null` }];
  if (fsverity) rows.push({ name: "fsverity digest floor (-P2)", cmd: `find ${dir} -xdev -type f -print0 | xargs -0 -P2 ${fsverity} digest > /dev/null`, floor: true });
  if (mkcomposefs) rows.push({ name: "upstream mkcomposefs --print-digest-only", cmd: `${mkcomposefs} --print-digest-only ${dir} > /dev/null` });
  if (mkfsErofs) rows.push({ name: "mkfs.erofs", cmd: `${mkfsErofs} --quiet ${OUT}/mkfs.img ${dir} > /dev/null` });
  for (const r of rows) r.samples = [];
  const load0 = os.loadavg()[0];
  for (let i = 0; i <= runs; i++) {
    for (const r of rows) {
      const s = once(r.cmd);
      if (i > 0) r.samples.push(s); // round 0 warms the page cache
    }
  }
  const load1 = os.loadavg()[0];
  fs.rmSync(`${OUT}/mkfs.img`, { force: true });
  console.log(`== ${dir}  (${runs} interleaved runs; load average ${load0.toFixed(1)} -> ${load1.toFixed(1)} on ${os.availableParallelism()} CPUs)`);
  const ours = rows[0];
  const stat = (r) => ({
    wall: median(r.samples.map((s) => s.wall)),
    best: Math.min(...r.samples.map((s) => s.wall)),
    cpu: median(r.samples.map((s) => s.cpu)),
    rss: Math.max(...r.samples.map((s) => s.rssMB)),
  });
  const o = stat(ours);
  const w = Math.max(...rows.map((r) => r.name.length));
  for (const r of rows) {
    const s = stat(r);
    const ratio = r === ours ? "" : `  cfsctl/this: wall ${(o.wall / s.wall).toFixed(2)}  cpu ${(o.cpu / s.cpu).toFixed(2)}`;
    console.log(
      `${r.name.padEnd(w)}  ${s.wall.toFixed(2)} s (best ${s.best.toFixed(2)})  cpu ${s.cpu.toFixed(2)} s  peak ${s.rss.toFixed(0)} MB${ratio}`,
    );
  }
  if (!mkcomposefs) {
    console.log("(upstream mkcomposefs not found: put its directory in CFSCTL_PEERS)");
  } else {
    // The same tree scanned raw by both tools must give the same image (compute-id adds the container rules).
    const digest = (cmd) => spawnSync("sh", ["-c", cmd], { encoding: "utf8" }).stdout.trim();
    const ours = digest(`node ${CFSCTL} mkcomposefs --print-digest-only ${dir}`);
    const theirs = digest(`${mkcomposefs} --print-digest-only ${dir}`);
    console.log(`mkcomposefs --print-digest-only ${dir}: cfsctl ${ours.slice(0, 16)}…, upstream ${theirs.slice(0, 16)}… (${ours === theirs ? "equal" : "DIFFERENT"})`);
  }
}
