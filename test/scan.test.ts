/**
 * Scanning directories: `mkcomposefs DIR` against the digests upstream
 * recorded for the generated tree, and the container-image rules of
 * compute-id / create-dumpfile, one by one.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import * as xattr from "fs-xattr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseDumpfile } from "../src/dumpfile/parse.js";
import { CLI, FIXTURES, cfsctl as run, fsckErofs, isRoot, sh, tmpdir } from "./helpers.js";

const TREES = path.join(FIXTURES, "trees");

/**
 * Every scanning test runs with both scanners: the native one (the default
 * where it is built) and the JavaScript one (CFSCTL_NATIVE=0), which must
 * give the same images, digests and errors.
 */
const SCANNERS: { name: string; env: Record<string, string> }[] = [
  { name: "native scanner", env: {} },
  { name: "JavaScript scanner", env: { CFSCTL_NATIVE: "0" } },
];
const workAll = tmpdir();

interface Variant {
  name: string;
  flags: string[];
  digest: string;
  sha256: string;
}
const variants: Variant[] = fs
  .readFileSync(path.join(TREES, "visible", "digests.tsv"), "utf8")
  .trim()
  .split("\n")
  .slice(1)
  .map((l) => {
    const [name, flags, digest, sha256] = l.split("\t");
    return { name: name!, flags: flags ? flags.split(" ") : [], digest: digest!, sha256: sha256! };
  });

if (!isRoot) console.log("generated-tree tests skipped: gen-tree.sh needs root (mknod, chown, trusted.* xattrs)");

describe.skipIf(!isRoot)("mkcomposefs DIR on the generated tree", () => {
  const tree = path.join(workAll, "visible");
  beforeAll(() => {
    execFileSync("bash", [path.join(TREES, "gen-tree.sh"), tree, "visible"], { stdio: "pipe" });
  }, 120_000);

  it("has the variants", () => expect(variants.map((v) => v.name)).toContain("skip-devices"));
  for (const impl of SCANNERS) describe(impl.name, () => {
    const cfsctl = (args: string[], o: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}) => run(args, { ...o, env: { ...impl.env, ...o.env } });
    const work = path.join(workAll, impl.env.CFSCTL_NATIVE === "0" ? "js" : "native");
    beforeAll(() => fs.mkdirSync(work, { recursive: true }));
    for (const v of variants) {
      it(`${v.name}: digest and image bytes`, () => {
        const only = cfsctl(["mkcomposefs", ...v.flags, "--print-digest-only", tree]);
        expect(only.stderr).toBe("");
        expect(only.stdout.toString()).toBe(v.digest + "\n");
        const img = path.join(work, `${v.name}.img`);
        const res = cfsctl(["mkcomposefs", ...v.flags, "--print-digest", tree, img]);
        expect(res.status).toBe(0);
        expect(res.stdout.toString()).toBe(v.digest + "\n");
        expect(createHash("sha256").update(fs.readFileSync(img)).digest("hex")).toBe(v.sha256);
        fsckErofs(img);
      });
    }

    it("the default image equals upstream's byte for byte", () => {
      const want = zlib.gunzipSync(fs.readFileSync(path.join(TREES, "visible", "default.cfs.gz")));
      const img = path.join(work, "default-again.img");
      expect(cfsctl(["mkcomposefs", tree, img]).status).toBe(0);
      expect(fs.readFileSync(img).equals(want)).toBe(true);
    });

    it("--digest-store holds exactly the image's objects", () => {
      const store = path.join(work, "store");
      const img = path.join(work, "stored.img");
      const res = cfsctl(["mkcomposefs", `--digest-store=${store}`, "--threads=1", tree, img]);
      expect(res.stderr).toBe("");
      const listed = fs.readFileSync(path.join(TREES, "visible", "default.objects"), "utf8").trim().split("\n").sort();
      const found: string[] = [];
      for (const d of fs.readdirSync(store)) for (const f of fs.readdirSync(path.join(store, d))) found.push(`${d}/${f}`);
      expect(found.sort()).toEqual(listed);
      // Each object is its file's content: its fs-verity digest is its name.
      const measured = cfsctl(["info", "measure-file", ...listed.slice(0, 5).map((o) => path.join(store, o))]);
      expect(measured.stdout.toString()).toBe(listed.slice(0, 5).map((o) => o.replace("/", "") + "\n").join(""));
    });

    it("--skip-xattrs with --user-xattrs is refused as upstream does", () => {
      const res = cfsctl(["mkcomposefs", "--skip-xattrs", "--user-xattrs", "--print-digest-only", tree]);
      expect(res.status).toBe(1);
      expect(res.stderr).toMatch(/^cfsctl: error: error accessing .*: Invalid argument\n$/);
    });

    it("compute-id is the digest of create-dumpfile's tree, and stable", () => {
      const id1 = cfsctl(["compute-id", tree]);
      expect(id1.status).toBe(0);
      const id2 = cfsctl(["compute-id", tree]);
      expect(id2.stdout.toString()).toBe(id1.stdout.toString());
      const dump = cfsctl(["create-dumpfile", tree]);
      expect(dump.status).toBe(0);
      const fromDump = cfsctl(["mkcomposefs", "--from-file", "--print-digest-only", "-"], { input: dump.stdout, env: { CFS_PARSE_STRICT: "1" } });
      expect(fromDump.stdout.toString()).toBe(id1.stdout.toString());
      // The tree has hardlinks: the container rules keep them.
      const root = parseDumpfile(dump.stdout);
      expect(dump.stdout.toString().split("\n").filter((l) => / @\d/.test(l)).length).toBeGreaterThan(0);
      void root;
    });
  });
});

for (const impl of SCANNERS) describe(`container-image rules (${impl.name})`, () => {
  const cfsctl = (args: string[]) => run(args, { env: impl.env });
  const work = path.join(workAll, `rules-${impl.env.CFSCTL_NATIVE ?? "1"}`);
  let dir: string;
  beforeAll(() => {
    dir = path.join(work, "rules");
    fs.mkdirSync(work, { recursive: true });
    fs.mkdirSync(path.join(dir, "sub"), { recursive: true });
    fs.writeFileSync(path.join(dir, "sub", "small"), "tiny\n");
    fs.writeFileSync(path.join(dir, "big"), Buffer.alloc(10000, 7));
    fs.linkSync(path.join(dir, "big"), path.join(dir, "sub", "big-link"));
    fs.symlinkSync("sub/small", path.join(dir, "link"));
    fs.chmodSync(dir, 0o700);
    fs.utimesSync(path.join(dir, "sub", "small"), 1000, 1_600_000_123.75);
    fs.utimesSync(path.join(dir, "big"), 1000, 1_500_000_000.5);
    fs.lutimesSync(path.join(dir, "link"), 1000, 1_300_000_000);
    fs.utimesSync(path.join(dir, "sub"), 1000, 1_400_000_000.25);
    fs.utimesSync(dir, 1000, 1_700_000_000.5); // the root's own mtime never counts
    if (isRoot) xattr.setAttributeSync(dir, "user.rootattr", "x");
    xattr.setAttributeSync(path.join(dir, "big"), "user.kept", "yes");
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const dumpOf = (args: string[] = []): Map<string, string[]> => {
    const res = cfsctl(["create-dumpfile", ...args, dir]);
    expect(res.stderr).toBe("");
    expect(res.status).toBe(0);
    const m = new Map<string, string[]>();
    for (const line of res.stdout.toString().trim().split("\n")) {
      const f = line.split(" ");
      m.set(f[0]!, f);
    }
    return m;
  };

  it("root is root:root 0555 with the newest other mtime in whole seconds and no xattrs", () => {
    const d = dumpOf();
    const root = d.get("/")!;
    expect(root[2]).toBe("40555");
    expect([root[4], root[5]]).toEqual(["0", "0"]);
    expect(root[7]).toBe("1600000123.0");
    expect(root.length).toBe(11);
  });
  it("mtimes are whole seconds; other xattrs are kept", () => {
    const d = dumpOf();
    expect(d.get("/sub/small")![7]).toBe("1600000123.0");
    expect(d.get("/big")![7]).toBe("1500000000.0");
    expect(d.get("/big")!.slice(11)).toEqual(["user.kept=yes"]);
  });
  it("hardlinks stay one inode with the right nlink", () => {
    const d = dumpOf();
    expect(d.get("/big")![3]).toBe("2");
    expect(d.get("/sub/big-link")![2]).toBe("@100644");
    expect(d.get("/sub/big-link")![8]).toBe("/big");
  });
  it("without a policy security.selinux is dropped; --selinux off keeps it", (ctx) => {
    if (!isRoot) {
      console.log("security.selinux part skipped: needs root to set it");
      ctx.skip();
    }
    xattr.setAttributeSync(path.join(dir, "sub", "small"), "security.selinux", Buffer.from("system_u:object_r:etc_t:s0\0"));
    try {
      expect(dumpOf().get("/sub/small")!.slice(11)).toEqual([]);
      expect(dumpOf(["--selinux", "off"]).get("/sub/small")!.slice(11)).toEqual(["security.selinux=system_u:object_r:etc_t:s0\\x00"]);
    } finally {
      xattr.removeAttributeSync(path.join(dir, "sub", "small"), "security.selinux");
    }
  });
  it("mtimes before 1970 keep their seconds: -0.5 s is -1 s and 500000000 ns, as lstat gives it", () => {
    const old = path.join(work, "pre-epoch");
    fs.mkdirSync(old);
    // The first entry scanned: no mtime seen before it.
    // (fs.utimesSync takes a negative time as "now": touch(1) sets it.)
    fs.writeFileSync(path.join(old, "a"), "a");
    fs.writeFileSync(path.join(old, "b"), "b");
    sh("touch", ["-m", "-d", "1969-12-31 23:59:59.5 UTC", path.join(old, "a")]);
    sh("touch", ["-m", "-d", "1969-12-30 23:59:59.75 UTC", path.join(old, "b")]);
    const raw = cfsctl(["mkcomposefs", "--print-digest-only", old]);
    expect(raw.status, raw.stderr.toString()).toBe(0);
    const img = path.join(work, "pre-epoch.img");
    expect(cfsctl(["mkcomposefs", old, img]).status).toBe(0);
    const rows = cfsctl(["dump", img]).stdout.toString().split("\n");
    expect(rows.find((l) => l.startsWith("/a "))!.split(" ")[7]).toBe("-1.500000000");
    expect(rows.find((l) => l.startsWith("/b "))!.split(" ")[7]).toBe("-86401.750000000");
    // The container rules keep whole seconds: -1 and -86401; the root, with nothing after 1970, gets 0.
    const tree = new Map(cfsctl(["create-dumpfile", old]).stdout.toString().trim().split("\n").map((l) => [l.split(" ")[0]!, l.split(" ")]));
    expect(tree.get("/a")![7]).toBe("-1.0");
    expect(tree.get("/b")![7]).toBe("-86401.0");
    expect(tree.get("/")![7]).toBe("0.0");
  });

  it("an empty tree gets root mtime 0", () => {
    const empty = path.join(work, "empty");
    fs.mkdirSync(empty);
    const res = cfsctl(["create-dumpfile", empty]);
    expect(res.stdout.toString()).toBe("/ 0 40555 2 0 0 0 0.0 - - -\n");
  });
});

for (const impl of SCANNERS) describe(`bad directories (${impl.name})`, () => {
  const cfsctl = (args: string[], o: { cwd?: string } = {}) => run(args, { env: impl.env, cwd: o.cwd });
  const work = path.join(workAll, `bad-${impl.env.CFSCTL_NATIVE ?? "1"}`);
  beforeAll(() => fs.mkdirSync(work, { recursive: true }));
  it.skipIf(!isRoot)("a file the user may not read is a one-line error saying so", (ctx) => {
    // As nobody (setpriv), in a directory of /tmp that nobody may enter.
    const asNobody = (args: string[]) =>
      spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, CLI, ...args], { env: { ...process.env, ...impl.env }, encoding: "utf8" });
    const probe = asNobody(["--version"]);
    if (probe.error || probe.status !== 0) {
      console.log(`not checked: cfsctl cannot run as nobody here (${probe.error?.message ?? probe.stderr.trim()})`);
      ctx.skip();
    }
    const d = fs.mkdtempSync(path.join(os.tmpdir(), "cfsctl-perm-"));
    try {
      fs.chmodSync(d, 0o755);
      fs.writeFileSync(path.join(d, "secret"), Buffer.alloc(200, 1), { mode: 0o600 });
      for (const cmd of [["compute-id"], ["mkcomposefs", "--print-digest-only"]]) {
        const r = asNobody([...cmd, d]);
        expect(r.status).toBe(1);
        expect(r.stderr).toBe(`cfsctl: error: ${d}/secret: Permission denied (open)\n`);
      }
    } finally {
      fs.rmSync(d, { recursive: true, force: true });
    }
  });
  it("a missing DIR is a one-line error", () => {
    for (const cmd of [["compute-id"], ["create-dumpfile"], ["mkcomposefs", "--print-digest-only"]]) {
      const res = cfsctl([...cmd, path.join(work, "nope")]);
      expect(res.status).toBe(1);
      expect(res.stderr).toMatch(/^cfsctl: error: .*nope: No such file or directory\n$/);
    }
  });
  it("an xattr name that is not UTF-8 is kept as bytes (the native scanner), or refused by name (fs-xattr)", (ctx) => {
    const d = path.join(work, "rawxattr");
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, "f"), "hello\n");
    // Raw bytes 0xff 0xfe: made by the shell (a JavaScript argument would go out as UTF-8).
    const set = spawnSync("sh", ["-c", `setfattr -n "$(printf 'user.\\377\\376')" -v 1 "$1"`, "sh", path.join(d, "f")], { encoding: "utf8" });
    if (set.status !== 0) {
      console.log(`setfattr refused: ${set.stderr}`);
      ctx.skip();
    }
    const dump = cfsctl(["create-dumpfile", d]);
    const digest = cfsctl(["mkcomposefs", "--print-digest-only", d]);
    if (impl.env.CFSCTL_NATIVE === "0") {
      for (const r of [dump, digest]) {
        expect(r.status).toBe(1);
        expect(r.stderr).toMatch(/^cfsctl: error: .*rawxattr\/f: xattr name is not valid UTF-8 \(reading it needs the native addon\)/);
      }
      return;
    }
    expect(dump.status, dump.stderr).toBe(0);
    expect(dump.stdout.toString()).toContain("/f 6 100644 1 0 0 0 ");
    expect(dump.stdout.toString()).toMatch(/ user\.\\xff\\xfe=1\n/);
    // The same bytes through a dumpfile: mkcomposefs DIR's image carries them as they are.
    const listed = cfsctl(["mkcomposefs", d, path.join(work, "rawxattr.img")]);
    expect(listed.status, listed.stderr).toBe(0);
    expect(cfsctl(["dump", path.join(work, "rawxattr.img")]).stdout.toString()).toMatch(/ user\.\\xff\\xfe=1\n/);
    expect(digest.status, digest.stderr).toBe(0);
  });
  it("directories nested as deep as an image holds are scanned; one level more is refused before anything is stored", () => {
    const deep = (name: string, levels: number) => {
      const d = path.join(work, name);
      fs.mkdirSync(d);
      // Relative steps: the whole path soon passes PATH_MAX.
      const script = `process.chdir(process.argv[1]); for (let i = 0; i < ${levels}; i++) { fs.mkdirSync("d"); process.chdir("d"); } fs.writeFileSync("f", "x");`;
      const r = spawnSync(process.execPath, ["-e", script, d]);
      expect(r.status, r.stderr?.toString()).toBe(0);
      return d;
    };
    const ok = cfsctl(["compute-id", deep("deep-2047", 2047)]);
    const tooDeep = deep("deep-2048", 2048);
    if (impl.env.CFSCTL_NATIVE === "0") {
      // The JavaScript scanner (without the addon) reads by path: past PATH_MAX, far deeper than
      // any real tree, it stops with one line.
      for (const r of [ok, cfsctl(["compute-id", tooDeep])]) {
        expect(r.status).toBe(1);
        expect(r.stderr).toMatch(/^cfsctl: error: [^\n]*: File name too long\n$/);
      }
      for (const d of ["deep-2047", "deep-2048"]) spawnSync("rm", ["-rf", path.join(work, d)]);
      return;
    }
    expect(ok.status, ok.stderr.slice(0, 300)).toBe(0);
    for (const cmd of [["compute-id"], ["mkcomposefs", "--print-digest-only"]]) {
      const r = cfsctl([...cmd, tooDeep]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^cfsctl: error: [^\n]*deep-2048(\/d){2048}: directories nest deeper than 2048 levels[^\n]*\n$/);
    }
    const repo = path.join(work, "deep-repo");
    const r = cfsctl(["--repo", repo, "create-image", tooDeep]);
    expect(r.status).toBe(1);
    expect(fs.readdirSync(path.join(repo, "objects"))).toEqual([]);
    // rm(1) removes such trees; Node's recursive rmSync of the test directory would overflow its stack.
    for (const d of ["deep-2047", "deep-2048"]) spawnSync("rm", ["-rf", path.join(work, d)]);
  });
  it("a file instead of a directory is refused", () => {
    const f = path.join(work, "plain");
    fs.writeFileSync(f, "x");
    const res = cfsctl(["compute-id", f]);
    expect(res.status).toBe(1);
    expect(res.stderr).toMatch(/Not a directory/);
  });
  it.skipIf(!isRoot)("a tmpfs mounted inside is refused, naming the mount point", (ctx) => {
    const d = path.join(work, "withmount");
    const m = path.join(d, "inner", "mnt");
    fs.mkdirSync(m, { recursive: true });
    const r = spawnSync("mount", ["-t", "tmpfs", "tmpfs", m]);
    if (r.status !== 0) {
      console.log(`tmpfs mount refused: ${r.stderr}`);
      ctx.skip();
    }
    try {
      for (const cmd of [["compute-id"], ["mkcomposefs", "--print-digest-only"]]) {
        const res = cfsctl([...cmd, d]);
        expect(res.status).toBe(1);
        expect(res.stderr).toBe(`cfsctl: error: ${m}: a mount point (another filesystem); cfsctl never crosses mount points\n`);
      }
    } finally {
      spawnSync("umount", [m]);
    }
  });
  it.skipIf(!isRoot)("a bind mount of the same filesystem inside (same st_dev) is refused too, also from a relative path", () => {
    const d = path.join(work, "withbind");
    const src = path.join(work, "bind source");
    const m = path.join(d, "in ner", "b\\x");
    fs.mkdirSync(m, { recursive: true });
    fs.mkdirSync(src, { recursive: true });
    fs.writeFileSync(path.join(src, "outside.txt"), "not part of the tree");
    expect(fs.statSync(src).dev).toBe(fs.statSync(d).dev);
    const r = spawnSync("mount", ["--bind", src, m]);
    if (r.status !== 0) return console.log(`bind mount refused: ${r.stderr}`);
    try {
      for (const cmd of [["compute-id"], ["create-dumpfile"], ["mkcomposefs", "--print-digest-only"]]) {
        const res = cfsctl([...cmd, d]);
        expect(res.status).toBe(1);
        expect(res.stderr).toBe(`cfsctl: error: ${m}: a mount point (a bind mount of the same filesystem); cfsctl never crosses mount points\n`);
        expect(res.stdout.length).toBe(0);
      }
      const rel = cfsctl(["compute-id", "withbind/"], { cwd: work });
      expect(rel.stderr).toBe(`cfsctl: error: withbind/in ner/b\\x: a mount point (a bind mount of the same filesystem); cfsctl never crosses mount points\n`);
    } finally {
      spawnSync("umount", [m]);
    }
    // Unmounted, the same tree scans.
    expect(cfsctl(["compute-id", d]).status).toBe(0);
  });
});

describe("mkcomposefs --digest-store", () => {
  it("is made only when there is a file to store, parents and all, as upstream makes it", () => {
    const work = path.join(workAll, "store-made");
    const tree = path.join(work, "tree");
    fs.mkdirSync(tree, { recursive: true });
    fs.writeFileSync(path.join(tree, "small"), "inline\n");
    const store = path.join(work, "a", "b", "store");
    const none = run(["mkcomposefs", `--digest-store=${store}`, tree, path.join(work, "1.img")]);
    expect(none.status, none.stderr.toString()).toBe(0);
    expect(fs.existsSync(path.join(work, "a"))).toBe(false);
    // An existing empty store stays.
    fs.mkdirSync(store, { recursive: true });
    expect(run(["mkcomposefs", `--digest-store=${store}`, tree, path.join(work, "2.img")]).status).toBe(0);
    expect(fs.readdirSync(store)).toEqual([]);
    fs.rmSync(path.join(work, "a"), { recursive: true });
    fs.writeFileSync(path.join(tree, "big"), Buffer.alloc(100, 1));
    const one = run(["mkcomposefs", `--digest-store=${store}`, tree, path.join(work, "3.img")]);
    expect(one.status, one.stderr.toString()).toBe(0);
    expect(fs.readdirSync(store).length).toBe(1);
  });
});
