/**
 * makeDirs (mkdir -p): what fs.mkdirSync's recursive mode does, except that
 * a path it cannot make is an error, never an endless loop (Node 20 loops
 * forever under /proc).
 */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { makeDirs } from "../src/util/make-dirs.js";
import { cfsctl, tmpdir } from "./helpers.js";

const work = tmpdir();

describe("makeDirs", () => {
  it("makes missing parents and returns the first directory it made", () => {
    const deep = path.join(work, "a", "b", "c");
    expect(makeDirs(deep, 0o750)).toBe(path.join(work, "a"));
    expect(fs.statSync(deep).isDirectory()).toBe(true);
    expect(makeDirs(deep)).toBeUndefined();
    expect(makeDirs(path.join(work, "a", "b", "d"))).toBe(path.join(work, "a", "b", "d"));
  });

  it("a file in the way is an error", () => {
    fs.writeFileSync(path.join(work, "file"), "x");
    expect(() => makeDirs(path.join(work, "file"))).toThrow(/EEXIST/);
    expect(() => makeDirs(path.join(work, "file", "sub"))).toThrow(/ENOTDIR/);
  });

  it("a path under /proc is an error, not a hang", () => {
    expect(() => makeDirs("/proc/cfsctl-no-such/dir")).toThrow(/ENOENT/);
    for (const args of [["--repo", "/proc/cfsctl-no-such", "init"], ["mkcomposefs", "--digest-store=/proc/cfsctl-no-such", work, path.join(work, "o.img")]]) {
      const r = cfsctl(args, { timeout: 20_000 });
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/^cfsctl: error: .*\/proc\/cfsctl-no-such: No such file or directory\n$/);
    }
  });
});
