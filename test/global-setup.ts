/** One temporary directory for a whole test run, removed at its end. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";

export default function setup(): () => void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cfsctl-tests-"));
  process.env.CFSCTL_TEST_TMP = dir;
  return () => {
    // A failed test may leave a mount behind: unmount before removing.
    const mounts = fs.readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "");
    for (const m of mounts.filter((m) => m.startsWith(dir)).reverse()) spawnSync("umount", ["-l", m]);
    fs.rmSync(dir, { recursive: true, force: true });
  };
}
