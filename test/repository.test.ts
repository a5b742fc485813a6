/**
 * The object repository: layout (composefs-rs), atomic objects, image and
 * stream links, fsck, gc, the repository lock, and `cfsctl mount`.
 * CLI cases run bin/cfsctl, so dist/ must be built (npm test does).
 */
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseDumpfile } from "../src/dumpfile/parse.js";
import { writeImage } from "../src/erofs/writer.js";
import { fsverityDigest } from "../src/fsverity/digest.js";
import { Repository } from "../src/repository/repository.js";
import { enableVerity, measureVerity, type VerityIoctls } from "../src/repository/verity.js";
import { CONTENT_TYPE_LAYER, SplitStreamWriter } from "../src/repository/splitstream.js";
import { cfsctl, isRoot, ROOT, tmpdir } from "./helpers.js";

const quiet = { quiet: true };

function newRepo(opts: Parameters<typeof Repository.open>[1] = {}): Repository {
  return Repository.open(path.join(tmpdir("cfsctl-repo-"), "repo"), { create: true, quiet: true, ...opts });
}

function content(tag: string, size = 200): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (tag.charCodeAt(i % tag.length) + i) & 0xff;
  return b;
}

/** An image of a root with one external file per object, as create-image writes them. */
function imageOf(repo: Repository, files: Record<string, Buffer>): Buffer {
  let dump = "/ 4096 40755 2 0 0 0 0.0 - - -\n";
  for (const [name, data] of Object.entries(files).sort()) {
    const hex = fsverityDigest(data).toString("hex");
    dump += `/${name} ${data.length} 100644 1 0 0 0 0.0 ${repo.objectName(hex)} - ${hex}\n`;
  }
  return writeImage(parseDumpfile(Buffer.from(dump))).image;
}

function tmpFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name.startsWith(".tmp-")) out.push(path.join(d, e.name));
      else if (e.isDirectory()) walk(path.join(d, e.name));
    }
  };
  walk(dir);
  return out;
}

function out(r: { stdout: Buffer; stderr: string }): string {
  return r.stdout.toString() + r.stderr;
}

describe("init and meta.json", () => {
  it("writes meta.json and the directories", () => {
    const repo = path.join(tmpdir(), "r");
    const r = cfsctl(["--repo", repo, "init"]);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(fs.readFileSync(path.join(repo, "meta.json"), "utf8"))).toEqual({ version: 1, algorithm: "fsverity-sha256-12" });
    for (const d of ["objects", "images/refs", "streams/refs"]) expect(fs.statSync(path.join(repo, d)).isDirectory()).toBe(true);
    // Running it again is fine; the same --hash too.
    expect(cfsctl(["--repo", repo, "init"]).status).toBe(0);
    expect(cfsctl(["--repo", repo, "--hash", "sha256", "init"]).status).toBe(0);
  });

  it("an existing repository's algorithm wins; a conflicting --hash is an error", () => {
    const repo = path.join(tmpdir(), "r");
    expect(cfsctl(["--repo", repo, "--hash", "sha512", "init"]).status).toBe(0);
    expect(JSON.parse(fs.readFileSync(path.join(repo, "meta.json"), "utf8")).algorithm).toBe("fsverity-sha512-12");
    const r = cfsctl(["--repo", repo, "--hash", "sha256", "init"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^cfsctl: error: .*sha512.*conflicts with --hash sha256/);
    // Without --hash the repository's sha512 is used.
    const opened = Repository.open(repo, { hash: "sha256", ...quiet });
    expect(opened.algorithm).toBe("sha512");
    opened.close();
    expect(() => Repository.open(repo, { hash: "sha256", hashExplicit: true, ...quiet })).toThrow(/conflicts/);
  });

  it("a repository without meta.json infers the algorithm from object names", () => {
    const dir = path.join(tmpdir(), "old");
    const hex = fsverityDigest(Buffer.from("x"), "sha512").toString("hex");
    fs.mkdirSync(path.join(dir, "objects", hex.slice(0, 2)), { recursive: true });
    fs.writeFileSync(path.join(dir, "objects", hex.slice(0, 2), hex.slice(2)), "x");
    const repo = Repository.open(dir, quiet);
    expect(repo.algorithm).toBe("sha512");
    expect(repo.hasMeta).toBe(false);
    repo.close();
    expect(() => Repository.open(dir, { hash: "sha256", hashExplicit: true, ...quiet })).toThrow(/conflicts/);
  });

  it("a missing repository is an error naming it", () => {
    const dir = path.join(tmpdir(), "nothing");
    const r = cfsctl(["--repo", dir, "fsck"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(dir);
  });
});

describe("where the repository is", () => {
  it("an empty --repo is a usage error, not the working directory", () => {
    const cwd = tmpdir();
    const r = cfsctl(["--repo", "", "init"], { cwd });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^cfsctl: --repo needs a directory/);
    expect(fs.readdirSync(cwd)).toEqual([]);
  });

  it.skipIf(!isRoot)("without --repo, a user whose HOME is empty or relative gets an error, not a repository below the working directory", (ctx) => {
    const cwd = tmpdir();
    fs.chmodSync(cwd, 0o777);
    for (const home of ["", "relative/home"]) {
      const r = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, path.join(ROOT, "bin/cfsctl"), "init"], {
        cwd,
        env: { ...process.env, HOME: home, CFSCTL_REPO: "" },
        encoding: "utf8",
      });
      if (r.error) {
        console.log(`setpriv not runnable: ${r.error.message}`);
        ctx.skip();
      }
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toBe("cfsctl: error: no repository given and no home directory for the default one: use --repo or CFSCTL_REPO\n");
    }
    expect(fs.readdirSync(cwd)).toEqual([]);
  });
});

describe("objects", () => {
  it("stores a buffer atomically under its fs-verity digest, mode 0644", () => {
    const repo = newRepo();
    const data = content("a", 10000);
    const hex = repo.storeObjectFromBuffer(data);
    expect(hex).toBe(fsverityDigest(data).toString("hex"));
    const p = repo.objectPath(hex);
    expect(p).toBe(path.join(repo.path, "objects", hex.slice(0, 2), hex.slice(2)));
    expect(fs.readFileSync(p).equals(data)).toBe(true);
    expect(fs.statSync(p).mode & 0o7777).toBe(0o644);
    expect(repo.hasObject(hex)).toBe(true);
    expect(tmpFiles(repo.path)).toEqual([]);
    repo.close();
  });

  it("stores a file (copy or reflink) and never rewrites an existing object", () => {
    const repo = newRepo();
    const dir = tmpdir();
    const src = path.join(dir, "src");
    const data = content("b", 5000);
    fs.writeFileSync(src, data);
    fs.chmodSync(src, 0o755);
    const hex = fsverityDigest(data).toString("hex");
    expect(repo.storeObjectFromFile(src, hex)).toBe("stored");
    const p = repo.objectPath(hex);
    expect(fs.readFileSync(p).equals(data)).toBe(true);
    expect(fs.statSync(p).mode & 0o7777).toBe(0o644);
    const before = fs.statSync(p);
    // Same digest again, even from a file with other content: left alone.
    const other = path.join(dir, "other");
    fs.writeFileSync(other, "something else");
    expect(repo.storeObjectFromFile(other, hex)).toBe("present");
    expect(repo.storeObjectFromBuffer(data)).toBe(hex);
    const after = fs.statSync(p);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(fs.readFileSync(p).equals(data)).toBe(true);
    expect(tmpFiles(repo.path)).toEqual([]);
    repo.close();
  });

  it("refuses a file whose content does not match the digest, leaving nothing behind", () => {
    const repo = newRepo();
    const src = path.join(tmpdir(), "src");
    fs.writeFileSync(src, content("c"));
    const wrong = fsverityDigest(Buffer.from("not it")).toString("hex");
    expect(() => repo.storeObjectFromFile(src, wrong)).toThrow(/content changed/);
    expect(repo.hasObject(wrong)).toBe(false);
    expect(tmpFiles(repo.path)).toEqual([]);
    repo.close();
  });

  it("--require-verity fails clearly where fs-verity is not supported", () => {
    const repo = newRepo({ requireVerity: true });
    expect(() => repo.storeObjectFromBuffer(content("d"))).toThrow(/fs-verity.*not supported.*--require-verity/);
    expect(tmpFiles(repo.path)).toEqual([]);
    repo.close();
  });

  it("kernel fs-verity: enabled and then checked against the name; only 'not supported' errors fall back", () => {
    const digest = fsverityDigest(content("v"));
    const other = fsverityDigest(content("w"));
    const calls: string[] = [];
    const stand = (enable: string | null, measure: Buffer | string): VerityIoctls => ({
      enableVerity: (fd, alg) => (calls.push(`enable ${fd} ${alg}`), enable),
      measureVerity: (fd, alg) => (calls.push(`measure ${fd} ${alg}`), measure),
    });
    expect(enableVerity(7, "sha256", digest, "object x", stand(null, digest))).toBe("ok");
    expect(calls).toEqual(["enable 7 1", "measure 7 1"]);
    expect(enableVerity(7, "sha512", digest, "object x", stand("EEXIST", digest))).toBe("ok"); // already enabled: checked only
    expect(calls.slice(2)).toEqual(["enable 7 2", "measure 7 2"]);
    expect(() => enableVerity(7, "sha256", digest, "object x", stand(null, other))).toThrow(
      `object x: the kernel measures fs-verity digest ${other.toString("hex")}, cfsctl computed ${digest.toString("hex")}`,
    );
    expect(() => enableVerity(7, "sha256", digest, "object x", stand(null, "EALGORITHM"))).toThrow(/another hash algorithm/);
    for (const code of ["ENOTTY", "EOPNOTSUPP", "EINVAL"]) expect(enableVerity(7, "sha256", digest, "object x", stand(code, "ENOTTY"))).toBe("unsupported");
    for (const code of ["EPERM", "ETXTBSY", "ENOSPC", "EFBIG"]) {
      expect(() => enableVerity(7, "sha256", digest, "object x", stand(code, digest))).toThrow(`cannot enable fs-verity on object x: ${code}`);
    }
    expect(enableVerity(7, "sha256", digest, "object x", null)).toBe("unsupported"); // no addon
    expect(measureVerity(7, "sha256", "image y", stand(null, "ENODATA"))).toBe(null);
    expect(measureVerity(7, "sha256", "image y", stand(null, "EOPNOTSUPP"))).toBe("unsupported");
    expect(measureVerity(7, "sha256", "image y", stand(null, digest))).toEqual(digest);
    expect(() => measureVerity(7, "sha256", "image y", stand(null, "EIO"))).toThrow("cannot measure fs-verity of image y: EIO");
  });

  it("kernel fs-verity through the addon: 'ok' only with the kernel's matching digest; without fs-verity 'unsupported'", () => {
    const kernelHasVerity = fs.readFileSync("/proc/kallsyms", "utf8").includes(" fsverity_ioctl_enable");
    const files = [path.join(tmpdir(), "v"), "/dev/shm/cfsctl-verity-probe"];
    for (const f of files) {
      fs.writeFileSync(f, content("v"));
      const fd = fs.openSync(f, "r");
      try {
        const digest = fsverityDigest(content("v"));
        const r = enableVerity(fd, "sha256", digest, f);
        if (!kernelHasVerity || f === files[1]) expect(r).toBe("unsupported"); // tmpfs has none
        if (r === "ok") expect(measureVerity(fd, "sha256", f)).toEqual(digest);
        else expect(["unsupported", null]).toContain(measureVerity(fd, "sha256", f)); // null: a kernel with fs-verity, a filesystem without
      } finally {
        fs.closeSync(fd);
        fs.rmSync(f);
      }
    }
  });

  it("adoptSyncedObjects names many objects at once; one it cannot name is an error, and no temporary file stays", async () => {
    for (const hash of ["sha256", "sha512"] as const) {
      const repo = newRepo({ hash, quiet: true });
      const objects = path.join(repo.path, "objects");
      const datas = Array.from({ length: 150 }, (_, i) => content(`many-${i}`, 100 + i));
      const present = repo.storeObjectFromBuffer(datas[0]!); // already there: kept, not rewritten
      const items = datas.map((d, i) => {
        const tmp = path.join(objects, `.tmp-many-${i}`);
        fs.writeFileSync(tmp, d, { mode: 0o644 });
        return { tmp, digest: fsverityDigest(d, hash) };
      });
      await repo.adoptSyncedObjects(items);
      for (const [i, d] of datas.entries()) expect(fs.readFileSync(repo.objectPath(items[i]!.digest)).equals(d)).toBe(true);
      expect(repo.hasObject(present)).toBe(true);
      expect(tmpFiles(repo.path)).toEqual([]);

      // A temporary file that vanished: the error names the object; the others are named, no temporary file stays.
      const more = Array.from({ length: 80 }, (_, i) => content(`more-${i}`));
      const items2 = more.map((d, i) => {
        const tmp = path.join(objects, `.tmp-more-${i}`);
        fs.writeFileSync(tmp, d, { mode: 0o644 });
        return { tmp, digest: fsverityDigest(d, hash) };
      });
      fs.rmSync(items2[40]!.tmp);
      const missing = repo.digestHex(items2[40]!.digest);
      await expect(repo.adoptSyncedObjects(items2)).rejects.toThrow(`store object ${missing.slice(0, 2)}/${missing.slice(2)}: No such file or directory`);
      expect(tmpFiles(repo.path)).toEqual([]);
      expect(repo.hasObject(items2[0]!.digest)).toBe(true);
      expect(repo.hasObject(items2[40]!.digest)).toBe(false);
      repo.close();
    }
  });

  it("adoptSyncedObjects under --require-verity names nothing where fs-verity is not supported (and everything where it is)", async () => {
    const repo = newRepo({ requireVerity: true });
    const objects = path.join(repo.path, "objects");
    const datas = Array.from({ length: 100 }, (_, i) => content(`rv-${i}`));
    const items = datas.map((d, i) => {
      const tmp = path.join(objects, `.tmp-rv-${i}`);
      fs.writeFileSync(tmp, d, { mode: 0o644 });
      return { tmp, digest: fsverityDigest(d) };
    });
    // Does the repository's filesystem have fs-verity? (Not on a kernel without it.)
    const probe = path.join(objects, ".tmp-probe");
    fs.writeFileSync(probe, "probe");
    const fd = fs.openSync(probe, "r");
    const supported = enableVerity(fd, "sha256", fsverityDigest(Buffer.from("probe")), probe) === "ok";
    fs.closeSync(fd);
    fs.rmSync(probe);
    if (supported) {
      await repo.adoptSyncedObjects(items);
      for (const it of items) expect(repo.hasObject(it.digest)).toBe(true);
    } else {
      await expect(repo.adoptSyncedObjects(items)).rejects.toThrow(/fs-verity.*not supported.*--require-verity/);
      for (const it of items) expect(repo.hasObject(it.digest)).toBe(false);
    }
    expect(tmpFiles(repo.path)).toEqual([]);
    repo.close();
  });

  it("sha512 repositories name objects by sha512 digests", () => {
    const repo = newRepo({ hash: "sha512" });
    const hex = repo.storeObjectFromBuffer(content("e"));
    expect(hex).toBe(fsverityDigest(content("e"), "sha512").toString("hex"));
    expect(path.basename(repo.objectPath(hex))).toHaveLength(126);
    repo.close();
  });
});

describe("images and streams", () => {
  it("links images/<hex> and refs with relative symlinks", () => {
    const repo = newRepo();
    const obj = content("f");
    repo.storeObjectFromBuffer(obj);
    const img = imageOf(repo, { f: obj });
    const hex = repo.writeImage(img, "foo");
    expect(hex).toBe(fsverityDigest(img).toString("hex"));
    repo.nameImage(hex, "a/b");
    repo.nameImage(hex, "x/y/z");
    const link = (p: string) => fs.readlinkSync(path.join(repo.path, p));
    expect(link(`images/${hex}`)).toBe(`../objects/${hex.slice(0, 2)}/${hex.slice(2)}`);
    expect(link("images/refs/foo")).toBe(`../${hex}`);
    expect(link("images/refs/a/b")).toBe(`../../${hex}`);
    expect(link("images/refs/x/y/z")).toBe(`../../../${hex}`);
    expect(fs.readFileSync(path.join(repo.path, "images/refs/a/b")).equals(img)).toBe(true);
    // A ref can be moved to another image.
    const img2 = imageOf(repo, {});
    const hex2 = repo.writeImage(img2, "foo");
    expect(link("images/refs/foo")).toBe(`../${hex2}`);
    expect(tmpFiles(repo.path)).toEqual([]);
    // Resolving: digest, refs/NAME, a path.
    expect(repo.resolveImage(hex)).toMatchObject({ digest: hex, source: "digest" });
    expect(repo.resolveImage("refs/a/b")).toMatchObject({ digest: hex, source: "ref" });
    const file = path.join(tmpdir(), "img");
    fs.writeFileSync(file, img);
    expect(repo.resolveImage(file)).toMatchObject({ path: file, digest: null, source: "path" });
    expect(() => repo.resolveImage("refs/nope")).toThrow(/not found/);
    expect(() => repo.nameImage(hex, "../escape")).toThrow(/invalid ref name/);
    expect(repo.imageObjects(img)).toEqual([fsverityDigest(obj).toString("hex")]);
    repo.close();
  });

  it("dump, image-objects, info and diff name an image by digest or refs/NAME, as by a path", () => {
    const repo = newRepo();
    const obj = content("named");
    repo.storeObjectFromBuffer(obj);
    const img = imageOf(repo, { f: obj });
    const hex = repo.writeImage(img, "some/name");
    repo.close();
    const file = path.join(tmpdir(), "img");
    fs.writeFileSync(file, img);
    const run = (...args: string[]) => cfsctl(["--repo", repo.path, ...args]);
    for (const cmd of [["dump"], ["image-objects"], ["info", "ls"], ["info", "objects"]]) {
      const want = run(...cmd, file);
      expect(want.status, want.stderr).toBe(0);
      expect(want.stdout.length).toBeGreaterThan(0);
      for (const name of [hex, hex.toUpperCase(), "refs/some/name"]) {
        const got = run(...cmd, name);
        expect(got.status, `${cmd.join(" ")} ${name}: ${got.stderr}`).toBe(0);
        expect(got.stdout.equals(want.stdout)).toBe(true);
      }
      const missing = run(...cmd, "refs/nope");
      expect(missing.status).toBe(1);
      expect(missing.stderr).toMatch(/^cfsctl: error: .*refs\/nope.*not found[^\n]*\n$/);
    }
    expect(run("diff", "refs/some/name", file).status).toBe(0);
  });

  it("links streams/<id> and streams/refs/<name>", () => {
    const repo = newRepo();
    const hex = repo.storeObjectFromBuffer(content("stream"));
    const id = "oci-layer-sha256:0123abcd";
    repo.linkStream(hex, id, "layers/one");
    expect(fs.readlinkSync(path.join(repo.path, "streams", id))).toBe(`../objects/${hex.slice(0, 2)}/${hex.slice(2)}`);
    expect(fs.readlinkSync(path.join(repo.path, "streams/refs/layers/one"))).toBe(`../../${id}`);
    expect(repo.hasStream(id)).toBe(hex);
    expect(repo.hasStream("oci-layer-sha256:other")).toBe(null);
    expect(repo.resolveStream("refs/layers/one")).toMatchObject({ streamId: id, digest: hex });
    expect(() => repo.linkStream(hex, "a/b")).toThrow(/invalid stream id/);
    repo.close();
  });
});

/** A repository with objects A, B, C; image 1 uses A and B (ref one), image 2 uses B and C (ref two). */
function twoImages() {
  const repo = newRepo();
  const A = content("A", 3000);
  const B = content("B", 70);
  const C = content("C", 9000);
  const [a, b, c] = [A, B, C].map((d) => repo.storeObjectFromBuffer(d));
  const i1 = repo.writeImage(imageOf(repo, { a: A, b: B }), "one");
  const i2 = repo.writeImage(imageOf(repo, { b: B, c: C }), "group/two");
  const size = (hex: string) => fs.statSync(repo.objectPath(hex)).size;
  repo.close();
  return { path: repo.path, repo, a: a!, b: b!, c: c!, i1, i2, size };
}

const obj = (hex: string) => `objects/${hex.slice(0, 2)}/${hex.slice(2)}`;

describe("fsck", () => {
  it("a clean repository passes, with --json", () => {
    const t = twoImages();
    const r = cfsctl(["--repo", t.path, "fsck"]);
    expect(r.status, out(r)).toBe(0);
    expect(r.stdout.toString()).toBe("");
    const j = cfsctl(["--repo", t.path, "fsck", "--json"]);
    expect(j.status, out(j)).toBe(0);
    const report = JSON.parse(j.stdout.toString());
    expect(report).toMatchObject({ ok: true, objects_checked: 5, images_checked: 2, refs_checked: 2, problems: [] });
  });

  it("finds a corrupt object", () => {
    const t = twoImages();
    const p = path.join(t.path, obj(t.a));
    const data = fs.readFileSync(p);
    data[17]! ^= 0xff;
    fs.writeFileSync(p, data);
    const r = cfsctl(["--repo", t.path, "fsck"]);
    expect(r.status).toBe(1);
    expect(r.stdout.toString()).toContain(`error: ${obj(t.a)}: content does not match its name`);
    // One line on stderr: the failure (the summary only on success).
    expect(r.stderr).toMatch(/^cfsctl: error: fsck: 1 problem [^\n]*\n$/);
    const j = cfsctl(["--repo", t.path, "fsck", "--json"]);
    expect(j.status).toBe(1);
    expect(JSON.parse(j.stdout.toString()).problems).toEqual([
      expect.objectContaining({ severity: "error", path: obj(t.a) }),
    ]);
  });

  it("finds a missing object an image needs", () => {
    const t = twoImages();
    fs.unlinkSync(path.join(t.path, obj(t.c)));
    const r = cfsctl(["--repo", t.path, "fsck"]);
    expect(r.status).toBe(1);
    expect(r.stdout.toString()).toContain(`error: images/${t.i2}: needs missing object ${obj(t.c)} (/c)`);
  });

  it("finds a broken ref and a dangling image link", () => {
    const t = twoImages();
    const missing = "ab".repeat(32);
    fs.symlinkSync(`../${missing}`, path.join(t.path, "images/refs/broken"));
    fs.unlinkSync(path.join(t.path, obj(t.i1)));
    const r = cfsctl(["--repo", t.path, "fsck"]);
    expect(r.status).toBe(1);
    const text = r.stdout.toString();
    expect(text).toContain(`error: images/refs/broken: dangling ref: images/${missing} does not exist`);
    expect(text).toContain(`error: images/${t.i1}: dangling link: object ${obj(t.i1)} is missing`);
    expect(text).toContain(`error: images/refs/one: dangling ref`);
  });

  it("reports stray temporary files as warnings only", () => {
    const t = twoImages();
    fs.writeFileSync(path.join(t.path, "objects", t.a.slice(0, 2), ".tmp-12345-abcdef"), "partial");
    const r = cfsctl(["--repo", t.path, "fsck"]);
    expect(r.status, out(r)).toBe(0);
    expect(r.stdout.toString()).toMatch(/^warning: objects\/..\/\.tmp-12345-abcdef: stray temporary file/);
  });

  it("hashes many objects with the worker pool", () => {
    const repo = newRepo();
    const hexes = Array.from({ length: 100 }, (_, i) => repo.storeObjectFromBuffer(content(`m${i}`, 100 + i * 50)));
    repo.close();
    const bad = path.join(repo.path, obj(hexes[42]!));
    fs.appendFileSync(bad, "x");
    const j = cfsctl(["--repo", repo.path, "fsck", "--json"]);
    expect(j.status).toBe(1);
    const report = JSON.parse(j.stdout.toString());
    expect(report.objects_checked).toBe(100);
    expect(report.problems.map((p: { path: string }) => p.path)).toEqual([obj(hexes[42]!)]);
  });
});

describe("gc", () => {
  it("removes exactly what only an unreferenced image used; --dry-run removes nothing", () => {
    const t = twoImages();
    fs.unlinkSync(path.join(t.path, "images/refs/group/two"));
    const expected = [obj(t.c), obj(t.i2), `images/${t.i2}`].sort();
    const listing = () => {
      const all: string[] = [];
      const walk = (d: string) => {
        for (const e of fs.readdirSync(path.join(t.path, d), { withFileTypes: true })) {
          const rel = d ? `${d}/${e.name}` : e.name;
          if (e.isDirectory()) walk(rel);
          else all.push(rel);
        }
      };
      walk("");
      return all.sort();
    };
    const before = listing();

    const dry = cfsctl(["--repo", t.path, "gc", "--dry-run"]);
    expect(dry.status, out(dry)).toBe(0);
    const dryLines = dry.stdout.toString().trim().split("\n");
    expect(dryLines.filter((l) => l.startsWith("would remove ")).map((l) => l.split(" ")[2]).sort()).toEqual(expected);
    const bytes = t.size(t.c) + t.size(t.i2);
    expect(dryLines.at(-1)).toBe(`would free ${bytes} bytes: 2 objects, 1 images, 0 streams`);
    expect(listing()).toEqual(before);

    const r = cfsctl(["--repo", t.path, "gc"]);
    expect(r.status, out(r)).toBe(0);
    const lines = r.stdout.toString().trim().split("\n");
    expect(lines.filter((l) => l.startsWith("removed ")).map((l) => l.split(" ")[1]).sort()).toEqual(expected);
    expect(lines.at(-1)).toBe(`freed ${bytes} bytes: 2 objects, 1 images, 0 streams`);
    expect(listing()).toEqual(before.filter((p) => !expected.includes(p)));
    for (const h of [t.a, t.b, t.i1]) expect(fs.existsSync(path.join(t.path, obj(h)))).toBe(true);
    expect(cfsctl(["--repo", t.path, "fsck"]).status).toBe(0);

    // Nothing left to collect.
    const again = cfsctl(["--repo", t.path, "gc"]);
    expect(again.stdout.toString()).toBe("freed 0 bytes: 0 objects, 0 images, 0 streams\n");
  });

  it("keeps streams named by refs and their objects, removes the rest and stray temporaries", async () => {
    const repo = newRepo();
    // Two split streams, each naming one object of its own.
    const stream = async (tag: string): Promise<{ stream: string; data: string }> => {
      const data = repo.storeObjectFromBuffer(content(tag));
      const w = new SplitStreamWriter(path.join(repo.path, "objects"), repo.algorithm, CONTENT_TYPE_LAYER, () => repo.tmpName());
      await w.addInline(Buffer.from("header"));
      await w.addExternal(Buffer.from(data, "hex"), 200);
      const { tmp, digest } = await w.finish();
      repo.adoptSyncedObject(tmp, digest);
      return { stream: digest.toString("hex"), data };
    };
    const k = await stream("s1");
    const g = await stream("s2");
    const kept = k.stream;
    const gone = g.stream;
    repo.linkStream(kept, "oci-layer-sha256:1", "layer");
    repo.linkStream(gone, "oci-layer-sha256:2");
    repo.close();
    const tmp = path.join(repo.path, "objects", kept.slice(0, 2), ".tmp-1-aaaaaa");
    fs.writeFileSync(tmp, "partial");
    const r = cfsctl(["--repo", repo.path, "gc"]);
    expect(r.status, out(r)).toBe(0);
    expect(fs.existsSync(path.join(repo.path, obj(kept)))).toBe(true);
    expect(fs.existsSync(path.join(repo.path, obj(gone)))).toBe(false);
    expect(fs.existsSync(path.join(repo.path, obj(k.data)))).toBe(true);
    expect(fs.existsSync(path.join(repo.path, obj(g.data)))).toBe(false);
    expect(fs.existsSync(path.join(repo.path, "streams/oci-layer-sha256:1"))).toBe(true);
    expect(fs.existsSync(path.join(repo.path, "streams/oci-layer-sha256:2"))).toBe(false);
    expect(fs.existsSync(tmp)).toBe(false);
  });

  it("refuses to collect when a referenced image cannot be read", () => {
    const t = twoImages();
    fs.writeFileSync(path.join(t.path, obj(t.i1)), "garbage that is not an image");
    const r = cfsctl(["--repo", t.path, "gc"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cfsctl: error: gc: image .* named by images\/refs\/one is not readable/);
    expect(fs.existsSync(path.join(t.path, obj(t.a)))).toBe(true);
  });

  it("refuses to collect when a ref points past images/ (an error to fsck too), removing nothing", () => {
    const t = twoImages();
    // A hand-made ref straight at the image's object: it resolves, but not through images/.
    const ref = path.join(t.path, "images/refs/direct");
    fs.symlinkSync(`../../${obj(t.i1)}`, ref);
    fs.unlinkSync(path.join(t.path, "images/refs/one"));
    const f = cfsctl(["--repo", t.path, "fsck"]);
    expect(f.status).toBe(1);
    expect(out(f)).toMatch(/images\/refs\/direct.*not an entry of images\//);
    const r = cfsctl(["--repo", t.path, "gc"]);
    expect(r.status, out(r)).toBe(1);
    expect(r.stderr).toMatch(/^cfsctl: error: gc: images\/refs\/direct points at .*, not an entry of images\/; nothing removed/);
    for (const hex of [t.i1, t.a, t.b]) expect(fs.existsSync(path.join(t.path, obj(hex)))).toBe(true);
  });
});

describe("the repository lock", () => {
  const script = (repo: string, tag: string) => `
    import { Repository } from ${JSON.stringify(path.join(ROOT, "dist/repository/repository.js"))};
    const repo = Repository.open(${JSON.stringify(repo)}, { quiet: true });
    for (let i = 0; i < 300; i++) {
      const b = Buffer.alloc(1000 + (i % 7) * 3000, (i * 31) & 0xff);
      b.write(i % 3 === 0 ? "shared-" + i : ${JSON.stringify(tag)} + i);
      repo.storeObjectFromBuffer(b);
    }
    repo.close();
  `;

  function runNode(code: string, env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stderr: string }> {
    return new Promise((resolve) => {
      const p = spawn(process.execPath, ["--input-type=module", "-e", code], { env: { ...process.env, ...env } });
      let stderr = "";
      p.stderr.on("data", (d) => (stderr += d));
      p.on("close", (status) => resolve({ status, stderr }));
    });
  }

  for (const impl of ["flock", "lock files"] as const) {
    it(`two concurrent writers both succeed (${impl})`, async () => {
      const env = impl === "lock files" ? { CFSCTL_LOCK_FALLBACK: "1" } : {};
      const repo = newRepo();
      repo.close();
      const [x, y] = await Promise.all([runNode(script(repo.path, "x"), env), runNode(script(repo.path, "y"), env)]);
      expect(x, x.stderr).toMatchObject({ status: 0 });
      expect(y, y.stderr).toMatchObject({ status: 0 });
      const j = cfsctl(["--repo", repo.path, "fsck", "--json"], { env });
      expect(JSON.parse(j.stdout.toString())).toMatchObject({ ok: true, objects_checked: 500, problems: [] });
      expect(tmpFiles(repo.path)).toEqual([]);
    });

    it(`gc waits for a writer holding the lock (${impl})`, async () => {
      const env = impl === "lock files" ? { CFSCTL_LOCK_FALLBACK: "1" } : {};
      const repo = newRepo();
      repo.close();
      const holder = runNode(
        `
        import fs from "node:fs";
        import { Repository } from ${JSON.stringify(path.join(ROOT, "dist/repository/repository.js"))};
        const repo = Repository.open(${JSON.stringify(repo.path)}, { quiet: true });
        fs.writeFileSync(${JSON.stringify(path.join(repo.path, "..", "locked"))}, "");
        setTimeout(() => { fs.writeFileSync(${JSON.stringify(path.join(repo.path, "..", "released"))}, String(Date.now())); repo.close(); }, 1500);
        `,
        env,
      );
      const started = Date.now();
      while (!fs.existsSync(path.join(repo.path, "..", "locked"))) {
        if (Date.now() - started > 10000) throw new Error("lock holder did not start");
        await new Promise((r) => setTimeout(r, 20));
      }
      const gc = spawnSync(process.execPath, [path.join(ROOT, "bin/cfsctl"), "--repo", repo.path, "gc"], {
        env: { ...process.env, ...env },
        encoding: "utf8",
      });
      const done = Date.now();
      expect((await holder).status).toBe(0);
      expect(gc.status, gc.stderr).toBe(0);
      expect(gc.stderr).toContain("waiting for the lock");
      const released = Number(fs.readFileSync(path.join(repo.path, "..", "released"), "utf8"));
      expect(done).toBeGreaterThanOrEqual(released);
    });

    it.skipIf(!isRoot)(`a repository on a read-only mount can be read (${impl})`, (ctx) => {
      const env = impl === "lock files" ? { CFSCTL_LOCK_FALLBACK: "1" } : {};
      const t = twoImages();
      const mnt = tmpdir();
      if (spawnSync("mount", ["--bind", t.path, mnt]).status !== 0) {
        console.log("read-only repository not checked: bind mount refused");
        ctx.skip();
      }
      try {
        expect(spawnSync("mount", ["-o", "remount,bind,ro", mnt]).status).toBe(0);
        for (const args of [["fsck"], ["dump", "refs/one"], ["image-objects", "refs/group/two"]]) {
          const r = cfsctl(["--repo", mnt, ...args], { env });
          expect(r.status, `${args.join(" ")}: ${r.stderr}`).toBe(0);
        }
      } finally {
        spawnSync("umount", [mnt]);
      }
    });
  }
});

// ---- kernel mount ---------------------------------------------------------

function mountProbe(): string | null {
  if (!isRoot) return "not running as root";
  const fsTypes = fs.readFileSync("/proc/filesystems", "utf8");
  if (!/\terofs\n/.test(fsTypes) && spawnSync("modprobe", ["erofs"]).status !== 0) return "no erofs in this kernel";
  return null;
}
const mountSkip = mountProbe();
if (mountSkip) console.log(`cfsctl mount test skipped: ${mountSkip}`);

describe("cfsctl mount", () => {
  it.skipIf(mountSkip !== null)("mounts an image with its objects as data-only layer", (ctx) => {
    const repo = newRepo();
    const hello = Buffer.from("hello from the object store, served through overlayfs metacopy and redirect!\n");
    const big = content("big", 100000);
    repo.storeObjectFromBuffer(hello);
    repo.storeObjectFromBuffer(big);
    const hex = repo.writeImage(imageOf(repo, { "hello.txt": hello, "big.bin": big }), "mnt");
    repo.close();
    const mnt = tmpdir("cfsctl-mount-");
    const r = cfsctl(["--repo", repo.path, "mount", "refs/mnt", mnt]);
    if (r.status !== 0) {
      const why = r.stderr.trim();
      // Only the kernel refusing is a reason to skip; anything else fails.
      if (/mounting .* failed/.test(why)) {
        console.log(`cfsctl mount test skipped: the kernel refused: ${why}`);
        ctx.skip();
      }
      throw new Error(`cfsctl mount failed: ${why}`);
    }
    try {
      expect(fs.readFileSync(path.join(mnt, "hello.txt")).equals(hello)).toBe(true);
      expect(fs.readFileSync(path.join(mnt, "big.bin")).equals(big)).toBe(true);
      expect(fs.readdirSync(mnt).sort()).toEqual(["big.bin", "hello.txt"]);
      expect(() => fs.writeFileSync(path.join(mnt, "new"), "x")).toThrow();
    } finally {
      spawnSync("umount", [mnt]);
    }
    // By digest too, and then the temporary EROFS mount is gone.
    const r2 = cfsctl(["--repo", repo.path, "mount", hex, mnt]);
    expect(r2.status, r2.stderr).toBe(0);
    try {
      expect(fs.readFileSync(path.join(mnt, "hello.txt")).equals(hello)).toBe(true);
      const erofsMounts = fs
        .readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .filter((l) => l.includes(" - erofs ") && l.includes("/.composefs."));
      expect(erofsMounts).toEqual([]);
    } finally {
      spawnSync("umount", [mnt]);
    }
  });

  it("--require-verity: refused where fs-verity is not supported, before anything is mounted", () => {
    const repo = newRepo();
    repo.storeObjectFromBuffer(content("m"));
    repo.writeImage(imageOf(repo, { "m.bin": content("m") }), "rv");
    repo.close();
    const mnt = tmpdir("cfsctl-mount-");
    const r = cfsctl(["--repo", repo.path, "--require-verity", "mount", "refs/rv", mnt]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe("cfsctl: error: cannot mount with --require-verity: fs-verity is not supported here\n");
    expect(fs.readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(` ${mnt} `);
  });

  it("reports a missing image and a bad mount point", () => {
    const repo = newRepo();
    repo.close();
    const mnt = tmpdir("cfsctl-mount-");
    const r = cfsctl(["--repo", repo.path, "mount", "refs/none", mnt]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^cfsctl: error: image refs\/none not found/);
    const notImage = path.join(mnt, "..", "notimage");
    fs.writeFileSync(notImage, Buffer.alloc(4096));
    const r2 = cfsctl(["--repo", repo.path, "mount", notImage, mnt]);
    expect(r2.status).toBe(1);
    expect(r2.stderr).toContain("not a composefs image");
  });
});
