// Runs the suite with vitest and ends with a plain summary line
// ("N passed, N failed, N skipped") that any CI log reader understands.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const results = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "cfsctl-vitest-")), "results.json");
const vitest = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "node_modules", "vitest", "vitest.mjs");
const r = spawnSync(process.execPath, [vitest, "run", "--reporter=default", "--reporter=json", `--outputFile=${results}`, ...process.argv.slice(2)], {
  stdio: "inherit",
});
let summary = null;
try {
  const j = JSON.parse(fs.readFileSync(results, "utf8"));
  summary = `${j.numPassedTests} passed, ${j.numFailedTests} failed, ${j.numPendingTests + j.numTodoTests} skipped`;
} catch {
  /* vitest did not get as far as writing results */
}
fs.rmSync(path.dirname(results), { recursive: true, force: true });
if (summary) console.log(`\n${summary}`);
process.exit(r.status ?? 1);
