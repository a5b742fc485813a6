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
const clean = () => execSync(`rm -rf ${scratch} && mkdir -p ${scratch}`);
clean();
const rows = [];
const fresh = measure(`rm -rf ${scratch}/repo && node ${CFSCTL} --quiet --repo ${scratch}/repo create-image --selinux off ${dir} > /dev/null`, { runs });
rows.push({ name: `cfsctl create-image (fresh repository)`, ...fresh });
const again = measure(`node ${CFSCTL} --quiet --repo ${scratch}/repo create-image --selinux off ${dir} > /dev/null`, { runs });
rows.push({ name: `cfsctl create-image (objects already there)`, ...again });
const cp = measure(`rm -rf ${scratch}/copy && cp -a ${dir} ${scratch}/copy`, { runs });
rows.push({ name: "cp -a (copy floor)", ...cp });
fresh.ratio = fresh.seconds / cp.seconds;
const mkfs = findPeer("mkfs.erofs");
if (mkfs) rows.push({ name: "mkfs.erofs", ...measure(`${mkfs} --quiet ${scratch}/mkfs.img ${dir} > /dev/null`, { runs }) });
const mkc = findPeer("mkcomposefs");
if (mkc) {
  const c = measure(`rm -rf ${scratch}/store && ${mkc} --digest-store=${scratch}/store ${dir} ${scratch}/c.img`, { runs });
  rows.push({ name: "upstream mkcomposefs --digest-store", ...c });
}
report(rows);
console.log(`fresh / cp -a = ${(fresh.seconds / cp.seconds).toFixed(2)}; second run / fresh = ${(again.seconds / fresh.seconds).toFixed(2)}`);
fs.rmSync(scratch, { recursive: true, force: true });
