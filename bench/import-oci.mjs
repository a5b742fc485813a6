// import-oci of a real multi-layer image against the two other ways to the
// same repository or tree, each from an empty output:
//   (a) cfsctl --repo R import-oci LAYOUT:latest
//   (b) umoci unpack --image LAYOUT:latest BUNDLE               (the peer)
//   (c) tar -xzf of each layer into DIR (whiteouts NOT applied), then
//       cfsctl --repo R2 create-image DIR
// The image is a debootstrap --variant=minbase bookworm root filesystem in
// three umoci layers (base; usr/share/doc removed and an application tree
// added; edits below /etc), built once by bench/import-oci-image.sh and kept
// in $CFSCTL_BENCH_CACHE (default /var/tmp/cfsctl-bench). Needs root,
// debootstrap and the Debian mirror the first time, umoci always.
// Warm page cache: one untimed warm-up round, then RUNS rounds of (a), (b),
// (c) in turn; median and best wall time, peak RSS (GNU time, else the
// cfsctl process's own process.resourceUsage()). When eatmydata is found, (a)
// also runs with fsync and syncfs made no-ops: a diagnostic of what syncing
// costs, not a mode of cfsctl. Then checks that the digest of (a) equals
// `cfsctl compute-id` of the tree umoci unpacked (and of the source tree).
// Usage: node bench/import-oci.mjs   (RUNS=3; build dist/ first: npx tsc -p tsconfig.json)
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { CFSCTL, ROOT, findPeer } from "./lib.mjs";

const runs = Number(process.env.RUNS ?? 3);
const cache = path.resolve(process.env.CFSCTL_BENCH_CACHE ?? "/var/tmp/cfsctl-bench");
const layout = path.join(cache, "oci", "image");
const tag = "latest";
const scratch = path.join(cache, "run");
const log = (msg) => process.stderr.write(`[import-oci bench] ${msg}\n`);
const q = (s) => `'${s.replaceAll("'", `'\\''`)}'`;

if (!fs.existsSync(path.join(ROOT, "dist", "cli", "main.js"))) {
  log("dist/ is missing: run `npx tsc -p tsconfig.json` first");
  process.exit(2);
}
const umoci = findPeer("umoci");
if (!umoci) {
  log("umoci not found (apt-get install umoci)");
  process.exit(2);
}
const gnuTime = fs.existsSync("/usr/bin/time") ? "/usr/bin/time" : null;
// Diagnostic only: (a) with fsync/syncfs made no-ops, to show what syncing costs.
const eatmydata = findPeer("eatmydata");

// 1. The image (cached).
log(`image: ${cache} (built once by bench/import-oci-image.sh)`);
const built = spawnSync("sh", [path.join(ROOT, "bench", "import-oci-image.sh"), cache], { stdio: ["ignore", 2, 2] });
if (built.status !== 0) {
  log("building the image failed");
  process.exit(1);
}
const blobPath = (d) => path.join(layout, "blobs", ...d.split(":"));
const index = JSON.parse(fs.readFileSync(path.join(layout, "index.json"), "utf8"));
const desc = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag);
const manifest = JSON.parse(fs.readFileSync(blobPath(desc.digest), "utf8"));
const layers = manifest.layers.map((l) => ({ file: blobPath(l.digest), size: l.size }));
const tarBytes = layers.map((l) => Number(spawnSync("sh", ["-c", `gzip -dc ${q(l.file)} | wc -c`], { encoding: "utf8" }).stdout.trim()));
const members = layers.map((l) => Number(spawnSync("sh", ["-c", `tar -tzf ${q(l.file)} | wc -l`], { encoding: "utf8" }).stdout.trim()));
const MB = (n) => (n / 1e6).toFixed(1);

// 2. The three paths.
// Every round writes into directories of its own, and nothing is deleted
// until all rounds are timed: on ext4 without a journal (this machine's
// root), creating inodes soon after thousands were deleted walks past each
// recently freed one (ext4 recently_deleted(), up to 5 minutes), which made
// whichever path ran after a deletion pay up to several seconds of system
// time. Outputs of an earlier run of this script are moved aside first and
// removed at the end.
const outputs = (round) => {
  const d = path.join(scratch, `round-${round}`);
  return { R: path.join(d, "repo-a"), BUNDLE: path.join(d, "bundle-b"), TREE: path.join(d, "tree-c"), R2: path.join(d, "repo-c"), RE: path.join(d, "repo-e") };
};
const cfs = `node ${q(CFSCTL)} --quiet`;
const stepsFor = (round) => {
  const { R, BUNDLE, TREE, R2, RE } = outputs(round);
  const untar = layers.map((l) => `tar -C ${q(TREE)} --xattrs --xattrs-include='*' --numeric-owner -xzf ${q(l.file)}`).join(" && ");
  return {
    a: { setup: `mkdir -p ${q(path.dirname(R))}`, cmd: `${cfs} --repo ${q(R)} import-oci ${q(`${layout}:${tag}`)}`, node: true },
    b: { setup: null, cmd: `${q(umoci)} unpack --image ${q(`${layout}:${tag}`)} ${q(BUNDLE)} > /dev/null` },
    c1: { setup: `mkdir -p ${q(TREE)}`, cmd: untar },
    c2: { setup: null, cmd: `${cfs} --repo ${q(R2)} create-image ${q(TREE)}`, node: true },
    e: { setup: null, cmd: `${eatmydata} ${cfs} --repo ${q(RE)} import-oci ${q(`${layout}:${tag}`)}`, node: true },
  };
};

// A preload that reports the node process's own peak RSS (the fallback without GNU time).
const rssHook = `data:text/javascript,process.on("exit",()=>process.stderr.write("\\nmaxrss-kb "+process.resourceUsage().maxRSS+"\\n"))`;

/** One timed run: seconds, peak RSS in MB, stdout. The setup (emptying the output, sync) is not timed. */
function timed(step) {
  {
    const s = spawnSync("sh", ["-c", `${step.setup ?? "true"} && sync`], { encoding: "utf8" });
    if (s.status !== 0) throw new Error(`${step.setup}: ${s.stderr}`);
  }
  let r;
  let seconds;
  let rssKB = NaN;
  if (gnuTime) {
    r = spawnSync(gnuTime, ["-f", "time %e %M", "sh", "-c", step.cmd], { encoding: "utf8", maxBuffer: 1 << 26 });
    const m = /time ([\d.]+) (\d+)\s*$/.exec(r.stderr);
    if (m) [seconds, rssKB] = [Number(m[1]), Number(m[2])];
  } else {
    const env = step.node ? { ...process.env, NODE_OPTIONS: `--import=${rssHook}` } : process.env;
    const t0 = process.hrtime.bigint();
    r = spawnSync("sh", ["-c", step.cmd], { encoding: "utf8", maxBuffer: 1 << 26, env });
    seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const m = /maxrss-kb (\d+)/.exec(r.stderr);
    if (m) rssKB = Number(m[1]);
  }
  if (r.status !== 0) throw new Error(`${step.cmd} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return { seconds, rssMB: rssKB / 1024, out: r.stdout.trim() };
}

const res = { a: [], b: [], c1: [], c2: [], c: [], ...(eatmydata ? { e: [] } : {}) };
const digests = { a: new Set(), c: new Set() };
const old = `${scratch}.old-${process.pid}`;
if (fs.existsSync(scratch)) fs.renameSync(scratch, old);
fs.mkdirSync(scratch, { recursive: true });
for (let round = 0; round <= runs; round++) {
  const steps = stepsFor(round);
  const what = round === 0 ? "warm-up round" : `round ${round}/${runs}`;
  log(`${what}: (a) cfsctl import-oci`);
  const a = timed(steps.a);
  log(`${what}: (b) umoci unpack`);
  const b = timed(steps.b);
  log(`${what}: (c) tar -xzf of ${layers.length} layers, cfsctl create-image`);
  const c1 = timed(steps.c1);
  const c2 = timed(steps.c2);
  digests.a.add(a.out);
  digests.c.add(c2.out);
  let e = null;
  if (eatmydata) {
    log(`${what}: cfsctl import-oci under eatmydata (diagnostic)`);
    e = timed(steps.e);
  }
  log(`${what}: (a) ${a.seconds.toFixed(2)} s, (b) ${b.seconds.toFixed(2)} s, (c) ${c1.seconds.toFixed(2)} + ${c2.seconds.toFixed(2)} s` + (e ? `, (a) without syncing ${e.seconds.toFixed(2)} s` : ""));
  if (round === 0) continue;
  if (e) res.e.push(e);
  res.a.push(a);
  res.b.push(b);
  res.c1.push(c1);
  res.c2.push(c2);
  res.c.push({ seconds: c1.seconds + c2.seconds, rssMB: Math.max(c1.rssMB, c2.rssMB) });
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const stat = (rs) => ({
  median: median(rs.map((r) => r.seconds)),
  best: Math.min(...rs.map((r) => r.seconds)),
  rss: Math.max(...rs.map((r) => r.rssMB)),
});
const S = Object.fromEntries(Object.entries(res).map(([k, v]) => [k, stat(v)]));

// 3. Digests: (a) against compute-id of the tree umoci unpacked, and of the tree the layers were made from.
log("digests: cfsctl compute-id of the umoci-unpacked rootfs and of the source rootfs");
const computeId = (dir) => timed({ setup: null, cmd: `${cfs} compute-id ${q(dir)}` }).out;
const [digestA] = digests.a;
const { R, BUNDLE } = outputs(runs);
const digestB = computeId(path.join(BUNDLE, "rootfs"));
const digestSrc = computeId(path.join(cache, "oci", "bundle", "rootfs"));
const diffSummary = (a, b) => {
  const r = spawnSync("sh", ["-c", `${cfs} --repo ${q(R)} diff ${a} ${q(b)}`], { encoding: "utf8", maxBuffer: 1 << 26 });
  const lines = r.stdout.split("\n").filter(Boolean);
  const kinds = new Map();
  for (const l of lines) {
    const [sign, , field, from, , to] = l.split(" ");
    let k = sign === "-" ? "only in (a)" : sign === "+" ? "only in the tree" : field;
    if (sign === "~" && field === "mtime") k = `mtime ${Number(to) - Number(from) >= 0 ? "+" : ""}${Number(to) - Number(from)} s`;
    kinds.set(k, (kinds.get(k) ?? 0) + 1);
  }
  return { count: lines.length, kinds: [...kinds].map(([k, n]) => `${n} × ${k}`).join(", ") || "none" };
};

// 4. The table.
const rows = [
  ["(a) cfsctl import-oci LAYOUT:TAG", S.a],
  ["(b) umoci unpack (peer)", S.b],
  [`(c) tar -xzf ×${layers.length} + cfsctl create-image`, S.c],
  [`    tar -xzf ×${layers.length}`, S.c1],
  ["    cfsctl create-image", S.c2],
  ...(eatmydata ? [["(a) under eatmydata: no fsync (diagnostic)", S.e]] : []),
];
const w = Math.max(...rows.map((r) => r[0].length));
console.log(
  `== import-oci: debootstrap --variant=minbase bookworm, ${layers.length} umoci layers (gzip), ` +
    `${MB(layers.reduce((s, l) => s + l.size, 0))} MB compressed, ${MB(tarBytes.reduce((s, n) => s + n, 0))} MB of tar, ` +
    `${members.reduce((s, n) => s + n, 0)} tar members`,
);
for (const [i, l] of layers.entries()) console.log(`   layer ${i + 1}: ${MB(l.size)} MB gzip, ${MB(tarBytes[i])} MB tar, ${members[i]} members`);
console.log(`${"path".padEnd(w)}  median s  best s  peak RSS`);
for (const [name, s] of rows) console.log(`${name.padEnd(w)}  ${s.median.toFixed(2).padStart(8)}  ${s.best.toFixed(2).padStart(6)}  ${s.rss.toFixed(0).padStart(5)} MB`);
const ratio = (x, y) => `${(x.median / y.median).toFixed(2)} (best ${(x.best / y.best).toFixed(2)})`;
console.log(`ratio (a)/(b) = ${ratio(S.a, S.b)}; (a)/(c) = ${ratio(S.a, S.c)}   (below 1: import-oci is faster)`);
if (eatmydata) console.log(`without syncing (diagnostic): (a)/(b) = ${ratio(S.e, S.b)}; (a)/(c) = ${ratio(S.e, S.c)}`);
console.log(`digest (a) import-oci:                    ${[...digests.a].join(" ")}${digests.a.size > 1 ? "  (NOT stable between runs)" : ""}`);
console.log(`digest compute-id of umoci-unpacked tree: ${digestB}  ${digestB === digestA ? "(equal to (a))" : "(DIFFERS from (a))"}`);
if (digestB !== digestA) {
  const d = diffSummary(digestA, path.join(BUNDLE, "rootfs"));
  console.log(`   cfsctl diff (a) vs that tree: ${d.count} lines (tree minus image): ${d.kinds}`);
}
const dSrc = digestSrc === digestA ? { count: 0, kinds: "none" } : diffSummary(digestA, path.join(cache, "oci", "bundle", "rootfs"));
console.log(`digest compute-id of the source tree:     ${digestSrc}  ${digestSrc === digestA ? "(equal to (a))" : "(differs from (a))"}`);
if (digestSrc !== digestA) console.log(`   cfsctl diff (a) vs the tree the layers were made from: ${dSrc.count} lines (tree minus image): ${dSrc.kinds}`);
console.log(
  `digest (c) create-image of the tar tree:  ${[...digests.c][0]}  (not the image's tree: whiteouts not applied; ` +
    `${digests.c.size} distinct in ${runs + 1} runs: tar leaves the extraction time on some directories)`,
);
console.log(
  [
    `notes: median and best of ${runs} runs after one warm-up round, warm page cache (not dropped: the machine is shared);`,
    `  each run writes to new directories and nothing is deleted until all are timed (on ext4 without a journal, files`,
    `  created soon after many were deleted cost far more system time; a second run of this script within minutes can still see that);`,
    `  ${gnuTime ? "peak RSS from GNU time (largest process of the command)" : "peak RSS of the cfsctl process (process.resourceUsage); none for umoci and tar"};`,
    `  import-oci and create-image sync the filesystem (syncfs) and fsync the image,`,
    `  umoci and tar do not sync${eatmydata ? "; eatmydata turns those calls into no-ops" : ""};`,
    `  (c) leaves whiteout files in place and the removed /usr/share/doc in the tree;`,
    `  umoci writes mtimes rounded to the nearest second, a directory scan truncates them: "mtime -1 s" lines are that;`,
    `  this machine: ${(await import("node:os")).cpus().length} cores, shared with other work, so times vary between runs.`,
  ].join("\n"),
);
fs.rmSync(scratch, { recursive: true, force: true });
fs.rmSync(old, { recursive: true, force: true });
