/**
 * The upstream checksum assets: every image cfsctl writes equals the one
 * mkcomposefs writes (tests/test-checksums.sh), and fsck.erofs accepts it.
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseDumpfile } from "../src/dumpfile/parse.js";
import { writeImage, writeImageTo } from "../src/erofs/writer.js";
import { imageDigest } from "../src/erofs/image-digest.js";
import { ASSETS, CLI, NOT_STRICT, assetDump, assetNames, assetVersion, cfsctl, fsckErofs, readText, tmpdir } from "./helpers.js";

const work = tmpdir();

describe("mkcomposefs --from-file reproduces the upstream assets", () => {
  const names = assetNames();
  it("finds the assets", () => expect(names.length).toBe(12));
  for (const name of names) {
    it(name, () => {
      const v = assetVersion(name);
      const root = parseDumpfile(assetDump(name), { strict: !NOT_STRICT.has(name), source: name });
      const { image } = writeImage(root, v === undefined ? {} : { minVersion: v, maxVersion: v });
      const want = readText(path.join(ASSETS, `${name}.sha256`)).trim().split(/\s+/)[0];
      expect(createHash("sha256").update(image).digest("hex")).toBe(want);
      expect(imageDigest(image).toString("hex") + "\n").toBe(readText(path.join(ASSETS, `${name}.digest`)));
      const p = path.join(work, `${name}.img`);
      fs.writeFileSync(p, image);
      fsckErofs(p);
      // Streamed through small windows (mkcomposefs and compute-id stream
      // the image): the same bytes, whatever falls on a window's end.
      // (Padding before an inode that starts past a window's end was once
      // lost: 256 bytes short on /usr/share with the 1 MiB window.)
      for (const windowSize of [4096, 4096 + 32, 5000, 65536]) {
        const chunks: Buffer[] = [];
        const opts = v === undefined ? { windowSize } : { minVersion: v, maxVersion: v, windowSize };
        const { size } = writeImageTo(root, opts, (c) => chunks.push(Buffer.from(c)));
        const streamed = Buffer.concat(chunks);
        expect(size).toBe(image.length);
        expect(streamed.equals(image), `window ${windowSize}`).toBe(true);
      }
      // Pairs found through the string map a flooded pair table turns to: the same bytes.
      const viaStrings = writeImage(root, v === undefined ? { maxProbes: 0 } : { minVersion: v, maxVersion: v, maxProbes: 0 }).image;
      expect(viaStrings.equals(image)).toBe(true);
    });
  }
});

describe("the mkcomposefs command", () => {
  it("writes the image and prints the digest, as upstream", () => {
    const out = path.join(work, "special.cli.img");
    const res = cfsctl(["mkcomposefs", "--from-file", "--print-digest", "--min-version=0", "--max-version=0", path.join(ASSETS, "special.dump"), out], {
      env: { CFS_PARSE_STRICT: "1" },
    });
    expect(res.stderr).toBe("");
    expect(res.status).toBe(0);
    expect(res.stdout.toString()).toBe(readText(path.join(ASSETS, "special.dump.digest")));
    const want = readText(path.join(ASSETS, "special.dump.sha256")).trim().split(/\s+/)[0];
    expect(createHash("sha256").update(fs.readFileSync(out)).digest("hex")).toBe(want);
    fsckErofs(out);
  });

  it("reads the dumpfile from stdin and writes the image to stdout", () => {
    const name = "cs9-x86_64-minimal.dump.gz";
    const res = cfsctl(["mkcomposefs", "--from-file", "-", "-"], { input: assetDump(name) });
    expect(res.status).toBe(0);
    const want = readText(path.join(ASSETS, `${name}.sha256`)).trim().split(/\s+/)[0];
    expect(createHash("sha256").update(res.stdout).digest("hex")).toBe(want);
  });

  it("--print-digest-only writes nothing and refuses an IMAGE argument", () => {
    const res = cfsctl(["mkcomposefs", "--from-file", "--print-digest-only", path.join(ASSETS, "bigfile.dump")]);
    expect(res.status).toBe(0);
    expect(res.stdout.toString()).toBe(readText(path.join(ASSETS, "bigfile.dump.digest")));
    const both = cfsctl(["mkcomposefs", "--from-file", "--print-digest-only", path.join(ASSETS, "bigfile.dump"), path.join(work, "x")]);
    expect(both.status).toBe(2);
    expect(fs.existsSync(path.join(work, "x"))).toBe(false);
  });

  it("picks format version 1 for whiteouts unless --max-version=0", () => {
    const dump = "/ 4096 40755 2 0 0 0 0.0 - - -\n/d 4096 40755 2 0 0 0 0.0 - - -\n/d/gone 0 20000 1 0 0 0 0.0 - - -\n";
    const v1 = cfsctl(["mkcomposefs", "--from-file", "--print-digest-only", "-"], { input: dump });
    expect(v1.stdout.toString()).toBe("5d278fc5517ea036314cb8bd0ffe881ab022183d85e4748b284cd68b93c864bd\n");
    const out = path.join(work, "v0.img");
    const v0 = cfsctl(["mkcomposefs", "--from-file", "--max-version=0", "-", out], { input: dump });
    expect(v0.status).toBe(0);
    expect(createHash("sha256").update(fs.readFileSync(out)).digest("hex")).toBe(
      "68cdbbd03000f3e79694d8d00abf8c348a1c2ff9fd60edab9870fc7be4541f6b",
    );
    // Option values out of range are usage errors, before anything is read or written.
    for (const args of [["--min-version=2"], ["--max-version=-1"], ["--min-version=1x"], ["--threads=0"], ["--threads=abc"]]) {
      const bad = cfsctl(["mkcomposefs", "--from-file", ...args, "-", out], { input: dump });
      expect(bad.status, args.join(" ")).toBe(2);
      expect(bad.stderr).toMatch(/^cfsctl: Invalid (min version|max version|threads count) [^\n]*\nUsage: cfsctl mkcomposefs /);
    }
  });

  it("writes into an IMAGE that is a symlink, a file of several names, a FIFO or a device, as upstream, instead of replacing it", () => {
    const work = tmpdir();
    const dump = path.join(ASSETS, "special.dump");
    const want = cfsctl(["mkcomposefs", "--from-file", dump, "-"]).stdout;
    const to = (name: string) => cfsctl(["mkcomposefs", "--from-file", dump, path.join(work, name)]);
    fs.writeFileSync(path.join(work, "target"), "old");
    fs.symlinkSync("target", path.join(work, "link"));
    expect(to("link").status).toBe(0);
    expect(fs.lstatSync(path.join(work, "link")).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(path.join(work, "target")).equals(want)).toBe(true);
    fs.linkSync(path.join(work, "target"), path.join(work, "second-name"));
    fs.writeFileSync(path.join(work, "target"), "old again");
    expect(to("target").status).toBe(0);
    expect(fs.readFileSync(path.join(work, "second-name")).equals(want)).toBe(true);
    // A plain file of one name is replaced atomically (a failed run leaves the old one).
    fs.writeFileSync(path.join(work, "plain"), "old");
    expect(to("plain").status).toBe(0);
    expect(fs.readFileSync(path.join(work, "plain")).equals(want)).toBe(true);
    const fifo = path.join(work, "fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    const reader = spawnSync("sh", ["-c", `cat "$1" > "$2" & "$3" "$4" mkcomposefs --from-file "$5" "$1"; wait`, "sh", fifo, path.join(work, "from-fifo"), process.execPath, CLI, dump]);
    expect(reader.status, reader.stderr.toString()).toBe(0);
    expect(fs.readFileSync(path.join(work, "from-fifo")).equals(want)).toBe(true);
    expect(fs.lstatSync(fifo).isFIFO()).toBe(true);
    const dev = path.join(work, "null");
    if (spawnSync("mknod", ["-m", "666", dev, "c", "1", "3"]).status !== 0) return console.log("device target not checked: mknod refused");
    expect(to("null").status).toBe(0);
    expect(fs.lstatSync(dev).isCharacterDevice()).toBe(true);
    const full = path.join(work, "full");
    expect(spawnSync("mknod", ["-m", "666", full, "c", "1", "7"]).status).toBe(0);
    const r = to("full");
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^cfsctl: error: [^\n]*No space left on device\n$/);
    expect(fs.lstatSync(full).isCharacterDevice()).toBe(true);
  });

  it("leaves no image behind when the input is bad", () => {
    const out = path.join(work, "never.img");
    const res = cfsctl(["mkcomposefs", "--from-file", path.join(ASSETS, "should-fail-too-big.dump"), out]);
    expect(res.status).toBe(1);
    expect(res.stderr).toBe("cfsctl: error: cannot write file: File too large (/bigfile: 9500000000000000 bytes)\n");
    expect(fs.readdirSync(work).filter((f) => f.startsWith("never"))).toEqual([]);
  });
});

describe("directory nesting", () => {
  /** A dumpfile of `levels` directories, each in the one before, and a file at the bottom. */
  const nested = (levels: number) => {
    let dump = "/ 0 40755 2 0 0 0 0.0 - - -\n";
    let p = "";
    for (let i = 0; i < levels; i++) dump += `${(p += "/d")} 0 40755 2 0 0 0 0.0 - - -\n`;
    return dump + `${p}/f 1 100644 1 0 0 0 0.0 - x -\n`;
  };

  it("2047 levels below the root write and read back; 2048 are refused by the writer as by the reader", () => {
    const work = tmpdir();
    // fsck.erofs (like composefs-info) overflows its stack at about 1000 levels: it checks a shallower one.
    const shallower = path.join(work, "500.img");
    expect(cfsctl(["mkcomposefs", "--from-file", "-", shallower], { input: nested(500) }).status).toBe(0);
    fsckErofs(shallower);
    const img = path.join(work, "deep.img");
    const ok = cfsctl(["mkcomposefs", "--from-file", "-", img], { input: nested(2047) });
    expect(ok.status, ok.stderr).toBe(0);
    const back = cfsctl(["dump", img]);
    expect(back.status, back.stderr).toBe(0);
    expect(back.stdout.toString().split("\n").length).toBe(2047 + 3);
    // Written again from its own dump: the same bytes.
    const again = cfsctl(["mkcomposefs", "--from-file", "-", "-"], { input: back.stdout });
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout.equals(fs.readFileSync(img))).toBe(true);
    const bad = cfsctl(["mkcomposefs", "--from-file", "-", path.join(work, "deeper.img")], { input: nested(2048) });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toBe("cfsctl: error: cannot write file: directories nest deeper than 2048 levels\n");
    expect(fs.existsSync(path.join(work, "deeper.img"))).toBe(false);
  });
});

describe("should-fail assets are refused with one line naming the problem", () => {
  const expected: Record<string, string> = {
    "should-fail-big-inline.dump": "Inline content size 5004 exceeds maximum 5000",
    "should-fail-dir-hardlink.dump": "Directories can't be hardlinked",
    "should-fail-dot-name.dump": "Invalid . or .. in path: /.",
    "should-fail-dotdot-name.dump": "Invalid . or .. in path: /..",
    "should-fail-empty-link-name.dump": "Invalid symlink",
    "should-fail-empty-name.dump": "Can't add child",
    "should-fail-empty-xattr-key.dump": "Can't set xattr",
    "should-fail-honggfuzz-long-xattr.dump": "Can't set xattr",
    "should-fail-long-link.dump": "Invalid symlink",
    "should-fail-long-xattr-key.dump": "Too many xattrs",
    "should-fail-long-xattr-value.dump": "Invalid mode 644",
    "should-fail-no-ftype.dump": "Invalid mode 0",
    "should-fail-self-hardlink.dump": "Self-referential hardlink /037blockdev",
    "should-fail-too-big.dump": "cannot write file: File too large",
  };
  const files = fs.readdirSync(ASSETS).filter((f) => f.startsWith("should-fail-"));
  it("has all 14", () => expect(files.sort()).toEqual(Object.keys(expected).sort()));
  for (const f of files) {
    for (const strict of [false, true]) {
      it(`${f}${strict ? " (strict)" : ""}`, () => {
        const out = path.join(work, `${f}.img`);
        const res = cfsctl(["mkcomposefs", "--from-file", path.join(ASSETS, f), out], { env: strict ? { CFS_PARSE_STRICT: "1" } : {} });
        expect(res.status).toBe(1);
        const lines = res.stderr.split("\n").filter((l) => l.length > 0);
        expect(lines.length).toBe(1);
        expect(lines[0]).toMatch(/^cfsctl: error: /);
        // Strict parsing stops earlier at a missing final newline.
        const unterminated = !fs.readFileSync(path.join(ASSETS, f)).toString("latin1").endsWith("\n");
        expect(lines[0]).toContain(strict && unterminated ? "Missing trailing newline" : expected[f]);
        expect(fs.existsSync(out)).toBe(false);
      });
    }
  }
});

describe("a root whose inline tail would cross a block", () => {
  it("is moved on, and the superblock names its nid (42, not 36), as mkcomposefs writes it", () => {
    // Root xattrs of 2.7 KB and two 255-byte names: the inode, its xattrs and
    // its 586-byte dirent tail do not fit between offset 1152 and the end of
    // block 0, so padding puts the root at 1344.
    const dump =
      `/ 4096 40755 2 0 0 0 0.0 - - - user.a=${"v".repeat(2700)}\n` +
      `/${"y".repeat(255)} 0 100644 1 0 0 0 0.0 - - -\n` +
      `/${"z".repeat(255)} 0 100644 1 0 0 0 0.0 - - -\n`;
    const img = writeImage(parseDumpfile(Buffer.from(dump))).image;
    // sha256 of what upstream mkcomposefs (composefs 6fc335c) writes for this dumpfile.
    expect(createHash("sha256").update(img).digest("hex")).toBe("bb432871b34711e985e91f2bdac5117a1a13d83a2cf3da1d60e6974e8e9e5d5a");
    expect(img.readUInt16LE(1024 + 14)).toBe(42);
    const file = path.join(work, "root-moved.img");
    fs.writeFileSync(file, img);
    fsckErofs(file);
    const back = cfsctl(["dump", file]);
    expect(back.status, back.stderr).toBe(0);
    expect(back.stdout.toString()).toBe(dump.replace("/ 4096 40755 2", "/ 4363 40755 2"));
  });
});

describe("the xattr budget of what the writer adds", () => {
  // Upstream rewrites a copy of the tree whose xattr estimate starts at 0
  // (lcfs_node_clone): the overlay xattrs it adds are budgeted alone, and
  // replacing an xattr the copy never counted takes the estimate below zero
  // (a wrapped size_t). sha256 values: upstream mkcomposefs (composefs
  // 6fc335c) on the same dumpfiles.
  const digest = "b0fb44a8078cc2d7d91ede6d16dfe63943613e6286bd7c49efd0223940d51229";
  const root = "/ 4096 40755 2 0 0 0 0.0 - - -\n";
  const sha = (dump: string) => createHash("sha256").update(writeImage(parseDumpfile(Buffer.from(dump))).image).digest("hex");

  it("an external file with 32 KB of its own xattrs still gets metacopy and redirect", () => {
    const dump = `${root}/f 100 100644 1 0 0 0 0.0 b0/${digest.slice(2)} - ${digest} user.big=${"a".repeat(32600)}\n`;
    expect(sha(dump)).toBe("ba6599ef4243ce758d3d7e0cc774a247b780f5fc34a50831cd6a8614773ecca6");
  });

  it("a directory with 32 KB of its own xattrs still gets the whiteout markers", () => {
    const dump = `${root}/d 4096 40755 2 0 0 0 0.0 - - - user.big=${"a".repeat(32700)}\n/d/w 0 20000 1 0 0 0 0.0 - - -\n`;
    expect(sha(dump)).toBe("807aa01871896bc07dea737699f337e5f8c6d9a22d68444e603ed3b0e090d2fe");
  });

  it("a whiteout's own trusted.overlay.whiteout is replaced; with another xattr beside it, upstream refuses it", () => {
    expect(sha(`${root}/w 0 20000 1 0 0 0 0.0 - - - trusted.overlay.whiteout=1\n`)).toBe("0a8c1c7e18062c3cd1feead743a7166bbcb5daf16a3a57b0d996261d857f6168");
    expect(() => sha(`${root}/w 0 20000 1 0 0 0 0.0 - - - trusted.overlay.whiteout=1 trusted.overlay.a=1\n`)).toThrow(
      "cannot write file: Numerical result out of range",
    );
  });

  it("the error names the inode, escaped as in a dumpfile, in one line", () => {
    const dump = `${root}/d\\x0a 4096 40755 2 0 0 0 0.0 - - -\n/d\\x0a/w 0 20000 1 0 0 0 0.0 - - - trusted.overlay.whiteout=1 trusted.overlay.a=1\n`;
    const r = cfsctl(["mkcomposefs", "--from-file", "-", "--print-digest-only"], { input: dump });
    expect(r.status).toBe(1);
    expect(r.stderr.toString()).toBe(
      "cfsctl: error: cannot write file: Numerical result out of range (/d\\n/w: its xattrs and those the image adds exceed 32767 bytes)\n",
    );
  });
});
