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
