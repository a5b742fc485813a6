/**
 * The same tree gives the same digest both ways: import-oci of layers
 * equals create-image of the tree a real tool unpacked from them (GNU tar
 * for one layer, `umoci unpack` for layouts). Needs root (devices, owners,
 * trusted.* xattrs) and, for layouts, umoci.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { FIXTURES, cfsctl, isRoot, letRunnerIn, rng, tmpdir } from "./helpers.js";

const OCI = path.join(FIXTURES, "oci");
const hasUmoci = spawnSync("umoci", ["--version"]).status === 0;

function digestOf(args: string[]): string {
  const r = cfsctl(["--repo", tmpdir(), "-q", ...args]);
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.toString().trim();
}

function umociUnpack(layoutTag: string): string {
  const bundle = path.join(tmpdir(), "bundle");
  const r = spawnSync("umoci", ["unpack", "--image", layoutTag, bundle]);
  expect(r.status, r.stderr.toString()).toBe(0);
  return path.join(bundle, "rootfs");
}

describe.skipIf(!isRoot)("import-oci equals create-image of the unpacked tree", () => {
  if (!isRoot) console.log("skipped: extracting owners, devices and trusted.* xattrs needs root");

  it("GNU tar layer1 extracted by GNU tar", () => {
    const dir = tmpdir();
    const layer = path.join(OCI, "gnutar", "layer1.tar");
    const t = spawnSync("tar", ["-xp", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", dir, "-f", layer]);
    expect(t.status, t.stderr.toString()).toBe(0);
    expect(digestOf(["import-oci", layer])).toBe(digestOf(["create-image", dir]));
  });

  describe.skipIf(!hasUmoci)("with umoci", () => {
    if (!hasUmoci) console.log("skipped: umoci is not installed");
    for (const tag of ["layer1", "layer3", "latest"]) {
      it(`umoci-tiny:${tag} unpacked by umoci`, () => {
        const layout = `${path.join(OCI, "umoci-tiny", "image")}:${tag}`;
        expect(digestOf(["import-oci", layout])).toBe(digestOf(["create-image", umociUnpack(layout)]));
      });
    }
    for (const which of ["podman-overlay", "podman-vfs"]) {
      it(`${which} oci-archive unpacked by umoci`, () => {
        const archive = path.join(OCI, which, "image.oci-archive.tar");
        const layout = tmpdir();
        expect(spawnSync("tar", ["-xf", archive, "-C", layout]).status).toBe(0);
        const index = JSON.parse(fs.readFileSync(path.join(layout, "index.json"), "utf8"));
        const tag = index.manifests[0].annotations["org.opencontainers.image.ref.name"];
        expect(digestOf(["import-oci", archive])).toBe(digestOf(["create-image", umociUnpack(`${layout}:${tag}`)]));
      });
    }
    it("GNU tar layers 1-3 added to a layout with umoci raw add-layer, unpacked by umoci", () => {
      const layout = path.join(tmpdir(), "image");
      const run = (args: string[]) => {
        const r = spawnSync("umoci", args);
        expect(r.status, r.stderr.toString()).toBe(0);
      };
      run(["init", "--layout", layout]);
      run(["new", "--image", `${layout}:t`]);
      const layers = ["layer1.tar", "layer2.tar", "layer3.tar"].map((f) => path.join(OCI, "gnutar", f));
      for (const l of layers) run(["raw", "add-layer", "--image", `${layout}:t`, l]);
      const unpacked = digestOf(["create-image", umociUnpack(`${layout}:t`)]);
      expect(digestOf(["import-oci", ...layers])).toBe(unpacked);
      expect(digestOf(["import-oci", `${layout}:t`])).toBe(unpacked);
    });
  });
});

// Random trees, as root: every file type, owners, odd modes, nanosecond
// mtimes, xattrs of every namespace (names without `=` or `%`, which GNU
// tar alone encodes: see doc/oci.md), hardlinks, names with any byte.
// Fixed seeds.
/** The generator the helpers below draw from: each test starts its own (reseed). */
let r = rng(0);
const reseed = (seed: number) => (r = rng(seed));
const rnd = () => r.next();
const int = (n: number) => r.int(n);
const pick = <T>(xs: readonly T[]): T => r.pick(xs);
/** A name of any bytes but NUL and `/`; with `ascii`, of printable ASCII (for tools that take names as UTF-8 strings). */
const name = (ascii = false): Buffer => {
  for (;;) {
    const b = Buffer.alloc(1 + int(rnd() < 0.05 ? 200 : 8));
    for (let i = 0; i < b.length; i++) b[i] = rnd() < 0.85 ? pick([...Buffer.from("abcxyz019._-")]) : ascii ? 0x21 + int(94) : 1 + int(255);
    for (let i = 0; i < b.length; i++) if (b[i] === 0x2f) b[i] = 0x5f;
    const s = b.toString("latin1");
    if (s !== "." && s !== ".." && !s.startsWith(".wh.") && s !== ".new") return b;
  }
};
const XATTR_KEYS = ["user.a", "user.b", "user.overlay.x", "trusted.overlay.opaque", "trusted.x", "security.capability", "security.ima"];

function randomTree(root: string, keys: readonly string[] = XATTR_KEYS, ascii = false): void {
  const tmp = path.join(root, ".new");
  const dirs = [Buffer.from(root)];
  const files: Buffer[] = [];
  for (let i = 60 + int(60); i > 0; i--) {
    const p = Buffer.concat([pick(dirs), Buffer.from("/"), name(ascii)]);
    if (fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined) continue;
    const t = pick(["d", "d", "f", "f", "f", "l", "c", "b", "p", "h"]);
    // Made under an ASCII name (mknod and setfattr take UTF-8 strings), then renamed.
    if (t === "d") fs.mkdirSync(tmp);
    else if (t === "f") fs.writeFileSync(tmp, Buffer.alloc(pick([0, 1, 64, 65, 4096, 5000, 70000]), int(256)));
    else if (t === "l") fs.symlinkSync(name(), tmp);
    else if (t === "h") {
      if (files.length === 0) continue;
      fs.linkSync(pick(files), tmp);
    } else if (t === "p") spawnSync("mkfifo", [tmp]);
    else spawnSync("mknod", [tmp, t, String(1 + int(299)), String(int(300))]); // never 0/0, an overlay whiteout
    if (t !== "l") fs.chmodSync(tmp, pick([0o755, 0o644, 0o4755, 0o1777, 0o2750, 0o000, 0o600]));
    fs.lchownSync(tmp, rnd() < 0.7 ? 0 : int(70000), rnd() < 0.7 ? 0 : int(70000));
    if (t !== "h") {
      for (let k = rnd() < 0.5 ? 0 : 1 + int(3); k > 0; k--) {
        const v = Buffer.alloc(1 + int(40), 97 + int(3));
        spawnSync("setfattr", ["-h", "-n", pick(keys), "-v", "0x" + v.toString("hex"), tmp]);
      }
    }
    const sec = rnd() < 0.3 ? int(2 ** 31) : 1700000000 + int(1000);
    fs.lutimesSync(tmp, sec, sec + int(1e9) / 1e9);
    fs.renameSync(tmp, p);
    if (t === "d") dirs.push(p);
    if (t === "f") files.push(p);
  }
  for (const d of dirs) fs.utimesSync(d, 1600000000 + int(1e8), 1600000000 + int(1e8) + int(1e9) / 1e9);
}

describe.skipIf(!isRoot)("random trees packed by GNU tar: import-oci equals compute-id of the tree", () => {
  // Packed the way fixtures/oci/gnutar/layer1.tar was.
  for (const s of [1, 2, 3, 4, 5]) {
    it(`tree ${s}`, () => {
      reseed(s * 7919);
      const root = path.join(tmpdir(), "tree");
      fs.mkdirSync(root);
      randomTree(root);
      const layer = path.join(tmpdir(), "layer.tar");
      const t = spawnSync("tar", ["-C", root, "--format=pax", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-S", "--sort=name", "-cf", layer, "."]);
      expect(t.status, t.stderr.toString()).toBe(0);
      const scanned = cfsctl(["compute-id", root]);
      expect(scanned.status, scanned.stderr.toString()).toBe(0);
      expect(digestOf(["import-oci", layer])).toBe(scanned.stdout.toString().trim());
    });
  }
});

/** Every path below root (bytes), parents before children. */
function walkTree(root: Buffer): Buffer[] {
  const out: Buffer[] = [];
  const visit = (dir: Buffer) => {
    for (const n of fs.readdirSync(dir, { encoding: "buffer" })) {
      const p = Buffer.concat([dir, Buffer.from("/"), n]);
      out.push(p);
      if (fs.lstatSync(p).isDirectory()) visit(p);
    }
  };
  visit(root);
  return out;
}

/**
 * Random changes made through an overlay mount: files and trees removed,
 * directories removed and made again (opaque), types replaced, metadata
 * changed (a copy-up), new entries, new hardlinks of new and of lower files.
 */
function changeThrough(merged: string): void {
  const root = Buffer.from(merged);
  for (let i = 5 + int(20); i > 0; i--) {
    const all = walkTree(root);
    if (all.length === 0) break;
    const p = pick(all);
    const st = fs.lstatSync(p);
    switch (int(9)) {
      case 0:
        fs.rmSync(p, { recursive: true });
        break;
      case 1:
        if (!st.isDirectory()) break;
        fs.rmSync(p, { recursive: true });
        fs.mkdirSync(p, 0o750);
        fs.writeFileSync(Buffer.concat([p, Buffer.from("/"), name(true)]), "again");
        break;
      case 2:
        fs.rmSync(p, { recursive: true });
        if (st.isDirectory()) fs.writeFileSync(p, "was a directory");
        else fs.mkdirSync(p, 0o700);
        break;
      case 3:
        if (!st.isSymbolicLink()) fs.chmodSync(p, pick([0o600, 0o755, 0o4711]));
        break;
      case 4:
        fs.lchownSync(p, int(1000), int(1000));
        break;
      case 5:
        if (st.isFile()) fs.writeFileSync(p, Buffer.alloc(pick([3, 100, 9000]), 0x41 + int(20)));
        else spawnSync("setfattr", ["-h", "-n", "user.changed", "-v", "1", p.toString("latin1")]);
        break;
      case 6:
        fs.lutimesSync(p, 1750000000 + int(1000), 1750000000 + int(1000));
        break;
      case 7: {
        // A new name for a file of the lower tree: overlayfs copies it up first.
        if (!st.isFile()) break;
        const g = Buffer.concat([p.subarray(0, p.lastIndexOf(0x2f) + 1), name(true)]);
        if (fs.lstatSync(g, { throwIfNoEntry: false }) === undefined) fs.linkSync(p, g);
        break;
      }
      default: {
        const dir = st.isDirectory() ? p : root;
        const f = Buffer.concat([dir, Buffer.from("/"), name(true)]);
        if (fs.lstatSync(f, { throwIfNoEntry: false }) !== undefined) break;
        fs.writeFileSync(f, Buffer.alloc(200, 0x61 + int(20)));
        const g = Buffer.concat([dir, Buffer.from("/"), name(true)]);
        if (fs.lstatSync(g, { throwIfNoEntry: false }) === undefined) fs.linkSync(f, g);
      }
    }
  }
}

/**
 * An overlay upper directory as an OCI layer, as containers/storage commits
 * one: a whiteout (char 0/0) becomes `.wh.NAME`, an opaque directory gets
 * `.wh..wh..opq`, overlayfs's own trusted.overlay.* xattrs go.
 */
function upperAsLayer(upper: string, staging: string, layer: string): void {
  expect(spawnSync("cp", ["-a", upper, staging]).status).toBe(0);
  const paths = walkTree(Buffer.from(staging)).reverse();
  // What is added or removed below changes directories' mtimes: put them back after.
  const times = [...paths, Buffer.from(staging)].map((p) => [p, fs.lstatSync(p)] as const).filter(([, st]) => st.isDirectory());
  for (const p of [...paths, Buffer.from(staging)]) {
    const st = fs.lstatSync(p);
    const list = spawnSync("getfattr", ["-h", "-m", "^trusted\\.overlay\\.", "--absolute-names", "-d", p.toString("latin1")], { encoding: "latin1" });
    const opaque = /^trusted\.overlay\.opaque="y"$/m.test(list.stdout);
    for (const m of list.stdout.matchAll(/^(trusted\.overlay\.[^=\n]+)=/gm)) spawnSync("setfattr", ["-h", "-x", m[1]!, p.toString("latin1")]);
    if (st.isCharacterDevice() && st.rdev === 0) {
      const slash = p.lastIndexOf(0x2f);
      fs.rmSync(p);
      fs.writeFileSync(Buffer.concat([p.subarray(0, slash + 1), Buffer.from(".wh."), p.subarray(slash + 1)]), "", { mode: 0 });
    }
    if (opaque) fs.writeFileSync(Buffer.concat([p, Buffer.from("/.wh..wh..opq")]), "", { mode: 0 });
  }
  for (const [p, st] of times) fs.utimesSync(p, st.atime, st.mtime);
  const t = spawnSync("tar", ["-C", staging, "--format=pax", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--sort=name", "-cf", layer, "."]);
  expect(t.status, t.stderr.toString()).toBe(0);
}

const canOverlay = isRoot && fs.readFileSync("/proc/filesystems", "utf8").includes("\toverlay\n");

/*
 * What podman does with overlay storage: a lower tree, changes made through
 * the kernel's overlay mount, the upper directory committed as the next
 * layer; then more changes through an overlay of both, committed as a third
 * layer. After each, the kernel's merged view is the tree the layers must
 * give, and umoci unpack of the layers (where umoci is installed) gives it
 * too. CFSCTL_OVERLAY_TREES=N runs N trees instead of the six.
 */
describe.skipIf(!canOverlay)("a random tree changed through overlayfs, twice: import-oci of the layers equals compute-id of the merged view", () => {
  if (!canOverlay) console.log("skipped: needs root and overlayfs");
  // Not trusted.overlay.* xattrs in the lower tree: overlayfs keeps those for
  // itself. ASCII names: getfattr and setfattr take them as UTF-8 strings.
  const keys = XATTR_KEYS.filter((k) => !k.startsWith("trusted.overlay."));
  const seeds = process.env.CFSCTL_OVERLAY_TREES ? Array.from({ length: Number(process.env.CFSCTL_OVERLAY_TREES) }, (_, i) => 1000 + i) : [1, 2, 3, 4, 5, 6];
  for (const s of seeds) {
    it(`tree ${s}`, async (ctx) => {
      await letRunnerIn();
      reseed(s * 104729);
      const work = tmpdir();
      const dir = (d: string) => {
        const p = path.join(work, d);
        fs.mkdirSync(p);
        return p;
      };
      const lowers = [dir("tree")];
      randomTree(lowers[0]!, keys, true);
      const layers = [path.join(work, "layer0.tar")];
      expect(spawnSync("tar", ["-C", lowers[0]!, "--format=pax", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--sort=name", "-cf", layers[0]!, "."]).status).toBe(0);
      for (let round = 1; round <= 2; round++) {
        const [upper, ovWork, merged] = [`upper${round}`, `work${round}`, `merged${round}`].map(dir);
        // lowerdir lists the top layer first.
        const lowerdir = [...lowers].reverse().join(":");
        const m = spawnSync("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${lowerdir},upperdir=${upper},workdir=${ovWork},redirect_dir=off,metacopy=off,index=off`, merged]);
        if (m.status !== 0) {
          console.log(`skipped: the overlay mount failed (${m.stderr.toString().trim()})`);
          ctx.skip();
          return;
        }
        let scanned: string;
        try {
          changeThrough(merged);
          const r = cfsctl(["compute-id", merged]);
          expect(r.status, r.stderr.toString()).toBe(0);
          scanned = r.stdout.toString().trim();
        } finally {
          spawnSync("umount", [merged]);
        }
        lowers.push(upper);
        layers.push(path.join(work, `layer${round}.tar`));
        upperAsLayer(upper, path.join(work, `staging${round}`), layers[round]!);
        expect(digestOf(["import-oci", ...layers]), `after round ${round}`).toBe(scanned);
        if (hasUmoci) {
          // umoci applies the same layers to the same tree.
          const layout = path.join(work, `image${round}`);
          for (const args of [["init", "--layout", layout], ["new", "--image", `${layout}:t`], ...layers.map((l) => ["raw", "add-layer", "--image", `${layout}:t`, l])]) {
            const r = spawnSync("umoci", args);
            expect(r.status, r.stderr.toString()).toBe(0);
          }
          const unpacked = cfsctl(["compute-id", umociUnpack(`${layout}:t`)]);
          expect(unpacked.stdout.toString().trim(), `umoci, after round ${round}`).toBe(scanned);
        }
      }
    });
  }
});
