/**
 * Reading images back (src/erofs/reader.ts) and the commands built on it:
 * every upstream asset reads back to exactly what `composefs-info dump` and
 * `composefs-info objects` printed for it, the dump parses and writes back
 * to the same image, and the CLI keeps its output and error contract.
 */
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import { collectPayloads, imageObjectDigests } from "../src/cli/commands/read.js";
import { parseDumpfile } from "../src/dumpfile/parse.js";
import { dumpfileToString } from "../src/dumpfile/write.js";
import { dumpImage, readImage } from "../src/erofs/reader.js";
import { writeImage } from "../src/erofs/writer.js";
import { S_IFDIR, type Inode } from "../src/model/inode.js";
import { CfsError } from "../src/util/errors.js";
import { ASSETS, NOT_STRICT, ROOT, assetDump, assetVersion, cfsctl, tmpdir } from "./helpers.js";

const work = tmpdir("cfsctl-reader-");

/** The assets composefs-info was run on (every one that is not should-fail). */
function readableAssets(): string[] {
  return fs
    .readdirSync(ASSETS)
    .filter((f) => f.endsWith(".info-dump.gz"))
    .map((f) => f.slice(0, -".info-dump.gz".length))
    .sort();
}

function versionOpts(name: string): { minVersion?: number; maxVersion?: number } {
  const v = assetVersion(name);
  return v === undefined ? {} : { minVersion: v, maxVersion: v };
}

function assetImage(name: string): Buffer {
  const root = parseDumpfile(assetDump(name), { strict: !NOT_STRICT.has(name), source: name });
  return writeImage(root, versionOpts(name)).image;
}

function dumpText(img: Buffer): string {
  const parts: Buffer[] = [];
  dumpImage(img, (c) => parts.push(c));
  return Buffer.concat(parts).toString("latin1");
}

function objectsText(root: Inode): string {
  const set = new Set<string>();
  collectPayloads(root, set);
  return [...set]
    .sort()
    .map((p) => p + "\n")
    .join("");
}

function imageOf(dump: string, opts: { minVersion?: number; maxVersion?: number } = {}): Buffer {
  return writeImage(parseDumpfile(Buffer.from(dump, "latin1"), {}), opts).image;
}

const ROOT_LINE = "/ 4096 40755 2 0 0 0 0.0 - - -\n";

describe("upstream assets read back like composefs-info", () => {
  const names = readableAssets();
  it("finds the assets", () => expect(names.length).toBe(12));
  for (const name of names) {
    it(name, () => {
      const img = assetImage(name);
      const want = zlib.gunzipSync(fs.readFileSync(path.join(ASSETS, `${name}.info-dump.gz`))).toString("latin1");
      const root = readImage(img);
      const dump = dumpfileToString(root);
      expect(dump === want, "readImage + writeDumpfile = composefs-info dump").toBe(true);
      expect(dumpText(img) === want, "dumpImage = composefs-info dump").toBe(true);
      expect(objectsText(root)).toBe(fs.readFileSync(path.join(ASSETS, `${name}.objects`), "latin1"));
      // The dump is a faithful description: it writes the same image again.
      const again = writeImage(parseDumpfile(Buffer.from(dump, "latin1"), { strict: true, source: "dump" }), versionOpts(name)).image;
      expect(again.equals(img), "dump → mkcomposefs gives the same image").toBe(true);
    });
  }
});

describe("the tree readImage builds", () => {
  it("makes later paths of an inode hardlink entries, depth-first in dirent order", () => {
    const img = imageOf(
      ROOT_LINE +
        "/a 4096 40755 2 0 0 0 0.0 - - -\n" +
        "/a/f 5 100644 2 0 0 0 0.0 - hello - user.x=1\n" +
        "/b 0 @100644 0 0 0 0 0.0 /a/f - -\n" +
        "/c 0 @100644 0 0 0 0 0.0 /a/f - -\n",
    );
    const root = readImage(img);
    const [a, b, c] = root.entries!;
    expect(a!.name.toString()).toBe("a");
    expect(a!.hardlink).toBe(false);
    const f = a!.inode.entries![0]!;
    expect(f.hardlink).toBe(false);
    expect(b!.hardlink).toBe(true);
    expect(c!.hardlink).toBe(true);
    expect(b!.inode).toBe(f.inode);
    expect(c!.inode).toBe(f.inode);
    expect(f.inode.content!.toString()).toBe("hello");
    expect(f.inode.xattrs.map((x) => `${x.key}=${x.value}`)).toEqual(["user.x=1"]);
  });

  it("gives every field as composefs-info does (V2 of FORMAT §11)", () => {
    const img = imageOf(
      "/ 4096 40755 2 0 0 0 1000.0 - - - security.selinux=sys\\x00\n" +
        "/a\\x20b 5 100644 1 0 0 0 1000.0 - hello - user.x=1\n" +
        "/big 100000 100644 1 0 0 0 1000.0 01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef security.selinux=sys\\x00\n" +
        "/dev 0 20644 1 0 0 259 1000.5 - - -\n" +
        "/dir 4096 40755 2 1000 1000 0 1000.0 - - - trusted.overlay.opaque=y\n" +
        "/dir/link 7 120777 1 0 0 0 1000.0 /target - -\n" +
        "/hl 0 @100644 0 0 0 0 0.0 /big - -\n",
      { maxVersion: 0 },
    );
    const want =
      "/ 4096 40755 3 0 0 0 1000.0 - - - security.selinux=sys\\x00\n" +
      "/a\\x20b 5 100644 1 0 0 0 1000.0 - hello - user.x=1\n" +
      "/big 100000 100644 1 0 0 0 1000.0 01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef security.selinux=sys\\x00\n" +
      "/dev 0 20644 1 0 0 259 1000.5 - - -\n" +
      "/dir 43 40755 2 1000 1000 0 1000.0 - - - trusted.overlay.opaque=y\n" +
      "/dir/link 7 120777 1 0 0 0 1000.0 /target - -\n" +
      "/hl 100000 @100644 1 0 0 0 1000.0 /big - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef security.selinux=sys\\x00\n";
    expect(dumpfileToString(readImage(img))).toBe(want);
    expect(dumpText(img)).toBe(want);
  });

  it("turns whiteouts back into char devices 0/0 and drops the overlay markers (v1)", () => {
    const img = imageOf(ROOT_LINE + "/d 4096 40755 2 0 0 0 0.0 - - -\n/d/gone 0 20000 1 0 0 0 0.0 - - -\n");
    const want = "/ 4096 40755 3 0 0 0 0.0 - - -\n/d 43 40755 2 0 0 0 0.0 - - - trusted.overlay.opaque=x user.overlay.opaque=x\n/d/gone 0 20000 1 0 0 0 0.0 - - -\n";
    expect(dumpfileToString(readImage(img))).toBe(want);
    expect(dumpText(img)).toBe(want);
  });

  it("unescapes trusted.overlay.whiteout on anything but a regular file, as composefs-info does", () => {
    // The writer escapes it to trusted.overlay.overlay.whiteout; only a regular file becomes a whiteout.
    const img = imageOf(ROOT_LINE + "/d 4096 40755 2 0 0 0 0.0 - - - trusted.overlay.whiteout=\n/s 1 120777 1 0 0 0 0.0 x - - trusted.overlay.whiteout=1\n");
    const want = "/ 4096 40755 3 0 0 0 0.0 - - -\n/d 27 40755 2 0 0 0 0.0 - - - trusted.overlay.whiteout=\n/s 1 120777 1 0 0 0 0.0 x - - trusted.overlay.whiteout=1\n";
    expect(dumpText(img)).toBe(want);
    expect(dumpfileToString(readImage(img))).toBe(want);
  });

  it("turns a regular file with it into a whiteout; inline content left as an empty field, as composefs-info prints it", () => {
    const img = imageOf(ROOT_LINE + "/f 3 100644 1 0 0 0 0.0 - abc - trusted.overlay.whiteout=\n/g 0 100644 1 0 0 0 0.0 - - - trusted.overlay.whiteout=\n");
    const want = "/ 4096 40755 2 0 0 0 0.0 - - -\n/f 0 20644 1 0 0 0 0.0 -  -\n/g 0 20644 1 0 0 0 0.0 - - -\n";
    expect(dumpText(img)).toBe(want);
    expect(dumpfileToString(readImage(img))).toBe(want);
  });

  it("keeps negative and huge numbers exact", () => {
    const img = imageOf(
      "/ 4096 40755 2 0 0 0 -5.3 - - -\n" +
        "/big 9001899274941000 100644 70000 4000000000 70000 0 -9000000000000000000.999999999 - - -\n" +
        "/n 0 100644 1 0 0 0 1.5 - - -\n",
    );
    const text = dumpText(img);
    expect(text).toContain("/big 9001899274941000 100644 70000 4000000000 70000 0 -9000000000000000000.999999999 - - -\n");
    expect(text).toContain("/n 0 100644 1 0 0 0 1.5 - - -\n");
    expect(dumpfileToString(readImage(img))).toBe(text);
  });

  it("reads a dirent naming a directory again as a hardlink, not a loop", () => {
    const tree =
      ROOT_LINE +
      "/d 4096 40755 2 0 0 0 0.0 - - -\n" +
      "/d/f 0 100644 1 0 0 0 0.0 - - -\n" +
      "/d/up 0 @100644 0 0 0 0 0.0 /d - -\n" +
      "/l 0 @100644 0 0 0 0 0.0 /d - -\n";
    const img = imageOf(tree);
    const root = readImage(img);
    const d = root.entries![0]!.inode;
    expect(d.type).toBe(S_IFDIR);
    expect(d.entries!.map((e) => [e.name.toString(), e.hardlink])).toEqual([
      ["f", false],
      ["up", true],
    ]);
    expect(d.entries![1]!.inode).toBe(d);
    expect(root.entries![1]!.inode).toBe(d);
    // As composefs-info prints it.
    const want =
      "/ 4096 40755 3 0 0 0 0.0 - - -\n" +
      "/d 54 40755 2 0 0 0 0.0 - - -\n" +
      "/d/f 0 100644 1 0 0 0 0.0 - - -\n" +
      "/d/up 54 @40755 2 0 0 0 0.0 /d - -\n" +
      "/l 54 @40755 2 0 0 0 0.0 /d - -\n";
    expect(dumpText(img)).toBe(want);
    expect(dumpfileToString(root)).toBe(want);
  });

  it("prints a hardlink to the root with an empty target, as composefs-info does", () => {
    const img = imageOf(ROOT_LINE + "/d 4096 40755 2 0 0 0 0.0 - - -\n/d/l 0 @100644 0 0 0 0 0.0 / - -\n");
    expect(dumpText(img)).toBe("/ 4096 40755 3 0 0 0 0.0 - - -\n/d 40 40755 2 0 0 0 0.0 - - -\n/d/l 4096 @40755 3 0 0 0 0.0  - -\n");
    const root = readImage(img);
    expect(root.entries![0]!.inode.entries![0]!.inode).toBe(root);
  });

  it("prints what the image holds where composefs-info reads oddly", () => {
    // A redirect of a multiple of 4 bytes: upstream over-reads two bytes past it (FORMAT pitfall 27).
    const redirect = imageOf(ROOT_LINE + "/f 100 100644 1 0 0 0 0.0 abc - -\n");
    expect(dumpText(redirect)).toContain("/f 100 100644 1 0 0 0 0.0 abc - -\n");
    // A 4-byte xattr entry (empty suffix and value) at the end of the body: upstream skips it.
    const acl = imageOf(ROOT_LINE + "/f 0 100644 1 0 0 0 0.0 - - - security.a=1 system.posix_acl_default=\n");
    expect(dumpText(acl)).toContain("/f 0 100644 1 0 0 0 0.0 - - - security.a=1 system.posix_acl_default=\n");
    expect(dumpfileToString(readImage(acl))).toBe(dumpText(acl));
  });

  it("filters the root's entries", () => {
    const img = imageOf(ROOT_LINE + "/a 0 100644 1 0 0 0 0.0 - - -\n/b 4096 40755 2 0 0 0 0.0 - - -\n/b/x 0 100644 1 0 0 0 0.0 - - -\n/c 0 100644 1 0 0 0 0.0 - - -\n");
    const root = readImage(img, { filter: [Buffer.from("b"), Buffer.from("x")] });
    expect(root.entries!.map((e) => e.name.toString())).toEqual(["b"]);
    expect(root.entries![0]!.inode.entries!.map((e) => e.name.toString())).toEqual(["x"]);
  });

  it("rejects what is not a composefs image", () => {
    expect(() => readImage(Buffer.alloc(100))).toThrow(CfsError);
    expect(() => readImage(Buffer.alloc(8192))).toThrow(/bad composefs magic/);
    const img = imageOf(ROOT_LINE);
    const v2 = Buffer.from(img);
    v2.writeUInt32LE(2, 4);
    expect(() => readImage(v2)).toThrow(/header version 2/);
    const bs = Buffer.from(img);
    bs[1024 + 12] = 13;
    expect(() => readImage(bs)).toThrow(/block size/);
    expect(() => readImage(img.subarray(0, img.length - 4096))).toThrow(/truncated/);
  });

  it("refuses an inode that holds an xattr name twice (the kernel gives the first value, composefs-info prints the last)", () => {
    // Two names, then twenty (past 16 names the check keeps a set): a later name made an earlier one.
    const cases: [number, string, string][] = [
      [2, "k01val01", "k00"],
      [20, "k19val19", "k00"],
      [20, "k03val03", "k01"],
    ];
    for (const [n, from, to] of cases) {
      const two = (i: number) => String(i).padStart(2, "0");
      const xattrs = Array.from({ length: n }, (_, i) => `user.k${two(i)}=val${two(i)}`).join(" ");
      const img = Buffer.from(imageOf(ROOT_LINE + `/f 0 100644 1 0 0 0 0.0 - - - ${xattrs}\n`));
      expect(readImage(img).entries![0]!.inode.xattrs.length).toBe(n);
      const at = img.indexOf(from);
      expect(at).toBeGreaterThan(0);
      img.write(to, at, "latin1");
      expect(() => readImage(img)).toThrow(new RegExp(`corrupt image: xattr user\\.${to} appears twice \\(nid \\d+, at /f\\)`));
    }
  });
});

describe("image-objects", () => {
  it("lists the object digests, sorted and once each", () => {
    const d1 = "ab".repeat(32);
    const d2 = "01".repeat(32);
    const img = imageOf(
      ROOT_LINE +
        `/x 100 100644 1 0 0 0 0.0 ${d1.slice(0, 2)}/${d1.slice(2)} - ${d1}\n` +
        `/y 100 100644 1 0 0 0 0.0 ${d2.slice(0, 2)}/${d2.slice(2)} - ${d2}\n` +
        `/z 100 100644 1 0 0 0 0.0 ${d1.slice(0, 2)}/${d1.slice(2)} - ${d1}\n` +
        "/i 3 100644 1 0 0 0 0.0 - abc -\n",
    );
    expect(imageObjectDigests(readImage(img))).toEqual([d2, d1]);
  });

  it("refuses a payload that is not an object path", () => {
    const img = imageOf(ROOT_LINE + "/x 100 100644 1 0 0 0 0.0 some/file - -\n");
    expect(() => imageObjectDigests(readImage(img))).toThrow(/\/x refers to 'some\/file', which is not an object path/);
  });
});

describe("the read commands", () => {
  const name = "special.dump";
  let img = "";
  beforeAll(() => {
    ensureBuilt();
    img = path.join(work, `${name}.img`);
    fs.writeFileSync(img, assetImage(name));
  });

  it("cfsctl dump prints what composefs-info dump printed", () => {
    const res = cfsctl(["dump", img]);
    expect(res.stderr).toBe("");
    expect(res.status).toBe(0);
    expect(res.stdout.equals(zlib.gunzipSync(fs.readFileSync(path.join(ASSETS, `${name}.info-dump.gz`))))).toBe(true);
    const info = cfsctl(["info", "dump", img, img]);
    expect(info.status).toBe(0);
    expect(info.stdout.equals(Buffer.concat([res.stdout, res.stdout]))).toBe(true);
  });

  it("a missing image: exit 1 and one error line", () => {
    const res = cfsctl(["dump", path.join(work, "nope.img")]);
    expect(res.status).toBe(1);
    expect(res.stdout.length).toBe(0);
    expect(res.stderr).toMatch(/^cfsctl: error: open .*nope\.img: No such file or directory\n$/);
  });

  it("a corrupt image: exit 1, one error line naming it, no output", () => {
    const bad = Buffer.from(fs.readFileSync(img));
    bad.writeUInt32LE(0xffffffff, 36 * 32 + 8); // the root directory's i_size
    const p = path.join(work, "bad.img");
    fs.writeFileSync(p, bad);
    for (const args of [["dump", p], ["info", "ls", p], ["info", "objects", p], ["image-objects", p]]) {
      const res = cfsctl(args);
      expect(res.status, args.join(" ")).toBe(1);
      expect(res.stdout.length).toBe(0);
      expect(res.stderr).toMatch(/^cfsctl: error: .*bad\.img: corrupt image: [^\n]*\n$/);
    }
  });

  it("info ls, objects and missing-objects", () => {
    const digest = "0123456789abcdef".repeat(4);
    const obj = `${digest.slice(0, 2)}/${digest.slice(2)}`;
    const other = "ff/" + "e".repeat(62);
    const p = path.join(work, "ls.img");
    fs.writeFileSync(
      p,
      imageOf(
        ROOT_LINE +
          "/c\\x20d 3 120777 1 0 0 0 0.0 x\\x20y - -\n" +
          "/d 4096 40755 2 0 0 0 0.0 - - -\n" +
          `/ext 100 100644 1 0 0 0 0.0 ${obj} - ${digest}\n` +
          "/h 0 @100644 0 0 0 0 0.0 /ext - -\n" +
          "/in 2 100644 1 0 0 0 0.0 - hi -\n" +
          "/link 7 120777 1 0 0 0 0.0 /target - -\n" +
          `/z 100 100644 1 0 0 0 0.0 ${other} - -\n`,
      ),
    );
    const ls = cfsctl(["info", "ls", p]);
    expect(ls.status).toBe(0);
    expect(ls.stdout.toString()).toBe(
      `/c d\t-> x\\x20y\n/d/\t\n/ext\t@ ${obj}\n/h\n/in\n/link\t-> /target\n/z\t@ ${other}\n`,
    );
    const objects = cfsctl(["info", "objects", p]);
    expect(objects.stdout.toString()).toBe(`${obj}\n${other}\n`);
    const base = path.join(work, "objects");
    fs.mkdirSync(path.join(base, obj.slice(0, 2)), { recursive: true });
    fs.writeFileSync(path.join(base, obj), "");
    for (const args of [
      ["info", "missing-objects", `--basedir=${base}`, p],
      ["info", `--basedir=${base}`, "missing-objects", p],
    ]) {
      const missing = cfsctl(args);
      expect(missing.status).toBe(0);
      expect(missing.stdout.toString()).toBe(`${other}\n`);
    }
    const noBase = cfsctl(["info", "missing-objects", p]);
    expect(noBase.status).toBe(2);
    // A --basedir that cannot be opened fails every image command first, as composefs-info does.
    for (const cmd of ["ls", "dump", "objects", "missing-objects"]) {
      for (const [bad, why] of [
        [path.join(work, "no-such-dir"), "No such file or directory"],
        [p, "Not a directory"],
      ]) {
        const r = cfsctl(["info", `--basedir=${bad}`, cmd, p]);
        expect(r.status, cmd).toBe(1);
        expect(r.stdout.length).toBe(0);
        expect(r.stderr.toString()).toBe(`cfsctl: error: Can't open basedir ${bad}: ${why}\n`);
      }
    }
    const imageObjects = cfsctl(["image-objects", p]);
    expect(imageObjects.status).toBe(0);
    expect(imageObjects.stdout.toString()).toBe(`${digest}\n${"ff" + "e".repeat(62)}\n`);
  });
});

/** The CLI runs the compiled program: build it when dist/ is older than the sources it needs. */
function ensureBuilt(): void {
  const pairs = [
    ["src/erofs/reader.ts", "dist/erofs/reader.js"],
    ["src/cli/commands/read.ts", "dist/cli/commands/read.js"],
    ["src/cli/commands/info.ts", "dist/cli/commands/info.js"],
    ["src/cli/main.ts", "dist/cli/main.js"],
  ];
  const stale = pairs.some(([src, out]) => {
    const o = path.join(ROOT, out!);
    return !fs.existsSync(o) || fs.statSync(o).mtimeMs < fs.statSync(path.join(ROOT, src!)).mtimeMs;
  });
  if (!stale) return;
  try {
    execFileSync("npx", ["tsc", "-p", "tsconfig.json"], { cwd: ROOT, stdio: "ignore" });
  } catch {
    // tsc still emits when another file has a type error; the tests below tell.
  }
}

describe("info missing-objects below a long basedir", () => {
  it("finds an object whose joined path is longer than PATH_MAX, as fstatat from the basedir does", () => {
    const work = tmpdir();
    const seg = "c".repeat(200);
    const payload = `${Array(19).fill(seg).join("/")}/${"f".repeat(101)}`;
    const base = path.join(work, "b".repeat(200));
    fs.mkdirSync(base);
    // Made one level at a time (relative): the whole path is too long for one call.
    const made = spawnSync(process.execPath, ["-e", `process.chdir(process.argv[1]); const c = process.argv[2].split("/"); for (const d of c.slice(0, -1)) { fs.mkdirSync(d); process.chdir(d); } fs.writeFileSync(c[c.length - 1], "")`, base, payload]);
    expect(made.status, made.stderr.toString()).toBe(0);
    const img = path.join(work, "long.img");
    fs.writeFileSync(img, imageOf(`${ROOT_LINE}/f 100 100644 1 0 0 0 0.0 ${payload} - -\n`));
    expect(Buffer.byteLength(`${base}/${payload}`)).toBeGreaterThan(4095);
    const r = cfsctl(["info", "missing-objects", `--basedir=${base}`, img]);
    expect(r.stderr.toString()).toBe("");
    expect(r.stdout.toString()).toBe("");
    spawnSync("rm", ["-rf", work]);
  });
});
