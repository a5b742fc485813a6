import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { FsVerityHasher, fsverityDigest, useNativeBlockHashing } from "../src/fsverity/digest.js";
import { loadCfsNative } from "../src/util/native.js";
import { cfsctl, tmpdir, vectorContent as content, verityVectors } from "./helpers.js";

const rows = verityVectors();

describe("fs-verity digests (fsverity-utils vectors)", () => {
  it("has the vectors", () => expect(rows.length).toBeGreaterThan(10));
  // Data blocks hashed by the native addon (where built) and by crypto.hash().
  const modes = loadCfsNative() !== null ? [true, false] : [false];
  for (const r of rows) for (const nativeBlocks of modes) {
    it(`size ${r.size}: sha256 and sha512 (${nativeBlocks ? "native" : "JavaScript"} block hashing)`, () => {
      useNativeBlockHashing(nativeBlocks);
      const data = content(r.seed, r.size);
      expect(createHash("sha256").update(data).digest("hex")).toBe(r.contentSha256);
      expect(fsverityDigest(data, "sha256").toString("hex")).toBe(r.sha256);
      expect(fsverityDigest(data, "sha512").toString("hex")).toBe(r.sha512);
    });
  }

  for (const nativeBlocks of modes) it(`gives the same digest however the data is split (${nativeBlocks ? "native" : "JavaScript"} block hashing)`, () => {
    useNativeBlockHashing(nativeBlocks);
    const r = rows.find((x) => x.size > 600000 && x.size < 2000000)!;
    const data = content(r.seed, r.size);
    for (const piece of [1, 7, 4095, 4096, 4097, 12293, 65536, 532480]) {
      const h = new FsVerityHasher("sha256");
      for (let o = 0; o < data.length; o += piece) h.update(data.subarray(o, o + piece));
      expect(h.digest().toString("hex")).toBe(r.sha256);
    }
  });

  it("`info measure-file` prints the digests, the empty file's kernel value included", () => {
    const dir = tmpdir();
    const picked = rows.filter((r) => r.size <= 1 << 20);
    const files = picked.map((r, i) => {
      const p = path.join(dir, `f${i}`);
      fs.writeFileSync(p, content(r.seed, r.size));
      return p;
    });
    const res = cfsctl(["info", "measure-file", ...files]);
    expect(res.status).toBe(0);
    expect(res.stdout.toString()).toBe(picked.map((r) => r.sha256 + "\n").join(""));
    expect(picked.some((r) => r.size === 0)).toBe(true);
    const bad = cfsctl(["info", "measure-file", path.join(dir, "missing")]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^cfsctl: error: failed to measure '.*missing': No such file or directory\n$/);
  });
});
