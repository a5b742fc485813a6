/**
 * Inputs that never end or are far too large: standard input is parsed as
 * it arrives (a bad line fails at once, whatever follows), a line is never
 * held beyond its error, and a device like /dev/zero is refused rather than
 * read into memory. Every run has a time limit, so a hang fails the test.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { CLI, cfsctl, tmpdir } from "./helpers.js";

const oneError = (r: { status: number; stderr: string }, message: RegExp) => {
  expect(r.status, r.stderr).toBe(1);
  expect(r.stderr).toMatch(/^cfsctl: error: [^\n]+\n$/);
  expect(r.stderr).toMatch(message);
};

/** cfsctl fed by a shell pipeline that never ends by itself. */
function piped(producer: string, args: string): { status: number; stderr: string } {
  const r = spawnSync("sh", ["-c", `${producer} | ${process.execPath} ${CLI} ${args}`], { timeout: 30_000, encoding: "utf8" });
  return { status: r.status ?? -1, stderr: r.stderr };
}

describe("endless or oversized input", () => {
  it("mkcomposefs --from-file - fails at the first bad line of an endless stream", () => {
    oneError(piped("yes '/x 0 100644 1 0 0 0 0.0 - - -'", "mkcomposefs --from-file - --print-digest-only"), /<stdin>:1: Root node not present/);
    oneError(piped("cat /dev/zero", "mkcomposefs --from-file - --print-digest-only"), /<stdin>:1: Invalid embedded NUL character at position 0/);
  });

  it("a line with a NUL byte fails in its first chunk; an endless line at the length limit", () => {
    oneError(cfsctl(["mkcomposefs", "--from-file", "/dev/zero", "--print-digest-only"], { timeout: 30_000 }), /\/dev\/zero:1: Invalid embedded NUL character at position 0/);
    oneError(piped("yes x | tr -d '\\n'", "mkcomposefs --from-file - --print-digest-only"), /<stdin>:1: Line longer than 67108864 bytes/);
  });

  it("a valid dumpfile on standard input still works", () => {
    const r = cfsctl(["mkcomposefs", "--from-file", "-", "--print-digest-only"], { input: "/ 0 40755 2 0 0 0 0.0 - - -\n/a 3 100644 1 0 0 0 0.0 - abc -\n", timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString()).toMatch(/^[0-9a-f]{64}\n$/);
  });

  it("an image or a file to measure that is an endless device is refused", () => {
    for (const args of [["dump", "/dev/zero"], ["image-objects", "/dev/zero"], ["info", "ls", "/dev/zero"], ["info", "measure-file", "/dev/zero"], ["diff", "/dev/zero", "/dev/zero"]]) {
      const r = cfsctl(args, { timeout: 30_000 });
      expect(r.status, `${args.join(" ")}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toMatch(/^cfsctl: error: [^\n]*\/dev\/zero[^\n]*: not (a file, a pipe or a block device|an image, a dumpfile or a directory)\n$/);
    }
  });

  it("an image from a pipe is read, up to its end", () => {
    const mk = cfsctl(["mkcomposefs", "--from-file", "-", "-"], { input: "/ 0 40755 2 0 0 0 0.0 - - -\n/a 3 100644 1 0 0 0 0.0 - abc -\n" });
    expect(mk.status, mk.stderr).toBe(0);
    const r = cfsctl(["dump", "-"], { input: mk.stdout, timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString()).toContain("/a 3 100644 1 0 0 0 0.0 - abc -");
    // A named pipe (bash's process substitution) as an argument, for dump and for diff.
    const img = path.join(tmpdir(), "a.cfs");
    fs.writeFileSync(img, mk.stdout);
    for (const cmd of [`dump <(cat "$2")`, `diff <(cat "$2") "$2"`]) {
      const b = spawnSync("bash", ["-c", `"$0" "$1" ${cmd}`, process.execPath, CLI, img], { timeout: 30_000, encoding: "utf8" });
      expect(b.status, `${cmd}: ${b.stderr}`).toBe(0);
    }
  });
});
