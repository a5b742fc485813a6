// compute-id of a ~100k-entry tree with and without an SELinux policy in it
// (the real Debian MLS policy of fixtures/selinux): what relabelling adds.
// Usage: node bench/selinux-compute-id.mjs   (RUNS=3)
import fs from "node:fs";
import path from "node:path";
import { CFSCTL, OUT, ROOT, measure, report } from "./lib.mjs";

const runs = Number(process.env.RUNS ?? 3);
const base = path.join(OUT, "selinux-tree");
fs.rmSync(base, { recursive: true, force: true });
const plain = path.join(base, "plain");
const dirs = ["usr/bin", "usr/lib/x86_64-linux-gnu", "usr/share/doc", "usr/share/locale", "etc", "var/lib/dpkg/info", "usr/libexec", "opt/app"];
let n = 0;
for (let d = 0; n < 100_000; d++) {
  const dir = path.join(plain, dirs[d % dirs.length], `pkg${d}`);
  fs.mkdirSync(dir, { recursive: true });
  n++;
  for (let f = 0; f < 40 && n < 100_000; f++, n++) fs.writeFileSync(path.join(dir, `file${f}${f % 3 ? ".so" : ".conf"}`), `x${f}`);
}
const labelled = path.join(base, "labelled");
fs.cpSync(plain, labelled, { recursive: true });
fs.cpSync(path.join(ROOT, "fixtures/selinux/policy/etc"), path.join(labelled, "etc"), { recursive: true });
const without = measure(`node ${CFSCTL} compute-id ${plain} > /dev/null`, { runs });
const withPolicy = measure(`node ${CFSCTL} compute-id ${labelled} > /dev/null`, { runs });
report([
  { name: `compute-id, no policy (${n} entries)`, ...without },
  { name: "compute-id, with the MLS policy", ...withPolicy, ratio: withPolicy.seconds / without.seconds },
]);
console.log(`relabelling adds ${(((withPolicy.seconds - without.seconds) / without.seconds) * 100).toFixed(1)} %`);
fs.rmSync(base, { recursive: true, force: true });
