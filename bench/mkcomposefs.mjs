// cfsctl mkcomposefs --from-file against upstream's C mkcomposefs:
// cs9-x86_64-minimal (an upstream asset) and a generated ~100k-entry dumpfile.
// Usage: node bench/mkcomposefs.mjs   (CFSCTL_PEERS=dir to find mkcomposefs;
// CFSCTL_BENCH_RUNS=N rounds, default 7)
//
// The two tools run alternately, round after round, so that load from other
// work on the machine falls on both alike; the report gives medians of wall
// and CPU (user + system) time, the highest peak RSS, and the load average.
//
// Where NODE_EXTRA_CA_CERTS is set, every Node process reads and parses that
// certificate bundle before it runs any code (tens of milliseconds on a small
// machine), although cfsctl never opens a TLS connection. cfsctl then also
// runs without it, in the same rounds, and both rows are reported.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { CFSCTL, OUT, ROOT, findPeer, genDumpfile } from "./lib.mjs";

const RUNS = Number(process.env.CFSCTL_BENCH_RUNS ?? 7);

const cs9 = path.join(OUT, "cs9.dump");
fs.writeFileSync(cs9, zlib.gunzipSync(fs.readFileSync(path.join(ROOT, "fixtures/composefs-assets/cs9-x86_64-minimal.dump.gz"))));
const big = path.join(OUT, "100k.dump");
fs.writeFileSync(big, genDumpfile(100_000));
const peer = findPeer("mkcomposefs");

const caCerts = process.env.NODE_EXTRA_CA_CERTS;
const envWithoutCa = { ...process.env };
delete envWithoutCa.NODE_EXTRA_CA_CERTS;

/** One run under GNU time: wall seconds, CPU seconds, peak RSS in MB. */
function once(cmd, env = process.env) {
  const r = spawnSync("/usr/bin/time", ["-f", "%e %U %S %M", "sh", "-c", cmd], { encoding: "utf8", maxBuffer: 1 << 30, env });
  if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const [wall, user, sys, rss] = r.stderr.trim().split("\n").pop().split(" ").map(Number);
  return { wall, cpu: user + sys, rss: rss / 1024 };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function summary(runs) {
  return {
    wall: median(runs.map((r) => r.wall)),
    cpu: median(runs.map((r) => r.cpu)),
    rss: Math.max(...runs.map((r) => r.rss)),
  };
}

const load = () => os.loadavg().map((l) => l.toFixed(2)).join(" ");
console.log(`${os.cpus().length} CPUs, load average ${load()}; ${RUNS} rounds, cfsctl and upstream alternately, medians`);
const rows = [];
for (const [label, dump] of [["cs9-x86_64-minimal", cs9], ["100k entries", big]]) {
  const entries = fs.readFileSync(dump, "latin1").split("\n").length - 1;
  const oursCmd = `node ${CFSCTL} mkcomposefs --from-file ${dump} ${OUT}/ours.img`;
  const theirsCmd = peer ? `${peer} --from-file ${dump} ${OUT}/theirs.img` : null;
  // One warm-up each (page cache), then the measured rounds.
  once(oursCmd);
  if (theirsCmd) once(theirsCmd);
  const ours = [];
  const oursNoCa = [];
  const theirs = [];
  for (let i = 0; i < RUNS; i++) {
    ours.push(once(oursCmd));
    if (caCerts !== undefined) oursNoCa.push(once(oursCmd, envWithoutCa));
    if (theirsCmd) theirs.push(once(theirsCmd));
  }
  const t = theirsCmd ? summary(theirs) : null;
  const ratio = (o) => (t ? { wall: o.wall / t.wall, cpu: o.cpu / t.cpu } : undefined);
  const o = summary(ours);
  rows.push({ name: `cfsctl mkcomposefs (${label}, ${entries} entries)`, ...o, ratio: ratio(o) });
  if (caCerts !== undefined) {
    const n = summary(oursNoCa);
    rows.push({ name: `  the same without NODE_EXTRA_CA_CERTS`, ...n, ratio: ratio(n) });
  }
  if (t) {
    rows.push({ name: `upstream mkcomposefs (${label})`, ...t });
    const same = fs.readFileSync(`${OUT}/ours.img`).equals(fs.readFileSync(`${OUT}/theirs.img`));
    console.log(`${label}: images ${same ? "identical" : "DIFFER"}`);
  }
}
if (!peer) console.log("upstream mkcomposefs not found (set CFSCTL_PEERS): no ratio");
if (caCerts !== undefined) console.log(`NODE_EXTRA_CA_CERTS=${caCerts}: each Node start parses it; cfsctl was also run without it`);
const w = Math.max(...rows.map((r) => r.name.length));
for (const r of rows) {
  const ratio = r.ratio ? `  ratio wall ${r.ratio.wall.toFixed(2)} cpu ${r.ratio.cpu.toFixed(2)}` : "";
  console.log(`${r.name.padEnd(w)}  wall ${r.wall.toFixed(3)} s  cpu ${r.cpu.toFixed(3)} s  peak ${r.rss.toFixed(0)} MB${ratio}`);
}
console.log(`load average after: ${load()}`);
