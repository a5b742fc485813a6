/**
 * cfsctl diff: every field that differs is reported, one line each, between
 * dumpfiles, images (files and repository refs) and real directories;
 * identical inputs print nothing and exit 0.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { diffTrees, formatDiff } from "../src/tree/diff.js";
import { Inode, S_IFDIR } from "../src/model/inode.js";
import { cfsctl, isRoot, tmpdir } from "./helpers.js";

const DIGEST_A = "a".repeat(64);
const DIGEST_B = "b".repeat(64);
const PAYLOAD_A = `aa/${"a".repeat(62)}`;
const PAYLOAD_B = `bb/${"b".repeat(62)}`;

/** One line per entry, so that a case can replace one line. */
const BASE: Record<string, string> = {
  "/": "/ 0 40755 4 0 0 0 1000.0 - - -",
  "/a": "/a 5 100644 1 0 0 0 1000.0 - hello - user.x=1",
  "/big": `/big 100 100644 1 0 0 0 1000.0 ${PAYLOAD_A} - ${DIGEST_A}`,
  "/dev": "/dev 0 40755 2 0 0 0 1000.0 - - -",
  "/dev/null": "/dev/null 0 20666 1 0 0 259 1000.0 - - -",
  "/dir": "/dir 0 40755 2 0 0 0 1000.0 - - -",
  "/dir/f": "/dir/f 3 100600 2 1 2 0 1000.0 - abc -",
  "/dir/g": "/dir/g 0 @120000 0 0 0 0 0.0 /dir/f - -",
  "/link": "/link 2 120777 1 0 0 0 1000.0 /a - -",
};

function dumpText(change: Record<string, string | null> = {}): string {
  const lines = { ...BASE, ...change };
  return (
    Object.keys(lines)
      .sort()
      .map((k) => lines[k])
      .filter((l): l is string => l !== null)
      .join("\n") + "\n"
  );
}

function write(dir: string, name: string, text: string | Buffer): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
}

/** Lines on stdout, and the status (checked to be 1, with an empty stderr, when lines are expected). */
function diffLines(a: string, b: string, extra: string[] = []): string[] {
  const r = cfsctl([...extra, "diff", a, b]);
  const lines = r.stdout.toString().split("\n").filter((l) => l !== "");
  expect(r.stderr).toBe("");
  expect(r.status).toBe(lines.length > 0 ? 1 : 0);
  return lines;
}

/** field change -> what diff must print, exactly. */
const DUMPFILE_CASES: Array<[string, Record<string, string | null>, string[]]> = [
  ["type", { "/dev/null": "/dev/null 0 10666 1 0 0 0 1000.0 - - -" }, ["~ /dev/null type char-device -> fifo"]],
  ["mode", { "/a": "/a 5 100600 1 0 0 0 1000.0 - hello - user.x=1" }, ["~ /a mode 0644 -> 0600"]],
  ["setuid bit", { "/a": "/a 5 104644 1 0 0 0 1000.0 - hello - user.x=1" }, ["~ /a mode 0644 -> 4644"]],
  ["uid", { "/a": "/a 5 100644 1 1000 0 0 1000.0 - hello - user.x=1" }, ["~ /a uid 0 -> 1000"]],
  ["gid", { "/a": "/a 5 100644 1 0 27 0 1000.0 - hello - user.x=1" }, ["~ /a gid 0 -> 27"]],
  ["size", { "/big": `/big 200 100644 1 0 0 0 1000.0 ${PAYLOAD_A} - ${DIGEST_A}` }, ["~ /big size 100 -> 200"]],
  ["mtime", { "/a": "/a 5 100644 1 0 0 0 1001.0 - hello - user.x=1" }, ["~ /a mtime 1000 -> 1001"]],
  ["mtime nanoseconds", { "/a": "/a 5 100644 1 0 0 0 1000.5 - hello - user.x=1" }, ["~ /a mtime 1000 -> 1000.000000005"]],
  ["rdev", { "/dev/null": "/dev/null 0 20666 1 0 0 261 1000.0 - - -" }, ["~ /dev/null rdev 259 -> 261"]],
  ["symlink target", { "/link": "/link 4 120777 1 0 0 0 1000.0 /big - -" }, ["~ /link target /a -> /big"]],
  ["content digest", { "/big": `/big 100 100644 1 0 0 0 1000.0 ${PAYLOAD_A} - ${DIGEST_B}` }, [`~ /big content digest:${DIGEST_A} -> digest:${DIGEST_B}`]],
  ["payload", { "/big": `/big 100 100644 1 0 0 0 1000.0 ${PAYLOAD_B} - ${DIGEST_A}` }, [`~ /big payload ${PAYLOAD_A} -> ${PAYLOAD_B}`]],
  ["inline content", { "/a": "/a 5 100644 1 0 0 0 1000.0 - hellp - user.x=1" }, ["~ /a content inline:hello -> inline:hellp"]],
  ["inline content with spaces", { "/a": "/a 5 100644 1 0 0 0 1000.0 - he\\x20lo - user.x=1" }, ["~ /a content inline:hello -> inline:he\\x20lo"]],
  ["xattr added", { "/a": "/a 5 100644 1 0 0 0 1000.0 - hello - user.x=1 user.y=2" }, ["~ /a xattr added user.y=2"]],
  ["xattr removed", { "/a": "/a 5 100644 1 0 0 0 1000.0 - hello -" }, ["~ /a xattr removed user.x=1"]],
  ["xattr changed", { "/a": "/a 5 100644 1 0 0 0 1000.0 - hello - user.x=2" }, ["~ /a xattr changed user.x=1 -> user.x=2"]],
  ["xattr emptied", { "/a": "/a 5 100644 1 0 0 0 1000.0 - hello - user.x=" }, ["~ /a xattr changed user.x=1 -> user.x="]],
  ["nlink", { "/a": "/a 5 100644 3 0 0 0 1000.0 - hello - user.x=1" }, ["~ /a nlink 1 -> 3"]],
  [
    "hardlink broken",
    { "/dir/f": "/dir/f 3 100600 1 1 2 0 1000.0 - abc -", "/dir/g": "/dir/g 3 100600 1 1 2 0 1000.0 - abc -" },
    ["~ /dir/f nlink 2 -> 1", "~ /dir/g nlink 2 -> 1", "~ /dir/g hardlink /dir/f -> (none)"],
  ],
  ["only in A", { "/link": null }, ["- /link"]],
  ["only in B", { "/new": "/new 0 100644 1 0 0 0 1000.0 - - -" }, ["+ /new"]],
  ["only in A, a subtree", { "/dev": null, "/dev/null": null }, ["- /dev", "- /dev/null"]],
  [
    "escaped name",
    { "/sp\\x20ace": "/sp\\x20ace 0 100644 1 0 0 0 1000.0 - - -" },
    ["+ /sp\\x20ace"],
  ],
];

describe("cfsctl diff of dumpfiles", () => {
  const dir = tmpdir("cfsctl-diff-");
  const base = write(dir, "base.dump", dumpText());

  it("identical inputs print nothing and exit 0", () => {
    const copy = write(dir, "copy.dump", dumpText());
    const r = cfsctl(["diff", base, copy]);
    expect(r.stdout.toString()).toBe("");
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(diffLines(base, base)).toEqual([]);
  });

  for (const [name, change, expected] of DUMPFILE_CASES) {
    it(`reports ${name}`, () => {
      const other = write(dir, `${name.replace(/\W/g, "_")}.dump`, dumpText(change));
      expect(diffLines(base, other)).toEqual(expected);
    });
  }

  it("reports the other direction with - and + swapped", () => {
    const other = write(dir, "swap.dump", dumpText({ "/link": null, "/new": "/new 0 100644 1 0 0 0 1000.0 - - -" }));
    expect(diffLines(base, other)).toEqual(["- /link", "+ /new"]);
    expect(diffLines(other, base)).toEqual(["+ /link", "- /new"]);
  });

  it("lists paths in byte order, several fields of one entry on their own lines", () => {
    const other = write(
      dir,
      "many.dump",
      dumpText({
        "/a": "/a 5 100600 1 7 8 0 1000.0 - hello - user.x=1",
        "/a-b": "/a-b 0 100644 1 0 0 0 1000.0 - - -",
        "/dir/f": "/dir/f 3 100644 2 1 2 0 1000.0 - abc -",
      }),
    );
    expect(diffLines(base, other)).toEqual([
      "~ /a mode 0644 -> 0600",
      "~ /a uid 0 -> 7",
      "~ /a gid 0 -> 8",
      "+ /a-b",
      "~ /dir/f mode 0600 -> 0644",
      "~ /dir/g mode 0600 -> 0644",
    ]);
  });

  it("--json gives the same differences", () => {
    const other = write(dir, "json.dump", dumpText({ "/a": "/a 5 100644 1 0 0 0 1000.0 - hello - user.y=2", "/link": null }));
    const r = cfsctl(["diff", "--json", base, other]);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout.toString())).toEqual([
      {
        path: "/a",
        change: "changed",
        fields: [
          { field: "xattr", key: "user.x", a: "1", b: null },
          { field: "xattr", key: "user.y", a: null, b: "2" },
        ],
      },
      { path: "/link", change: "removed" },
    ]);
    const same = cfsctl(["diff", "--json", base, base]);
    expect(same.status).toBe(0);
    expect(JSON.parse(same.stdout.toString())).toEqual([]);
  });

  it("reads an image file and standard input, and an image equals its dumpfile", () => {
    const image = path.join(dir, "base.cfs");
    const mk = cfsctl(["mkcomposefs", "--from-file", base, image]);
    expect(mk.stderr).toBe("");
    expect(mk.status).toBe(0);
    expect(diffLines(image, base)).toEqual([]);
    const other = write(dir, "img-other.dump", dumpText({ "/a": "/a 5 100644 1 0 0 0 1000.0 - hellp - user.x=1" }));
    const r = cfsctl(["diff", image, "-"], { input: fs.readFileSync(other) });
    expect(r.stdout.toString()).toBe("~ /a content inline:hello -> inline:hellp\n");
    expect(r.status).toBe(1);
    const fromStdin = cfsctl(["diff", "-", base], { input: fs.readFileSync(image) });
    expect(fromStdin.stdout.toString()).toBe("");
    expect(fromStdin.status).toBe(0);
  });

  it("a failure is one error line, nothing on stdout, exit 1; a usage error exits 2", () => {
    const missing = cfsctl(["diff", base, path.join(dir, "missing")]);
    expect(missing.status).toBe(1);
    expect(missing.stdout.toString()).toBe("");
    expect(missing.stderr).toMatch(/^cfsctl: error: .*missing: No such file or directory\n$/);

    const bad = write(dir, "bad.dump", "/ 0 40755 2 0 0 0 nonsense - - -\n");
    const r = cfsctl(["diff", base, bad]);
    expect(r.status).toBe(1);
    expect(r.stdout.toString()).toBe("");
    expect(r.stderr).toMatch(/^cfsctl: error: .*bad\.dump.*\n$/);
    expect(r.stderr.split("\n").length).toBe(2);

    const corrupt = Buffer.from(fs.readFileSync(path.join(dir, "base.cfs")));
    corrupt.fill(0xff, 64, 1200);
    const c = cfsctl(["diff", base, write(dir, "corrupt.cfs", corrupt)]);
    expect(c.status).toBe(1);
    expect(c.stdout.toString()).toBe("");
    expect(c.stderr).toMatch(/^cfsctl: error: .*corrupt\.cfs/);

    expect(cfsctl(["diff", base]).status).toBe(2);
    expect(cfsctl(["diff", "-", "-"]).status).toBe(2);
    expect(cfsctl(["diff", "--selinux", "maybe", base, base]).status).toBe(2);
  });
});

// ------------------------------------------------------------------ directories

const T = 1_700_000_000;

/** Every entry's mtime (symlinks' own) set to T, deepest first, so only a case's own change shows. */
function fixMtimes(root: string): void {
  const rec = (p: string) => {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) rec(path.join(p, n));
    fs.lutimesSync(p, T, T);
  };
  rec(root);
}

function setXattr(p: string, name: string, value: string | null): void {
  const args = value === null ? ["-x", name, p] : ["-n", name, "-v", value, p];
  const r = spawnSync("setfattr", args);
  if (r.error || r.status !== 0) throw new Error(`setfattr ${args.join(" ")}: ${r.error?.message ?? r.stderr}`);
}

const hasSetfattr = spawnSync("setfattr", ["--version"]).error === undefined;

/** The same tree each time: /a (inline, user.x=1), /big (external), /dir/f = /dir/g, /link, /fifo, /dev/null as root. */
function makeTree(root: string): void {
  fs.mkdirSync(root);
  fs.writeFileSync(path.join(root, "a"), "hello", { mode: 0o644 });
  fs.chmodSync(path.join(root, "a"), 0o644);
  if (hasSetfattr) setXattr(path.join(root, "a"), "user.x", "1");
  fs.writeFileSync(path.join(root, "big"), Buffer.alloc(100, 0x61));
  fs.chmodSync(path.join(root, "big"), 0o644);
  fs.mkdirSync(path.join(root, "dir"));
  fs.chmodSync(path.join(root, "dir"), 0o755);
  fs.writeFileSync(path.join(root, "dir", "f"), "abc");
  fs.chmodSync(path.join(root, "dir", "f"), 0o600);
  fs.linkSync(path.join(root, "dir", "f"), path.join(root, "dir", "g"));
  fs.symlinkSync("a", path.join(root, "link"));
  sh("mkfifo", ["-m", "0644", path.join(root, "fifo")]);
  if (isRoot) {
    fs.mkdirSync(path.join(root, "dev"));
    fs.chmodSync(path.join(root, "dev"), 0o755);
    sh("mknod", ["-m", "0666", path.join(root, "dev", "null"), "c", "1", "3"]);
  }
  fixMtimes(root);
}

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args);
  if (r.error || r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.error?.message ?? r.stderr}`);
}

interface DirCase {
  name: string;
  /** Changes the copy; mtimes are reset to T afterwards unless `keepMtimes`. */
  change: (root: string) => void;
  expected: Array<string | RegExp>;
  needs?: "root" | "setfattr";
  keepMtimes?: boolean;
}

const DIR_CASES: DirCase[] = [
  {
    name: "type",
    change: (r) => {
      fs.unlinkSync(path.join(r, "fifo"));
      fs.writeFileSync(path.join(r, "fifo"), "");
      fs.chmodSync(path.join(r, "fifo"), 0o644);
    },
    expected: ["~ /fifo type fifo -> file"],
  },
  { name: "mode", change: (r) => fs.chmodSync(path.join(r, "a"), 0o600), expected: ["~ /a mode 0644 -> 0600"] },
  { name: "uid", needs: "root", change: (r) => fs.lchownSync(path.join(r, "a"), 1234, 0), expected: ["~ /a uid 0 -> 1234"] },
  { name: "gid", needs: "root", change: (r) => fs.lchownSync(path.join(r, "a"), 0, 4321), expected: ["~ /a gid 0 -> 4321"] },
  {
    name: "size",
    change: (r) => fs.appendFileSync(path.join(r, "big"), Buffer.alloc(100, 0x61)),
    expected: ["~ /big size 100 -> 200", /^~ \/big content digest:[0-9a-f]{64} -> digest:[0-9a-f]{64}$/],
  },
  {
    name: "mtime",
    keepMtimes: true,
    // Older than the rest: the root keeps the newest mtime of the tree.
    change: (r) => fs.lutimesSync(path.join(r, "a"), T - 100, T - 100),
    expected: [`~ /a mtime ${T} -> ${T - 100}`],
  },
  {
    name: "mtime of the newest entry (the root follows it)",
    keepMtimes: true,
    change: (r) => fs.lutimesSync(path.join(r, "big"), T + 5, T + 5),
    expected: [`~ / mtime ${T} -> ${T + 5}`, `~ /big mtime ${T} -> ${T + 5}`],
  },
  {
    name: "rdev",
    needs: "root",
    change: (r) => {
      fs.unlinkSync(path.join(r, "dev", "null"));
      sh("mknod", ["-m", "0666", path.join(r, "dev", "null"), "c", "1", "5"]);
    },
    expected: ["~ /dev/null rdev 259 -> 261"],
  },
  {
    name: "symlink target",
    change: (r) => {
      fs.unlinkSync(path.join(r, "link"));
      fs.symlinkSync("big", path.join(r, "link"));
    },
    expected: ["~ /link target a -> big"],
  },
  {
    name: "content digest",
    change: (r) => {
      const b = Buffer.alloc(100, 0x61);
      b[99] = 0x62;
      fs.writeFileSync(path.join(r, "big"), b);
    },
    expected: [/^~ \/big content digest:[0-9a-f]{64} -> digest:[0-9a-f]{64}$/],
  },
  { name: "inline content", change: (r) => fs.writeFileSync(path.join(r, "a"), "hellp"), expected: ["~ /a content inline:hello -> inline:hellp"] },
  { name: "xattr added", needs: "setfattr", change: (r) => setXattr(path.join(r, "a"), "user.y", "2"), expected: ["~ /a xattr added user.y=2"] },
  { name: "xattr removed", needs: "setfattr", change: (r) => setXattr(path.join(r, "a"), "user.x", null), expected: ["~ /a xattr removed user.x=1"] },
  {
    name: "xattr changed",
    needs: "setfattr",
    change: (r) => setXattr(path.join(r, "a"), "user.x", "2"),
    expected: ["~ /a xattr changed user.x=1 -> user.x=2"],
  },
  {
    name: "hardlink broken (nlink)",
    change: (r) => {
      fs.unlinkSync(path.join(r, "dir", "g"));
      fs.copyFileSync(path.join(r, "dir", "f"), path.join(r, "dir", "g"));
      fs.chmodSync(path.join(r, "dir", "g"), 0o600);
    },
    expected: ["~ /dir/f nlink 2 -> 1", "~ /dir/g nlink 2 -> 1", "~ /dir/g hardlink /dir/f -> (none)"],
  },
  {
    name: "one more hardlink (nlink)",
    change: (r) => fs.linkSync(path.join(r, "dir", "f"), path.join(r, "dir", "h")),
    expected: ["~ /dir/f nlink 2 -> 3", "~ /dir/g nlink 2 -> 3", "+ /dir/h"],
  },
  { name: "only in A", change: (r) => fs.unlinkSync(path.join(r, "link")), expected: ["- /link"] },
  { name: "only in B", change: (r) => fs.writeFileSync(path.join(r, "new"), ""), expected: ["+ /new"] },
];

describe("cfsctl diff of directories", () => {
  const dir = tmpdir("cfsctl-diff-dir-");
  const base = path.join(dir, "base");
  makeTree(base);

  it("identical trees print nothing and exit 0 (sub-second mtimes do not count, as in an image)", () => {
    const same = path.join(dir, "same");
    makeTree(same);
    fs.lutimesSync(path.join(same, "a"), T + 0.25, T + 0.25);
    expect(diffLines(base, same)).toEqual([]);
  });

  let n = 0;
  for (const c of DIR_CASES) {
    const skip = (c.needs === "root" && !isRoot) || (c.needs === "setfattr" && !hasSetfattr);
    if (skip) console.log(`diff test "${c.name}" skipped: needs ${c.needs === "root" ? "root" : "setfattr (Debian attr)"}`);
    it.skipIf(skip)(`reports ${c.name}`, () => {
      const other = path.join(dir, `case${n++}`);
      makeTree(other);
      c.change(other);
      if (!c.keepMtimes) fixMtimes(other);
      const lines = diffLines(base, other);
      expect(lines.length).toBe(c.expected.length);
      c.expected.forEach((e, i) => (typeof e === "string" ? expect(lines[i]).toBe(e) : expect(lines[i]).toMatch(e)));
    });
  }

  it("compares a directory with an image in the repository (refs/NAME and digest) and with its dumpfile", () => {
    const repo = path.join(dir, "repo");
    const created = cfsctl(["--repo", repo, "create-image", "--name", "base", base]);
    expect(created.status).toBe(0);
    const digest = created.stdout.toString().trim();
    expect(digest).toMatch(/^[0-9a-f]{64}$/);
    expect(diffLines("refs/base", base, ["--repo", repo])).toEqual([]);
    expect(diffLines(digest, base, ["--repo", repo])).toEqual([]);

    const dump = cfsctl(["create-dumpfile", base]);
    expect(dump.status).toBe(0);
    const dumpPath = write(dir, "base-tree.dump", dump.stdout);
    expect(diffLines(dumpPath, base)).toEqual([]);

    const other = path.join(dir, "vs-repo");
    makeTree(other);
    fs.chmodSync(path.join(other, "big"), 0o640);
    fixMtimes(other);
    expect(diffLines("refs/base", other, ["--repo", repo])).toEqual(["~ /big mode 0644 -> 0640"]);

    // Whiteouts: the image marks their directories opaque=x; a directory scan has no such xattrs.
    const wh = path.join(dir, "whiteouts");
    fs.mkdirSync(path.join(wh, "d"), { recursive: true });
    fs.writeFileSync(path.join(wh, "f"), "x");
    const mk = spawnSync("sh", ["-c", 'mknod "$1/wh" c 0 0 && mknod "$1/d/wh" c 0 0', "sh", wh]);
    if (mk.status !== 0) {
      console.log(`diff of whiteouts not checked: mknod refused (${mk.stderr})`);
    } else {
      expect(cfsctl(["--repo", repo, "create-image", "--name", "wh", wh]).status).toBe(0);
      expect(diffLines("refs/wh", wh, ["--repo", repo])).toEqual([]);
      const image = cfsctl(["--repo", repo, "dump", "refs/wh"]).stdout.toString();
      expect(image).toMatch(/^\/d \d+ 40755 .* trusted\.overlay\.opaque=x user\.overlay\.opaque=x$/m);
      // A value the image cannot keep (the writer sets x) is still a difference.
      spawnSync("setfattr", ["-n", "user.overlay.opaque", "-v", "y", path.join(wh, "d")]);
      expect(diffLines("refs/wh", wh, ["--repo", repo])).toEqual(["~ /d xattr added user.overlay.opaque=y"]);
    }

    const none = cfsctl(["--repo", repo, "diff", "refs/nothing", base]);
    expect(none.status).toBe(1);
    expect(none.stdout.toString()).toBe("");
    expect(none.stderr).toMatch(/^cfsctl: error: image refs\/nothing not found/);
  });
});

describe("deep trees", () => {
  it("compares trees nested deeper than the call stack goes", () => {
    // diff reads dumpfiles, which may nest any depth (no image holds one
    // past 2048 levels): a recursive walk died at about 9,000 levels. (Every
    // path is kept whole, so memory grows with the square of the depth.)
    const chain = (depth: number, mode: number): Inode => {
      const root = new Inode(S_IFDIR | 0o755);
      let dir = root;
      for (let i = 0; i < depth; i++) {
        const d = new Inode(S_IFDIR | (i === depth - 1 ? mode : 0o755));
        dir.addEntry(Buffer.from("a"), d);
        dir = d;
      }
      return root;
    };
    const diffs = diffTrees(chain(10000, 0o755), chain(10000, 0o700));
    expect(diffs.length).toBe(1);
    expect(formatDiff(diffs).split("/a").length - 1).toBe(10000);
  });
});
