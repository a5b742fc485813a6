/**
 * The main job end to end: create-image into a repository, a real composefs
 * mount showing the source tree, crash safety and concurrent use.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import * as xattr from "fs-xattr";
import { beforeAll, describe, expect, it } from "vitest";
import { CLI, FIXTURES, cfsctl, isRoot, tmpdir } from "./helpers.js";

const work = tmpdir();
const O_PATH = 0o10000000;

function xattrsOf(p: Buffer): Map<string, string> {
  const fd = fs.openSync(p, O_PATH | fs.constants.O_NOFOLLOW);
  try {
    const proc = `/proc/self/fd/${fd}`;
    const m = new Map<string, string>();
    for (const k of xattr.listAttributesSync(proc)) {
      try {
        m.set(k, xattr.getAttributeSync(proc, k).toString("hex"));
      } catch {
        m.set(k, "(unreadable)");
      }
    }
    return m;
  } finally {
    fs.closeSync(fd);
  }
}

const EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/**
 * Every path below a directory with what a composefs mount shows of it. For
 * the source, that is the tree after the container rules (no SELinux policy
 * here, so no security.selinux) with composefs' whiteout semantics: a char
 * device 0/0 shows as an empty regular file marked `trusted.overlay.whiteout`
 * (it becomes a whiteout only when the mount is itself a lower layer), and
 * its directory is marked as holding whiteouts (format version 1: opaque=x).
 */
function describeTree(dir: string, isSource: boolean): Map<string, string> {
  const out = new Map<string, string>();
  const rec = (p: Buffer, rel: string): boolean => {
    const st = fs.lstatSync(p, { bigint: true });
    const isRootDir = rel === "";
    const whiteout = isSource && st.isCharacterDevice() && st.rdev === 0n;
    const fields: string[] = [];
    const mode = Number(st.mode);
    fields.push(`mode=${(whiteout ? 0o100000 | (mode & 0o7777) : mode).toString(8)}`);
    if (!isRootDir) fields.push(`owner=${st.uid}:${st.gid}`, `mtime=${st.mtimeNs / 1_000_000_000n - (st.mtimeNs < 0n && st.mtimeNs % 1_000_000_000n !== 0n ? 1n : 0n)}`);
    if (st.isFile()) fields.push(`size=${st.size}`, `sha=${require_sha(p)}`);
    if (whiteout) fields.push("size=0", `sha=${EMPTY_SHA}`);
    if (st.isSymbolicLink()) fields.push(`target=${fs.readlinkSync(p, { encoding: "buffer" }).toString("hex")}`);
    if ((st.isCharacterDevice() || st.isBlockDevice()) && !whiteout) fields.push(`rdev=${st.rdev}`);
    const xm = xattrsOf(p);
    if (isSource) xm.delete("security.selinux");
    if (whiteout) {
      xm.set("trusted.overlay.whiteout", "");
      xm.set("user.overlay.whiteout", "");
    }
    let holdsWhiteouts = false;
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(p, { encoding: "buffer" })) {
        if (rec(Buffer.concat([p, Buffer.from("/"), name]), `${rel}/${name.toString("hex")}`)) holdsWhiteouts = true;
      }
    }
    if (holdsWhiteouts) {
      for (const k of ["trusted.overlay.whiteouts", "user.overlay.whiteouts"]) xm.set(k, "");
      for (const k of ["trusted.overlay.opaque", "user.overlay.opaque"]) xm.set(k, Buffer.from("x").toString("hex"));
    }
    const xs = [...xm].sort();
    if (!isRootDir) fields.push(`xattrs=${xs.map(([k, v]) => `${k}:${v}`).join(",")}`);
    out.set(rel || "/", fields.join(" "));
    return whiteout;
  };
  rec(Buffer.from(dir), "");
  return out;
}

function require_sha(p: Buffer): string {
  return spawnSync("sha256sum", [p.toString("latin1")]).stdout.toString().slice(0, 64);
}

describe.skipIf(!isRoot)("create-image of the generated tree, mounted", () => {
  const tree = path.join(work, "tree");
  const repo = path.join(work, "repo");
  beforeAll(() => {
    execFileSync("bash", [path.join(FIXTURES, "trees", "gen-tree.sh"), tree, "visible"], { stdio: "pipe" });
  }, 120_000);

  it("prints the digest compute-id prints, fsck is clean, and the mount shows the tree", () => {
    const made = cfsctl(["--repo", repo, "create-image", "--name", "visible", tree]);
    expect(made.status, made.stderr).toBe(0);
    const digest = made.stdout.toString().trim();
    expect(cfsctl(["compute-id", tree]).stdout.toString().trim()).toBe(digest);
    const fsck = cfsctl(["--repo", repo, "fsck"]);
    expect(fsck.status, fsck.stdout.toString() + fsck.stderr).toBe(0);
    const mnt = path.join(work, "mnt");
    fs.mkdirSync(mnt);
    const m = cfsctl(["--repo", repo, "mount", "refs/visible", mnt]);
    if (m.status !== 0) {
      console.log(`composefs mount refused here: ${m.stderr.trim()}`);
      return;
    }
    try {
      const want = describeTree(tree, true);
      const got = describeTree(mnt, false);
      expect(got.get("/")).toBe(`mode=${(0o40555).toString(8)}`);
      want.delete("/");
      got.delete("/");
      expect(got).toEqual(want);
    } finally {
      spawnSync("umount", [mnt]);
    }
  }, 120_000);

  it("a second create-image stores nothing new", () => {
    const count = () => spawnSync("sh", ["-c", `find ${repo}/objects -type f | wc -l`]).stdout.toString().trim();
    const before = count();
    const again = cfsctl(["--repo", repo, "create-image", tree]);
    expect(again.status).toBe(0);
    expect(count()).toBe(before);
  });
});

describe("crash safety and concurrency", () => {
  const big = "/usr/share";
  it("SIGKILL at random moments leaves a repository that fsck accepts, and a rerun gives the same digest", async () => {
    const repo = path.join(work, "crash-repo");
    const want = cfsctl(["compute-id", "--selinux", "off", big]).stdout.toString();
    expect(want).toMatch(/^[0-9a-f]{64}\n$/);
    for (const delay of [150, 400, 700, 1000, 1300]) {
      const child = spawn(process.execPath, [CLI, "--repo", repo, "create-image", "--selinux", "off", big], { stdio: "ignore" });
      await new Promise((r) => setTimeout(r, delay));
      child.kill("SIGKILL");
      await new Promise((r) => child.on("exit", r));
      // Killed before it got as far as creating the repository (a loaded machine): nothing to check.
      if (!fs.existsSync(repo)) continue;
      const fsck = cfsctl(["--repo", repo, "fsck"]);
      expect(fsck.status, `after a kill at ${delay} ms: ${fsck.stdout}${fsck.stderr}`).toBe(0);
    }
    const done = cfsctl(["--repo", repo, "create-image", "--selinux", "off", big]);
    expect(done.stderr.replace(/^cfsctl: fs-verity is not supported.*\n/m, "")).toBe("");
    expect(done.stdout.toString()).toBe(want);
    expect(cfsctl(["--repo", repo, "fsck"]).status).toBe(0);
  }, 180_000);

  it("two create-image runs on one repository at once both succeed", async () => {
    const repo = path.join(work, "concurrent-repo");
    const src = path.join(FIXTURES, "sample-rootfs");
    const run = () =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const c = spawn(process.execPath, [CLI, "--repo", repo, "create-image", src]);
        let out = "";
        c.stdout.on("data", (d) => (out += d));
        c.on("exit", (code) => resolve({ code, out }));
      });
    const [a, b] = await Promise.all([run(), run()]);
    expect(a.code).toBe(0);
    expect(b.code).toBe(0);
    expect(a.out).toBe(b.out);
    expect(cfsctl(["--repo", repo, "fsck"]).status).toBe(0);
  }, 60_000);
});

describe("--name", () => {
  it("a name that is not a valid ref is a usage error before anything is written", () => {
    const tree = tmpdir();
    fs.writeFileSync(path.join(tree, "f"), "x".repeat(100));
    const layer = path.join(FIXTURES, "oci", "gnutar", "layer1.tar");
    for (const name of ["../x", "a//b", "a\nb", "refs/.tmp-1", "", "/abs"]) {
      for (const args of [["create-image", "--name", name, tree], ["import-oci", "--name", name, layer]]) {
        const repo = path.join(tmpdir(), "repo");
        const r = cfsctl(["--repo", repo, ...args]);
        expect(r.status, `${args.join(" ")}: ${r.stderr}`).toBe(2);
        expect(r.stderr).toContain("invalid ref name");
        expect(r.stdout.length).toBe(0);
        expect(fs.existsSync(repo)).toBe(false);
      }
    }
  });
});

describe("a store that cannot take the objects", () => {
  it.skipIf(!isRoot)("full or read-only: one line naming the store's directory (not the scanned file), and no temporary file left", (ctx) => {
    const tree = tmpdir();
    fs.writeFileSync(path.join(tree, "big"), Buffer.alloc(3 << 20, 7));
    fs.writeFileSync(path.join(tree, "small"), Buffer.alloc(300, 9));
    const small = tmpdir();
    const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", small]);
    if (m.status !== 0) {
      console.log(`store checks not run: tmpfs mount refused (${m.stderr})`);
      ctx.skip();
    }
    try {
      for (const [args, where] of [
        [["--repo", path.join(small, "repo"), "create-image", tree], path.join(small, "repo", "objects")],
        [["mkcomposefs", `--digest-store=${path.join(small, "store")}`, tree, path.join(tmpdir(), "x.img")], path.join(small, "store")],
      ] as const) {
        const r = cfsctl([...args]);
        expect(r.status).toBe(1);
        expect(r.stderr).toMatch(new RegExp(`^cfsctl: error: ${where}/[0-9a-f]{2}: No space left on device \\(\\w+\\)\\n$`));
        expect(execFileSync("find", [small, "-name", ".tmp-*"]).toString()).toBe("");
      }
      // Read-only: the same, EROFS.
      spawnSync("mount", ["-o", "remount,ro", small]);
      const r = cfsctl(["--repo", path.join(small, "repo"), "create-image", tree]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^cfsctl: error: ${path.join(small, "repo")}[^\\n]*: (EROFS|Read-only file system)[^\\n]*\\n$`));
    } finally {
      spawnSync("umount", [small]);
    }
  });
});
