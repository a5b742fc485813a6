// cfsctl mkcomposefs --from-file against upstream's C mkcomposefs:
// cs9-x86_64-minimal (an upstream asset) and a generated ~100k-entry dumpfile.
// Usage: node bench/mkcomposefs.mjs   (CFSCTL_PEERS=dir to find mkcomposefs)
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { CFSCTL, OUT, ROOT, findPeer, genDumpfile, measure, report } from "./lib.mjs";

const cs9 = path.join(OUT, "cs9.dump");
fs.writeFileSync(cs9, zlib.gunzipSync(fs.readFileSync(path.join(ROOT, "fixtures/composefs-assets/cs9-x86_64-minimal.dump.gz"))));
const big = path.join(OUT, "100k.dump");
fs.writeFileSync(big, genDumpfile(100_000));
const peer = findPeer("mkcomposefs");
const rows = [];
for (const [label, dump] of [["cs9-x86_64-minimal", cs9], ["100k entries", big]]) {
  const entries = fs.readFileSync(dump, "latin1").split("\n").length - 1;
  const ours = measure(`node ${CFSCTL} mkcomposefs --from-file ${dump} ${OUT}/ours.img`);
  rows.push({ name: `cfsctl mkcomposefs (${label}, ${entries} entries)`, ...ours });
  if (peer) {
    const theirs = measure(`${peer} --from-file ${dump} ${OUT}/theirs.img`);
    rows.push({ name: `upstream mkcomposefs (${label})`, ...theirs });
    rows[rows.length - 2].ratio = ours.seconds / theirs.seconds;
    const same = fs.readFileSync(`${OUT}/ours.img`).equals(fs.readFileSync(`${OUT}/theirs.img`));
    console.log(`${label}: images ${same ? "identical" : "DIFFER"}`);
  }
}
if (!peer) console.log("upstream mkcomposefs not found (set CFSCTL_PEERS): no ratio");
report(rows);
