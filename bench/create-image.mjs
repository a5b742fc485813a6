// create-image of a large tree into a fresh repository and into one that
// already holds its objects, against `cp -a` of the tree (the copy floor),
// mkfs.erofs of it and, when found, upstream mkcomposefs --digest-store.
// Usage: node bench/create-image.mjs [DIR]   (default /usr; RUNS=3)
import { execSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { CFSCTL, OUT, findPeer, measure, report } from "./lib.mjs";

const dir = process.argv[2] ?? "/usr";
const runs = Number(process.env.RUNS ?? 3);
const scratch = path.join(OUT, "create-image");
// Every timed run writes into a new directory and nothing is deleted until
// all are timed: a deletion inside the timing (or just before it) would be
// measured too, and on ext4 without a journal creating inodes soon after
// many were deleted costs far more system time (see bench/import-oci.mjs).
// Needs room for (RUNS + 1) copies of DIR per path.
const clean = () => execSync(`rm -rf ${scratch} && mkdir -p ${scratch}`);
clean();
const fresh = (prefix) => `${scratch}/${prefix}-$$`; // sh's pid: one per run
const rows = [];
const first = measure(`node ${CFSCTL} --quiet --repo ${fresh("repo")} create-image --selinux off ${dir} > /dev/null`, { runs });
rows.push({ name: `cfsctl create-image (fresh repository)`, ...first });
execSync(`node ${CFSCTL} --quiet --repo ${scratch}/full create-image --selinux off ${dir} > /dev/null`);
const again = measure(`node ${CFSCTL} --quiet --repo ${scratch}/full create-image --selinux off ${dir} > /dev/null`, { runs });
rows.push({ name: `cfsctl create-image (objects already there)`, ...again });
const cp = measure(`cp -a ${dir} ${fresh("copy")}`, { runs });
rows.push({ name: "cp -a (copy floor)", ...cp });
first.ratio = first.seconds / cp.seconds;
const mkfs = findPeer("mkfs.erofs");
if (mkfs) rows.push({ name: "mkfs.erofs", ...measure(`${mkfs} --quiet ${fresh("mkfs")}.img ${dir} > /dev/null`, { runs }) });
const mkc = findPeer("mkcomposefs");
if (mkc) {
  const c = measure(`${mkc} --digest-store=${fresh("store")} ${dir} ${fresh("c")}.img`, { runs });
  rows.push({ name: "upstream mkcomposefs --digest-store", ...c });
}
report(rows);
console.log(`fresh / cp -a = ${(first.seconds / cp.seconds).toFixed(2)}; second run / fresh = ${(again.seconds / first.seconds).toFixed(2)}`);
fs.rmSync(scratch, { recursive: true, force: true });
