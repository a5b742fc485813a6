// `npm run bench -- NAME [ARGS…]` runs bench/NAME.mjs with ARGS (after the
// build); without a NAME it lists the benchmarks and what each one times.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const here = import.meta.dirname;
const names = fs
  .readdirSync(here)
  .filter((f) => f.endsWith(".mjs") && f !== "run.mjs" && f !== "lib.mjs")
  .map((f) => f.slice(0, -4))
  .sort();
const [name, ...args] = process.argv.slice(2);

if (name === undefined) {
  console.log("usage: npm run bench -- NAME [ARGS…]\n");
  for (const n of names) {
    // The leading comment of each script says what it times: its first sentence or clause.
    const lines = fs.readFileSync(path.join(here, `${n}.mjs`), "utf8").split("\n");
    let text = "";
    for (const l of lines) {
      if (!l.startsWith("//")) break;
      text += " " + l.replace(/^\/\/\s*/, "");
    }
    const m = /^(.*?[^.]{8})(?:[.:;](?:\s|$)|$)/.exec(text.trim());
    console.log(`  ${n.padEnd(20)} ${(m?.[1] ?? text).trim()}`);
  }
  process.exit(0);
}
if (!names.includes(name)) {
  console.error(`bench: no benchmark ${name} (one of: ${names.join(", ")})`);
  process.exit(2);
}
const r = spawnSync(process.execPath, [path.join(here, `${name}.mjs`), ...args], { stdio: "inherit" });
process.exit(r.status ?? 1);
