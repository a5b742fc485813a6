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
import { FIXTURES, cfsctl, isRoot, tmpdir } from "./helpers.js";

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

describe.skipIf(!isRoot)("random trees packed by GNU tar: import-oci equals compute-id of the tree", () => {
  // Every file type, owners, odd modes, nanosecond mtimes, xattrs of every
  // namespace (names without `=` or `%`, which GNU tar alone encodes: see
  // doc/oci.md), hardlinks, names with any byte; packed the way
  // fixtures/oci/gnutar/layer1.tar was. Fixed seeds.
  let seed = 0;
  const rnd = () => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const name = (): Buffer => {
    for (;;) {
      const b = Buffer.alloc(1 + int(rnd() < 0.05 ? 200 : 8));
      for (let i = 0; i < b.length; i++) b[i] = rnd() < 0.85 ? pick([...Buffer.from("abcxyz019._-")]) : 1 + int(255);
      for (let i = 0; i < b.length; i++) if (b[i] === 0x2f) b[i] = 0x5f;
      const s = b.toString("latin1");
      if (s !== "." && s !== ".." && !s.startsWith(".wh.") && s !== ".new") return b;
    }
  };
  const keys = ["user.a", "user.b", "user.overlay.x", "trusted.overlay.opaque", "trusted.x", "security.capability", "security.ima"];

  function randomTree(root: string): void {
    const tmp = path.join(root, ".new");
    const dirs = [Buffer.from(root)];
    const files: Buffer[] = [];
    for (let i = 60 + int(60); i > 0; i--) {
      const p = Buffer.concat([pick(dirs), Buffer.from("/"), name()]);
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
      else spawnSync("mknod", [tmp, t, String(int(300)), String(int(300))]);
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

  for (const s of [1, 2, 3, 4, 5]) {
    it(`tree ${s}`, () => {
      seed = s * 7919;
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
