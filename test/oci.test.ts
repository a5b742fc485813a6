/**
 * import-oci against layers written by real tools (GNU tar, umoci, podman)
 * and the trees those tools extracted; split streams given back bit for bit
 * by `cat`; sources (layer tarballs, OCI layout, oci-archive,
 * docker-archive) giving one digest; verification of blob digests and
 * diff_ids; gc of imported images.
 */
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { describe, expect, it } from "vitest";
import { FIXTURES, cfsctl, fsckErofs, hasFsckErofs, tmpdir } from "./helpers.js";
import { paxData, tar, type Member } from "./tar-writer.js";
import { imageRows, referenceRows, withoutXattr } from "./tree-rows.js";

const OCI = path.join(FIXTURES, "oci");
const G = path.join(OCI, "gnutar");

function importOci(repo: string, args: string[]): string {
  const r = cfsctl(["--repo", repo, "-q", "import-oci", ...args]);
  if (r.status !== 0) throw new Error(`import-oci ${args.join(" ")}: ${r.stderr}`);
  const digest = r.stdout.toString().trim();
  expect(digest).toMatch(/^[0-9a-f]{64}$/);
  return digest;
}

/** Import one layer, given as its bytes, into a new repository: the image's dump lines, the root's first. */
function dumpOfLayer(layer: Buffer, args: string[] = []): string[] {
  const file = path.join(tmpdir(), "layer.tar");
  fs.writeFileSync(file, layer);
  const repo = tmpdir();
  const digest = importOci(repo, [...args, file]);
  return cfsctl(["--repo", repo, "dump", digest]).stdout.toString().trim().split("\n");
}

function rowsOf(repo: string, digest: string): string[] {
  const image = path.join(repo, "images", digest);
  if (hasFsckErofs) fsckErofs(image);
  return imageRows(image, path.join(repo, "objects"));
}

/** Reference rows as the container-image rules leave them: no security.selinux without a policy. */
function expected(ref: string, keepSelinux = false): string[] {
  const rows = referenceRows(path.join(OCI, ref));
  return keepSelinux ? rows : rows.map((r) => withoutXattr(r, "security.selinux"));
}

function sha256(b: Buffer): string {
  return `sha256:${crypto.createHash("sha256").update(b).digest("hex")}`;
}

describe("GNU tar layers", () => {
  it("layer1 (pax, xattrs, sparse files, long names, devices) gives GNU tar's tree, labels kept with --selinux off", () => {
    const repo = tmpdir();
    const r = cfsctl(["--repo", repo, "-q", "import-oci", "--selinux", "off", path.join(G, "layer1.tar")]);
    expect(r.stderr).toBe("");
    expect(rowsOf(repo, r.stdout.toString().trim())).toEqual(expected("gnutar/reference-layer1.tsv.gz", true));
  });

  it("gzip and zstd copies give the same image as the plain tar", () => {
    const repo = tmpdir();
    const plain = importOci(repo, [path.join(G, "layer1.tar")]);
    expect(importOci(repo, [path.join(G, "layer1.tar.gz")])).toBe(plain);
    expect(importOci(repo, [path.join(G, "layer1.tar.zst")])).toBe(plain);
    expect(rowsOf(repo, plain)).toEqual(expected("gnutar/reference-layer1.tsv.gz"));
    // zstd with a skippable frame (metadata zstd passes over) before the data, and after it.
    const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0]), Buffer.from("meta")]);
    const zst = fs.readFileSync(path.join(G, "layer1.tar.zst"));
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, "first.tar.zst"), Buffer.concat([skippable, zst]));
    fs.writeFileSync(path.join(dir, "last.tar.zst"), Buffer.concat([zst, skippable]));
    expect(importOci(repo, [path.join(dir, "first.tar.zst")])).toBe(plain);
    expect(importOci(repo, [path.join(dir, "last.tar.zst")])).toBe(plain);
  });

  it("old GNU format (LongLink, old sparse, base-256 ids) gives GNU tar's tree", () => {
    const repo = tmpdir();
    const d = importOci(repo, [path.join(G, "layer1-gnu.tar")]);
    expect(rowsOf(repo, d)).toEqual(expected("gnutar/reference-layer1-gnu.tsv.gz"));
  });

  it("three layers with every whiteout case give umoci's tree", () => {
    const repo = tmpdir();
    const d = importOci(repo, ["layer1.tar", "layer2.tar", "layer3.tar"].map((f) => path.join(G, f)));
    expect(rowsOf(repo, d)).toEqual(expected("gnutar/reference-tree.tsv.gz"));
  });

  it("cat gives every layer back byte for byte, by diff_id and by stream digest", () => {
    const repo = tmpdir();
    const files = ["layer1.tar.gz", "layer2.tar", "layer3.tar"].map((f) => path.join(G, f));
    importOci(repo, files);
    for (const f of files) {
      let raw = fs.readFileSync(f);
      if (f.endsWith(".gz")) raw = zlib.gunzipSync(raw);
      const diffId = sha256(raw);
      const r = cfsctl(["--repo", repo, "cat", diffId]);
      expect(r.stderr).toBe("");
      expect(sha256(r.stdout)).toBe(diffId);
      const target = fs.readlinkSync(path.join(repo, "streams", `oci-layer-${diffId}`));
      const hex = target.split("/").slice(-2).join("");
      expect(cfsctl(["--repo", repo, "cat", hex]).stdout.equals(raw)).toBe(true);
    }
    // Files over 64 bytes are objects, not inline: the streams are small.
    const fsck = cfsctl(["--repo", repo, "fsck"]);
    expect(fsck.status, fsck.stdout.toString() + fsck.stderr).toBe(0);
  });
});

interface LayerRow {
  tag: string;
  layer: number;
  digest: string;
  diffId: string;
}

function layersTsv(dir: string): LayerRow[] {
  const lines = fs.readFileSync(path.join(dir, "layers.tsv"), "utf8").trim().split("\n");
  const head = lines[0]!.split("\t");
  return lines.slice(1).map((l) => {
    const c = l.split("\t");
    const get = (k: string) => c[head.indexOf(k)]!;
    return { tag: get("tag"), layer: Number(get("layer")), digest: get("digest"), diffId: get("diff_id") };
  });
}

describe("xattr names from PAX records", () => {
  it("keep their bytes, UTF-8 or not (SCHILY.xattr raw, LIBARCHIVE.xattr %-escaped)", () => {
    const raw = Buffer.from([0x75, 0x73, 0x65, 0x72, 0x2e, 0xff, 0xfe]); // "user." 0xff 0xfe
    const layer = tar([
      { name: "a", data: "x", paxRaw: [[Buffer.concat([Buffer.from("SCHILY.xattr."), raw]), Buffer.from("1")]] },
      { name: "b", data: "y", pax: { "SCHILY.xattr.user.\u00e9": "2" } },
      { name: "c", data: "z", pax: { "LIBARCHIVE.xattr.user.%C3%A9%FF": Buffer.from("3").toString("base64") } },
    ]);
    const dump = dumpOfLayer(layer, ["--selinux", "off"]).join("\n");
    expect(dump).toMatch(/^\/a 1 .* user\.\\xff\\xfe=1$/m);
    expect(dump).toMatch(/^\/b 1 .* user\.\\xc3\\xa9=2$/m);
    expect(dump).toMatch(/^\/c 1 .* user\.\\xc3\\xa9\\xff=3$/m);
  });
  it("SCHILY.xattr names are not %-decoded (as Go's archive/tar and composefs-rs read them)", () => {
    // GNU tar would extract this one as user.a=b%; podman and umoci keep the name as written.
    const layer = tar([{ name: "a", data: "x", pax: { "SCHILY.xattr.user.a%3Db%25": "v" } }]);
    const dump = dumpOfLayer(layer, ["--selinux", "off"]).join("\n");
    expect(dump).toMatch(/^\/a 1 .* user\.a%3Db%25=v$/m);
  });
  it("from two PAX headers before one member add up, the later record winning", () => {
    const layer = tar([
      { name: "PaxHeaders/1", type: "x", data: paxData({ path: "p", "SCHILY.xattr.user.a": "1" }) },
      { name: "f", data: "x", pax: { "SCHILY.xattr.user.a": "2", "SCHILY.xattr.user.b": "3" } },
    ]);
    const dump = dumpOfLayer(layer, ["--selinux", "off"]).join("\n");
    expect(dump).toMatch(/^\/p 1 .* user\.a=2 user\.b=3$/m);
  });
  it("many a member, a key given twice (SCHILY and LIBARCHIVE) keeps the later value once", () => {
    const pax: Record<string, string> = {};
    for (let i = 0; i < 40; i++) pax[`SCHILY.xattr.user.k${String(i).padStart(2, "0")}`] = `v${i}`;
    pax["LIBARCHIVE.xattr.user.k07"] = Buffer.from("again").toString("base64");
    const line = dumpOfLayer(tar([{ name: "f", data: "x", pax }]), ["--selinux", "off"]).find((l) => l.startsWith("/f "))!;
    const xattrs = line.split(" ").slice(11);
    expect(xattrs.length).toBe(40);
    expect(xattrs).toContain("user.k07=again");
    expect(xattrs).not.toContain("user.k07=v7");
  });
});

describe("umoci layout", () => {
  const U = path.join(OCI, "umoci-tiny");
  const layout = path.join(U, "image");

  it("DIR:TAG gives umoci unpack's tree for layer1, layer3 and latest (truncated insert layers)", () => {
    const repo = tmpdir();
    expect(rowsOf(repo, importOci(repo, [`${layout}:layer1`]))).toEqual(expected("umoci-tiny/reference-layer1.tsv.gz"));
    expect(rowsOf(repo, importOci(repo, [`${layout}:layer3`]))).toEqual(expected("umoci-tiny/reference-layer3.tsv.gz"));
    expect(rowsOf(repo, importOci(repo, [`${layout}:latest`]))).toEqual(expected("umoci-tiny/reference-tree.tsv.gz"));
  });

  it("the blobs given as separate layer tarballs give the same digest; cat gives umoci's truncated layers back", () => {
    const repo = tmpdir();
    const viaLayout = importOci(repo, [`${layout}:latest`]);
    const rows = layersTsv(U).filter((r) => r.tag === "latest").sort((a, b) => a.layer - b.layer);
    expect(rows.length).toBe(5);
    const blobs = rows.map((r) => path.join(layout, "blobs", "sha256", r.digest.slice(7)));
    expect(importOci(repo, blobs)).toBe(viaLayout);
    for (const r of rows) {
      const out = cfsctl(["--repo", repo, "cat", r.diffId]);
      expect(out.status, out.stderr).toBe(0);
      expect(out.stdout.equals(zlib.gunzipSync(fs.readFileSync(path.join(layout, "blobs", "sha256", r.digest.slice(7)))))).toBe(true);
    }
  });

  it("several manifests and no tag is an error listing the tags", () => {
    const repo = tmpdir();
    const r = cfsctl(["--repo", repo, "import-oci", layout]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^cfsctl: error: .*manifests.*layer1.*latest.*\n$/);
    const t = cfsctl(["--repo", repo, "import-oci", `${layout}:nosuchtag`]);
    expect(t.status).toBe(1);
    expect(t.stderr).toMatch(/no manifest tagged "nosuchtag"/);
  });
});

describe("podman oci-archive", () => {
  for (const which of ["podman-overlay", "podman-vfs"]) {
    it(`${which}: the archive gives umoci unpack's tree, and cat gives every layer back`, () => {
      const repo = tmpdir();
      const archive = path.join(OCI, which, "image.oci-archive.tar");
      const d = importOci(repo, [archive]);
      expect(rowsOf(repo, d)).toEqual(expected(`${which}/reference-tree.tsv.gz`));
      for (const r of layersTsv(path.join(OCI, which))) {
        const out = cfsctl(["--repo", repo, "cat", r.diffId]);
        expect(out.status, out.stderr).toBe(0);
        expect(sha256(out.stdout)).toBe(r.diffId);
      }
    });
  }
});

describe("docker-archive", () => {
  const files = ["layer1.tar", "layer2.tar", "layer3.tar"];

  /**
   * A docker-archive of the GNU tar layers, named `tag`: each layer stored
   * as `layerName(hex)` (a directory part is made), then the config and
   * manifest.json, and any `extra` files; returns the archive's path.
   */
  const dockerArchive = (tag: string, layerName: (hex: string) => string, extra: (hexes: string[]) => Record<string, string> = () => ({})) => {
    const dir = tmpdir();
    const hexes = files.map((f) => sha256(fs.readFileSync(path.join(G, f))).slice(7));
    const layerPaths = hexes.map(layerName);
    files.forEach((f, i) => {
      fs.mkdirSync(path.dirname(path.join(dir, layerPaths[i]!)), { recursive: true });
      fs.copyFileSync(path.join(G, f), path.join(dir, layerPaths[i]!));
    });
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: hexes.map((h) => `sha256:${h}`) } }));
    const configName = `${sha256(config).slice(7)}.json`;
    fs.writeFileSync(path.join(dir, configName), config);
    fs.writeFileSync(path.join(dir, "manifest.json"), JSON.stringify([{ Config: configName, RepoTags: [tag], Layers: layerPaths }]));
    const more = extra(hexes);
    for (const [name, text] of Object.entries(more)) fs.writeFileSync(path.join(dir, name), text);
    const archive = path.join(tmpdir(), "docker.tar");
    const members = [...layerPaths.map((p) => p.split("/")[0]!), configName, "manifest.json", ...Object.keys(more)];
    expect(spawnSync("tar", ["-C", dir, "-cf", archive, ...members]).status).toBe(0);
    return archive;
  };

  it("a docker save style archive gives the digest of its layers imported one by one", () => {
    const archive = dockerArchive("localhost/x:latest", (hex) => `${hex}/layer.tar`);
    const repo = tmpdir();
    const viaArchive = importOci(repo, [archive]);
    expect(importOci(repo, files.map((f) => path.join(G, f)))).toBe(viaArchive);
    expect(importOci(repo, [`${archive}:localhost/x:latest`])).toBe(viaArchive);
  });

  it("as skopeo and podman write it (layers as <hex>.tar, first in the archive) gives the same digest", () => {
    const archive = dockerArchive("example/img:t", (hex) => `${hex}.tar`, (hexes) => ({ repositories: JSON.stringify({ "example/img": { t: hexes[2]! } }) }));
    const repo = tmpdir();
    const viaArchive = importOci(repo, [archive]);
    expect(importOci(repo, files.map((f) => path.join(G, f)))).toBe(viaArchive);
    expect(importOci(repo, [`${archive}:example/img:t`])).toBe(viaArchive);
  });
});

describe("gc of imported images", () => {
  it("named imports survive gc; removing the refs frees exactly what only that image used", () => {
    const repo = tmpdir();
    const a = cfsctl(["--repo", repo, "-q", "import-oci", "--name", "a", ...["layer1.tar", "layer2.tar", "layer3.tar"].map((f) => path.join(G, f))]);
    const b = cfsctl(["--repo", repo, "-q", "import-oci", "--name", "b", `${path.join(OCI, "umoci-tiny", "image")}:latest`]);
    expect(a.status, a.stderr).toBe(0);
    expect(b.status, b.stderr).toBe(0);
    const objects = () => {
      const out: string[] = [];
      for (const d of fs.readdirSync(path.join(repo, "objects"))) for (const f of fs.readdirSync(path.join(repo, "objects", d))) out.push(d + f);
      return out.sort();
    };
    const all = objects();
    const dry = cfsctl(["--repo", repo, "gc", "--dry-run"]);
    expect(dry.status, dry.stderr).toBe(0);
    expect(cfsctl(["--repo", repo, "gc"]).status).toBe(0);
    expect(objects()).toEqual(all);
    const layer1 = sha256(fs.readFileSync(path.join(G, "layer1.tar")));
    expect(cfsctl(["--repo", repo, "cat", layer1]).status).toBe(0);

    // What b needs: its image, its streams and every object they name.
    const onlyB = new Set<string>();
    const imgB = fs.readlinkSync(path.join(repo, "images", b.stdout.toString().trim()));
    onlyB.add(imgB.split("/").slice(-2).join(""));
    for (const o of cfsctl(["--repo", repo, "image-objects", b.stdout.toString().trim()]).stdout.toString().split("\n")) if (o) onlyB.add(o);
    fs.unlinkSync(path.join(repo, "images", "refs", "a"));
    fs.unlinkSync(path.join(repo, "streams", "refs", "a"));
    const gc = cfsctl(["--repo", repo, "gc"]);
    expect(gc.status, gc.stderr).toBe(0);
    const left = objects();
    expect(left.length).toBeLessThan(all.length);
    for (const o of onlyB) expect(left).toContain(o);
    expect(cfsctl(["--repo", repo, "cat", layer1]).status).toBe(1);
    const fsck = cfsctl(["--repo", repo, "fsck"]);
    expect(fsck.status, fsck.stdout.toString()).toBe(0);
    for (const r of layersTsv(path.join(OCI, "umoci-tiny")).filter((r) => r.tag === "latest")) {
      expect(cfsctl(["--repo", repo, "cat", r.diffId]).status).toBe(0);
    }
    // Everything left is b's: dropping b's refs and collecting empties the store.
    fs.unlinkSync(path.join(repo, "images", "refs", "b"));
    fs.unlinkSync(path.join(repo, "streams", "refs", "b"));
    expect(cfsctl(["--repo", repo, "gc"]).status).toBe(0);
    expect(objects()).toEqual([]);
  });
});

describe("importing again", () => {
  it("stores nothing new, and reads stored layers from their split streams instead of the blobs", () => {
    const repo = tmpdir();
    const src = tmpdir();
    fs.cpSync(path.join(OCI, "umoci-tiny", "image"), src, { recursive: true });
    const first = importOci(repo, [`${src}:latest`]);
    const listing = () => {
      const out: string[] = [];
      const walk = (rel: string) => {
        for (const d of fs.readdirSync(path.join(repo, rel), { withFileTypes: true })) {
          out.push(path.join(rel, d.name));
          if (d.isDirectory()) walk(path.join(rel, d.name));
        }
      };
      walk("");
      return out.sort();
    };
    const before = listing();
    expect(importOci(repo, [`${src}:latest`])).toBe(first);
    expect(listing()).toEqual(before);
    // With every layer blob gone, the stored streams still give the image.
    for (const r of layersTsv(path.join(OCI, "umoci-tiny")).filter((r) => r.tag === "latest")) {
      fs.rmSync(path.join(src, "blobs", "sha256", r.digest.slice(7)), { force: true });
    }
    expect(importOci(repo, [`${src}:latest`])).toBe(first);
    // The GNU tar layers (sparse files, long names) read back from their streams give the same tree too.
    const g = ["layer1.tar", "layer2.tar", "layer3.tar"].map((f) => path.join(G, f));
    const loose = importOci(repo, g);
    const dir = tmpdir();
    const diffIds = g.map((f) => sha256(fs.readFileSync(f)));
    const blobs = path.join(dir, "blobs", "sha256");
    fs.mkdirSync(blobs, { recursive: true });
    const put = (b: Buffer) => {
      fs.writeFileSync(path.join(blobs, sha256(b).slice(7)), b);
      return { digest: sha256(b), size: b.length };
    };
    const config = put(Buffer.from(JSON.stringify({ rootfs: { type: "layers", diff_ids: diffIds } })));
    // Layer descriptors name blobs that are not there: only the stored streams can serve them.
    const manifest = put(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
          layers: g.map((f) => {
            const b = fs.readFileSync(f);
            fs.writeFileSync(path.join(blobs, sha256(b).slice(7)), b);
            return { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(b), size: b.length };
          }),
        }),
      ),
    );
    fs.writeFileSync(path.join(dir, "oci-layout"), "{}");
    fs.writeFileSync(path.join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", ...manifest }] }));
    for (const id of diffIds) fs.writeFileSync(path.join(blobs, id.slice(7)), "not the layer");
    expect(importOci(repo, [dir])).toBe(loose);
  });
});

describe("the JavaScript paths (CFSCTL_NATIVE=0)", () => {
  it("store the same objects and streams and print the same digests as the native writer and hasher", () => {
    const listing = (repo: string): string[] =>
      spawnSync("find", [".", "-not", "-name", ".*", "-printf", "%y %s %P\\n"], { cwd: repo, encoding: "utf8" })
        .stdout.split("\n")
        .filter((l) => l && !l.includes(".lock"))
        .sort();
    const sources = [[...["layer1.tar", "layer2.tar", "layer3.tar"].map((f) => path.join(G, f))], [`${path.join(OCI, "umoci-tiny", "image")}:latest`]];
    const repos = ["1", "0"].map((mode) => {
      const repo = tmpdir();
      const digests = sources.map((args) => {
        const r = cfsctl(["--repo", repo, "-q", "import-oci", ...args], { env: { CFSCTL_NATIVE: mode } });
        expect(r.stderr).toBe("");
        return r.stdout.toString();
      });
      expect(cfsctl(["--repo", repo, "fsck"], { env: { CFSCTL_NATIVE: mode } }).status).toBe(0);
      return { digests, files: listing(repo) };
    });
    expect(repos[1]!.digests).toEqual(repos[0]!.digests);
    expect(repos[1]!.files).toEqual(repos[0]!.files);
    expect(repos[0]!.files.filter((l) => l.startsWith("f ")).length).toBeGreaterThan(20);
  });
});

describe("LayerReader's background writes", () => {
  it("with a tiny memory bound, every object is still written whole (batches handed over early, never stuck)", async () => {
    const { LayerReader } = await import("../src/oci/layer.js");
    const { fsverityDigest } = await import("../src/fsverity/digest.js");
    const { tar, gzip } = await import("./tar-writer.js");
    const { Readable } = await import("node:stream");
    const dir = tmpdir("cfsctl-layer-");
    const datas = Array.from({ length: 300 }, (_, i) => crypto.createHash("sha512").update(`f${i}`).digest().toString("hex").repeat(1 + (i % 40)));
    const layer = gzip(tar(datas.map((d, i) => ({ name: `f${i}`, data: d }))));
    for (const max of [1, 4096, 1 << 20]) {
      const objects = path.join(dir, `objects-${max}`);
      fs.mkdirSync(objects);
      let n = 0;
      const reader = new LayerReader({ dir: objects, algorithm: "sha256", hasObject: () => false, tmpName: () => `.tmp-${n++}`, heldBytesMax: max });
      const seen: Buffer[] = [];
      await reader.read({ label: "layer", open: () => Readable.from([layer]) }, null, (_e, data) => {
        if (data && "digest" in data) seen.push(data.digest);
      });
      await reader.settle();
      expect(seen.length).toBe(300);
      expect(reader.pending.size).toBe(new Set(datas).size);
      for (const d of datas) {
        const p = reader.pending.get(fsverityDigest(Buffer.from(d)).toString("hex"));
        expect(p, d.slice(0, 16)).toBeDefined();
        expect(fs.readFileSync(p!.tmp, "utf8")).toBe(d);
      }
      reader.discard();
      expect(fs.readdirSync(objects)).toEqual([]);
    }
  });
});

describe("whiteouts act on lower layers only, wherever they stand in their own layer", () => {
  const dir = tmpdir();
  const dirEntry = (name: string): Member => ({ name, type: "5", mode: 0o755, mtime: 1000 });
  const file = (name: string, data: string): Member => ({ name, data, mtime: 1000 });
  const marker = (name: string): Member => ({ name, mode: 0, mtime: 1000 });
  /** The tree (dump lines, root dropped) of the layers given lowest first. */
  const treeOf = (...layers: Member[][]): string[] => {
    const repo = tmpdir();
    const files = layers.map((members, i) => {
      const f = path.join(dir, `${crypto.randomUUID()}-${i}.tar`);
      fs.writeFileSync(f, tar(members));
      return f;
    });
    const d = importOci(repo, files);
    const out = cfsctl(["--repo", repo, "dump", d]).stdout.toString().trim().split("\n").slice(1);
    return out.map((l) => l.split(" ").slice(0, 3).join(" ") + (l.split(" ")[7] === "0.0" ? " implicit" : ""));
  };
  const lower = [dirEntry("d/"), dirEntry("d/sub/"), file("d/sub/old", "old"), file("d/gone", "gone"), file("keep", "k")];

  it(".wh.NAME after this layer's own entries below NAME keeps them", () => {
    expect(treeOf(lower, [file("d/x", "new"), marker(".wh.d")])).toEqual(["/d 40 40755 implicit", "/d/x 3 100644", "/keep 1 100644"]);
  });

  it("an opaque marker after this layer's entries in the directory keeps them, and hides what lies below them in lower layers", () => {
    // As a name-sorted tar lists them: `d/sub/` (listed again) and its new file before `d/.wh..wh..opq`.
    expect(treeOf(lower, [dirEntry("d/"), dirEntry("d/sub/"), file("d/sub/y", "y"), marker("d/.wh..wh..opq")])).toEqual([
      "/d 42 40755",
      "/d/sub 40 40755",
      "/d/sub/y 1 100644",
      "/keep 1 100644",
    ]);
    // Not listed again: the directory holding the new file is made as an implicit parent.
    expect(treeOf(lower, [file("d/sub/y", "y"), marker("d/.wh..wh..opq")])).toEqual(["/d 42 40755", "/d/sub 40 40755 implicit", "/d/sub/y 1 100644", "/keep 1 100644"]);
  });

  it("a directory whited out and made again in one layer holds only the new entries, in either order", () => {
    const want = ["/d 42 40755", "/d/new 3 100644", "/keep 1 100644"];
    expect(treeOf(lower, [marker(".wh.d"), dirEntry("d/"), file("d/new", "new")])).toEqual(want);
    expect(treeOf(lower, [dirEntry("d/"), file("d/new", "new"), marker(".wh.d")])).toEqual(want);
  });
});

describe("parents no layer lists", () => {
  it("are made as mkdir makes them: 0755 root-owned, in a set-group-ID directory with that bit and its group", () => {
    const layer = tar([
      { name: "d/", type: "5", mode: 0o2775, gid: 50, mtime: 1000 },
      { name: "d/imp/deeper/f", data: "x", mtime: 1000 },
      { name: "plain/f", data: "y", mtime: 1000 },
    ]);
    const rows = dumpOfLayer(layer).slice(1);
    expect(rows.map((l) => l.split(" ").slice(0, 8).join(" "))).toEqual([
      "/d 42 42775 3 0 50 0 1000.0",
      "/d/imp 45 42755 3 0 50 0 0.0",
      "/d/imp/deeper 40 42755 2 0 50 0 0.0",
      "/d/imp/deeper/f 1 100644 1 0 0 0 1000.0",
      "/plain 40 40755 2 0 0 0 0.0",
      "/plain/f 1 100644 1 0 0 0 1000.0",
    ]);
  });
});

describe("V7-era directories", () => {
  it("an entry with typeflag NUL whose name ends in / is a directory, as Go's archive/tar and GNU tar read it", () => {
    const members: Member[] = [{ name: "d/", mode: 0o750, mtime: 1000 }, { name: "d/f", data: "x", mtime: 1000 }];
    const raw = tar(members);
    raw[156] = 0; // typeflag NUL (the checksum counts it as a space: fix the header's sum below)
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : raw[i]!;
    raw.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
    const rows = dumpOfLayer(raw);
    expect(rows.slice(1).map((l) => l.split(" ").slice(0, 3).join(" "))).toEqual(["/d 40 40750", "/d/f 1 100644"]);
  });
});

describe("empty PAX values", () => {
  it("delete their record: the ustar fields hold (path, size, uid, gid, mtime); an empty xattr value is an empty xattr", () => {
    const pax = { path: "", size: "", uid: "", gid: "", mtime: "", "SCHILY.xattr.user.e": "" };
    const rows = dumpOfLayer(tar([{ name: "f", data: "x", uid: 5, gid: 6, mtime: 1234, pax }]));
    expect(rows.slice(1)).toEqual(["/f 1 100644 1 5 6 0 1234.0 - x - user.e="]);
  });
});

describe("absolute member names", () => {
  it("are read from the image root, hardlink targets too: the same image as relative names", () => {
    const dir = tmpdir();
    const make = (prefix: string) => {
      const f = path.join(dir, `${prefix === "/" ? "abs" : "rel"}.tar`);
      fs.writeFileSync(
        f,
        tar([
          { name: `${prefix}etc/`, type: "5", mode: 0o755, mtime: 1000 },
          { name: `${prefix}etc/passwd`, data: "root:x:0:0::/root:/bin/sh\n", mtime: 1000 },
          { name: "etc/link", type: "1", linkname: `${prefix}etc/passwd`, mtime: 1000 },
        ]),
      );
      return f;
    };
    const repo = tmpdir();
    const rel = importOci(repo, [make("")]);
    expect(importOci(repo, [make("/")])).toBe(rel);
    const rows = cfsctl(["--repo", repo, "dump", rel]).stdout.toString().trim().split("\n");
    expect(rows.map((l) => l.split(" ").slice(0, 4).join(" "))).toEqual(["/ 4096 40555 3", "/etc 61 40755 2", "/etc/link 26 100644 2", "/etc/passwd 26 @100644 2"]);
  });
});
