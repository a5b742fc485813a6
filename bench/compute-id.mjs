// compute-id on large trees against a C hashing floor (fsverity digest of
// every file, two processes), mkfs.erofs (a C tool writing an EROFS from a
// directory) and, when found, upstream mkcomposefs --print-digest-only.
// Warm cache (one warm-up run), median of RUNS runs.
// Usage: node bench/compute-id.mjs [DIR…]   (default /usr/share /usr; RUNS=3)
import { CFSCTL, OUT, findPeer, measure, report } from "./lib.mjs";

const dirs = process.argv.slice(2).length ? process.argv.slice(2) : ["/usr/share", "/usr"];
const runs = Number(process.env.RUNS ?? 3);
const mkcomposefs = findPeer("mkcomposefs");
const mkfsErofs = findPeer("mkfs.erofs");
const fsverity = findPeer("fsverity");
for (const dir of dirs) {
  console.log(`== ${dir}`);
  const rows = [];
  const ours = measure(`node ${CFSCTL} compute-id --selinux off ${dir} > /dev/null`, { runs });
  rows.push({ name: "cfsctl compute-id", ...ours });
  if (fsverity) {
    const floor = measure(`find ${dir} -xdev -type f -print0 | xargs -0 -P2 ${fsverity} digest > /dev/null`, { runs });
    rows.push({ name: "fsverity digest floor (-P2)", ...floor });
    rows[0].ratio = ours.seconds / floor.seconds;
  }
  if (mkcomposefs) {
    const c = measure(`${mkcomposefs} --print-digest-only ${dir} > /dev/null`, { runs });
    rows.push({ name: "upstream mkcomposefs --print-digest-only", ...c, ratio: ours.seconds / c.seconds });
  }
  if (mkfsErofs) {
    const e = measure(`${mkfsErofs} --quiet ${OUT}/mkfs.img ${dir} > /dev/null`, { runs });
    rows.push({ name: "mkfs.erofs", ...e, ratio: ours.seconds / e.seconds });
  }
  report(rows);
  console.log("(ratio: cfsctl time / peer time)");
}
