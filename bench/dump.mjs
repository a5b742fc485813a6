// cfsctl dump against upstream's composefs-info dump on a generated image of
// about 100k entries (directories of external files of varied sizes, inline
// files, symlinks, xattrs, hardlinks). The image is written with the
// compiled writer (dist/); run `npm run build` first.
// Usage: node bench/dump.mjs [ENTRIES]
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { CFSCTL, OUT, ROOT, findPeer, genDumpfile, measure, report } from "./lib.mjs";

const { parseDumpfile } = await import(path.join(ROOT, "dist/dumpfile/parse.js"));
const { writeImage } = await import(path.join(ROOT, "dist/erofs/writer.js"));

const n = Number(process.argv[2] ?? 100_000);
const image = path.join(OUT, `dump-${n}.img`);
const { image: bytes } = writeImage(parseDumpfile(Buffer.from(genDumpfile(n), "latin1"), {}), {});
fs.writeFileSync(image, bytes);
console.log(`image: ${image} (${bytes.length} bytes, ~${n} entries)`);

const rows = [];
const ours = measure(`node ${CFSCTL} dump ${image} > /dev/null`);
rows.push({ name: "cfsctl dump", ...ours });
const peer = findPeer("composefs-info"); // $CFSCTL_PEERS, then PATH
if (peer) {
  const theirs = measure(`${peer} dump ${image} > /dev/null`);
  rows.push({ name: `composefs-info dump (${peer})`, ...theirs });
  rows[0].ratio = ours.seconds / theirs.seconds;
  const a = execFileSync(process.execPath, [CFSCTL, "dump", image], { maxBuffer: 1 << 30 });
  const b = execFileSync(peer, ["dump", image], { maxBuffer: 1 << 30 });
  console.log(`outputs ${a.equals(b) ? "identical" : "DIFFER"} (${a.length} bytes)`);
} else {
  console.log("peer composefs-info not found (in $CFSCTL_PEERS or on PATH): no ratio");
}
report(rows);
