/**
 * Hostile and broken layers and images: each is refused with one clean
 * `cfsctl: error:` line and exit 1, quickly, and the repository is left
 * exactly as it was (no object, stream, image or temporary file added).
 */
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { fsverityDigest } from "../src/fsverity/digest.js";
import { FIXTURES, cfsctl, rng, tmpdir } from "./helpers.js";
import { gzip, header, tar } from "./tar-writer.js";

const G = path.join(FIXTURES, "oci", "gnutar");

function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const d of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, d.name);
      out.push(r);
      if (d.isDirectory()) walk(r);
    }
  };
  walk("");
  return out.sort();
}

let repo: string;
let before: string[];
beforeAll(() => {
  repo = tmpdir();
  const r = cfsctl(["--repo", repo, "-q", "import-oci", "--name", "base", path.join(G, "layer2.tar")]);
  expect(r.status, r.stderr).toBe(0);
  before = listing(repo);
});

function refused(files: Buffer[] | string[], message: RegExp): void {
  const dir = tmpdir();
  const args = files.map((f, i) => {
    if (typeof f === "string") return f;
    const p = path.join(dir, `layer${i}.tar`);
    fs.writeFileSync(p, f);
    return p;
  });
  const t0 = Date.now();
  const r = cfsctl(["--repo", repo, "-q", "import-oci", ...args]);
  expect(Date.now() - t0).toBeLessThan(15000);
  expect(r.status, r.stderr).toBe(1);
  expect(r.stdout.length).toBe(0);
  expect(r.stderr).toMatch(/^cfsctl: error: [^\n]+\n$/);
  // Names from the layer reach the message with no control character a terminal would act on.
  expect(r.stderr.slice(0, -1)).not.toMatch(/[\x00-\x08\x0a-\x1f\x7f-\x9f]/);
  expect(r.stderr).toMatch(message);
  // The file is named once, not once per layer of the code that passed the error on.
  expect(r.stderr).not.toMatch(/ (\S+): \1: /);
  expect(listing(repo)).toEqual(before);
}

const big = (n: number) => Buffer.alloc(n, 0x61);

/** One PAX record: its length counts its own digits. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let n = body.length + 1;
  while (String(n).length + body.length !== n) n++;
  return `${n}${body}`;
}

describe("hostile layers", () => {
  const cases: Array<[string, () => Buffer[], RegExp]> = [
    ["path traversal with ..", () => [tar([{ name: "../escape", data: "x" }])], /'\.\.' refused/],
    ["traversal hidden in the middle", () => [tar([{ name: "a/", type: "5" }, { name: "a/../../b", data: big(100) }])], /'\.\.' refused/],
    ["PAX path with ..", () => [tar([{ name: "ok", data: "x", pax: { path: "x/../../../root/.ssh/authorized_keys" } }])], /'\.\.' refused/],
    ["write through a symlink", () => [tar([{ name: "l", type: "2", linkname: "/etc" }, { name: "l/passwd", data: "x" }])], /is a symlink/],
    ["write through a symlink of a lower layer", () => [tar([{ name: "l", type: "2", linkname: "/etc" }]), tar([{ name: "l/passwd", data: "x" }])], /is a symlink/],
    ["write through a file", () => [tar([{ name: "f", data: "x" }, { name: "f/x", data: "y" }])], /not a directory/],
    ["hardlink to a missing entry", () => [tar([{ name: "h", type: "1", linkname: "nothere" }])], /hardlink to a missing entry/],
    ["hardlink to a directory", () => [tar([{ name: "d/", type: "5" }, { name: "h", type: "1", linkname: "d" }])], /hardlink to a directory/],
    ["hardlink out of the tree", () => [tar([{ name: "h", type: "1", linkname: "../../etc/shadow" }])], /'\.\.' refused/],
    [
      "hardlink to a missing entry, named with terminal escapes",
      () => [tar([{ name: "h", type: "1", linkname: "x\x1b]0;title\x07\x1b[2J\x7f" }])],
      // Layer paths are quoted as JSON strings; DEL, which JSON leaves alone, as \x7f.
      /hardlink to a missing entry x\\u001b\]0;title\\u0007\\u001b\[2J\\x7f\n/,
    ],
    ["hardlink through a symlink", () => [tar([{ name: "l", type: "2", linkname: "/etc" }, { name: "h", type: "1", linkname: "l/passwd" }])], /hardlink to a missing entry/],
    ["truncated inside a file", () => [tar([{ name: "f", data: big(5000) }]).subarray(0, 512 + 3000)], /truncated/],
    ["truncated inside a header", () => [tar([{ name: "f", data: big(10) }]).subarray(0, 300)], /truncated inside a header/],
    ["bad header checksum", () => {
      const t = tar([{ name: "f", data: "x" }]);
      t[10] ^= 0x40;
      return [t];
    }, /checksum/],
    ["not a tar at all", () => [crypto.randomBytes(4096)], /checksum|not a tar/],
    ["huge declared size", () => [Buffer.concat([header({ name: "f", size: 0o77777777777 }), big(1024)])], /truncated/],
    ["huge PAX size", () => [tar([{ name: "f", data: "x", pax: { size: "99999999999999" } }])], /truncated/],
    ["huge PAX header", () => [Buffer.concat([header({ name: "p", type: "x", size: 1 << 30 }), big(4096)])], /too large/],
    ["malformed PAX record", () => [Buffer.concat([header({ name: "p", type: "x", data: "99 path=x\n" }), Buffer.from("99 path=x\n"), Buffer.alloc(502), header({ name: "f" }), Buffer.alloc(1024)])], /PAX/],
    ["negative size", () => {
      const h = header({ name: "f" });
      h[124] = 0xff; // base-256, negative
      h.fill(0xff, 125, 136);
      h.fill(0x20, 148, 156);
      let sum = 0;
      for (const b of h) sum += b;
      h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
      return [Buffer.concat([h, Buffer.alloc(1024)])];
    }, /negative size/],
    ["name longer than 255 bytes", () => [tar([{ name: "x", data: "y", pax: { path: "n".repeat(300) } }])], /longer than 255/],
    ["root entry that is not a directory", () => [tar([{ name: "./", data: "x" }])], /root entry is not a directory/],
    ["corrupt gzip", () => {
      const z = gzip(tar([{ name: "f", data: crypto.randomBytes(100000) }]));
      z.fill(0x55, 100, 200);
      return [z];
    }, /layer0\.tar: (gzip|tar): /],
    ["corrupt zstd", () => {
      const z = fs.readFileSync(path.join(G, "layer1.tar.zst"));
      return [Buffer.concat([z.subarray(0, 5000), Buffer.alloc(3000, 0x5a)])];
    }, /layer0\.tar: (zstd|tar): /],
    ["sparse map past the end of the file", () => [tar([{ name: "GNUSparseFile.0/s", data: "x", pax: { "GNU.sparse.size": "10", "GNU.sparse.map": "100,1", "GNU.sparse.name": "s" } }])], /sparse map/],
    ["unsupported entry type", () => [tar([{ name: "v", type: "V" }])], /unsupported tar entry type/],
    // A NUL byte would end the name to every C reader (and the kernel): refused, as Go's archive/tar does.
    ["NUL byte in a PAX path", () => [tar([{ name: "f", data: "x", pax: { path: "a\0b" } }])], /NUL byte in PAX path/],
    ["NUL byte in a PAX linkpath", () => [tar([{ name: "l", type: "2", linkname: "t", pax: { linkpath: "tar\0get" } }])], /NUL byte in PAX linkpath/],
    ["NUL byte in a PAX xattr name", () => [tar([{ name: "f", data: "x", pax: { "SCHILY.xattr.user.a\0b": "1" } }])], /NUL byte in a PAX record name/],
    ["NUL byte in a LIBARCHIVE xattr name", () => [tar([{ name: "f", data: "x", pax: { "LIBARCHIVE.xattr.user.a%00b": "MQ==" } }])], /NUL byte in a PAX record name/],
    // One PAX path 100,000 directories deep: refused as a member, before any
    // walk of the tree (a recursive one overflowed the stack).
    ["a path 100,000 directories deep", () => [tar([{ name: "f", data: "x", pax: { path: "a/".repeat(100000) + "f" } }])], /nest deeper than 2048 levels/],
    ["a directory 2048 levels deep", () => [tar([{ name: "d/", type: "5", pax: { path: "d/".repeat(2048) } }])], /nest deeper than 2048 levels/],
    // 3,000 PAX headers before one member: each used to copy the records so
    // far (minutes for 12 MB); now they add up to the limit of one header.
    ["thousands of PAX headers before one member", () => {
      const records = (i: number) => Array.from({ length: 100 }, (_, j) => paxRecord(`SCHILY.xattr.user.h${i}r${j}`, "x")).join("");
      const parts: Buffer[] = [];
      for (let i = 0; i < 3000; i++) {
        const data = Buffer.from(records(i));
        parts.push(header({ name: `PaxHeaders/${i}`, type: "x", size: data.length }), data, Buffer.alloc((512 - (data.length % 512)) % 512));
      }
      return [Buffer.concat([...parts, header({ name: "f" }), Buffer.alloc(1024)])];
    }, /PAX headers of more than 1048576 bytes for one member/],
  ];
  for (const [name, make, msg] of cases) it(name, () => refused(make(), msg));

  it("a missing layer file", () => refused(["/nonexistent/layer.tar"], /No such file or directory/));
});

describe("verification", () => {
  /** An OCI layout of the given layer bytes, with diff_ids as given (default: the right ones). */
  function layout(layers: Buffer[], diffIds?: string[]): string {
    const dir = tmpdir();
    const blobs = path.join(dir, "blobs", "sha256");
    fs.mkdirSync(blobs, { recursive: true });
    const put = (b: Buffer) => {
      const hex = crypto.createHash("sha256").update(b).digest("hex");
      fs.writeFileSync(path.join(blobs, hex), b);
      return { digest: `sha256:${hex}`, size: b.length };
    };
    const ids = diffIds ?? layers.map((l) => `sha256:${crypto.createHash("sha256").update(l).digest("hex")}`);
    const config = put(Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: ids } })));
    const manifest = put(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
          layers: layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", ...put(l) })),
        }),
      ),
    );
    fs.writeFileSync(path.join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
    fs.writeFileSync(
      path.join(dir, "index.json"),
      JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", ...manifest, annotations: { "org.opencontainers.image.ref.name": "t" } }] }),
    );
    return dir;
  }
  const l1 = fs.readFileSync(path.join(G, "layer2.tar"));
  const l2 = tar([{ name: "new", data: big(1000) }]);

  it("a correct layout imports", () => {
    const r = cfsctl(["--repo", tmpdir(), "-q", "import-oci", `${layout([l1, l2])}:t`]);
    expect(r.status, r.stderr).toBe(0);
  });

  it("a diff_id mismatch is refused and nothing is linked", () => {
    refused([`${layout([l1, l2], [`sha256:${"0".repeat(64)}`, `sha256:${crypto.createHash("sha256").update(l2).digest("hex")}`])}:t`] as string[], /does not match the config's diff_id/);
  });

  it("a blob that does not match its digest is refused and nothing is linked", () => {
    const dir = layout([l1, l2]);
    const hex = crypto.createHash("sha256").update(l2).digest("hex");
    const p = path.join(dir, "blobs", "sha256", hex);
    const b = fs.readFileSync(p);
    b[600] ^= 1; // inside the file data
    fs.writeFileSync(p, b);
    refused([dir], /blob digest mismatch/);
  });

  it("a manifest that does not match its digest is refused", () => {
    const dir = layout([l1]);
    const index = JSON.parse(fs.readFileSync(path.join(dir, "index.json"), "utf8"));
    const mp = path.join(dir, "blobs", "sha256", index.manifests[0].digest.slice(7));
    fs.writeFileSync(mp, fs.readFileSync(mp, "utf8").replace('"schemaVersion":2', '"schemaVersion":2 '));
    refused([dir], /size|digest mismatch/);
  });

  it("a descriptor digest with a path in it is refused", () => {
    const dir = layout([l1]);
    const index = JSON.parse(fs.readFileSync(path.join(dir, "index.json"), "utf8"));
    index.manifests[0].digest = "sha256:../../../../etc/passwd";
    fs.writeFileSync(path.join(dir, "index.json"), JSON.stringify(index));
    refused([dir], /malformed digest/);
  });

  it("a layout copy made by tar and imported as an oci-archive gives the layout's digest", () => {
    const dir = layout([l1, l2]);
    const archive = path.join(tmpdir(), "img.tar");
    const t = spawnSync("tar", ["-C", dir, "-cf", archive, "oci-layout", "index.json", "blobs"]);
    expect(t.status).toBe(0);
    const a = cfsctl(["--repo", tmpdir(), "-q", "import-oci", archive]);
    const b = cfsctl(["--repo", tmpdir(), "-q", "import-oci", dir]);
    expect(a.status, a.stderr).toBe(0);
    expect(a.stdout.toString()).toBe(b.stdout.toString());
  });
});

describe("deep and wide", () => {
  it("a path 2047 directories deep imports (the deepest an image holds)", () => {
    const deep = Array.from({ length: 2047 }, () => "d").join("/");
    const r = cfsctl(["--repo", tmpdir(), "-q", "import-oci", (() => {
      const p = path.join(tmpdir(), "deep.tar");
      fs.writeFileSync(p, tar([{ name: "f", data: "x", pax: { path: `${deep}/f` } }]));
      return p;
    })()]);
    expect(r.status, r.stderr).toBe(0);
  });
});

describe("damaged split streams", () => {
  it("cat of a stream with flipped or cut bytes fails cleanly or gives bytes that are then checked", () => {
    const r0 = tmpdir();
    const layer = path.join(G, "layer2.tar");
    expect(cfsctl(["--repo", r0, "-q", "import-oci", layer]).status).toBe(0);
    const diffId = `sha256:${crypto.createHash("sha256").update(fs.readFileSync(layer)).digest("hex")}`;
    const link = path.join(r0, "streams", `oci-layer-${diffId}`);
    const object = path.resolve(path.dirname(link), fs.readlinkSync(link));
    const good = fs.readFileSync(object);
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 40; i++) {
      const bad = Buffer.from(good);
      if (i % 4 === 3) {
        fs.writeFileSync(object, bad.subarray(0, rnd(bad.length)));
      } else {
        for (let k = 0; k <= i % 3; k++) bad[rnd(i % 2 ? 128 : bad.length)] ^= 1 << rnd(8);
        fs.writeFileSync(object, bad);
      }
      const t0 = Date.now();
      const r = cfsctl(["--repo", r0, "cat", diffId]);
      expect(Date.now() - t0).toBeLessThan(10000);
      if (r.status === 0) {
        // Accepted only when what came out is the layer itself.
        expect(crypto.createHash("sha256").update(r.stdout).digest("hex")).toBe(diffId.slice(7));
      } else {
        expect(r.status).toBe(1);
        expect(r.stderr).toMatch(/^cfsctl: error: [^\n]+\n$/);
      }
    }
    fs.writeFileSync(object, good);
  }, 120_000);

  it("cat writes no byte it has not checked: a damaged stream or file object fails before any of it goes out", () => {
    const r0 = tmpdir();
    const content = crypto.randomBytes(100_000);
    const layerTar = tar([{ name: "head", data: "h".repeat(5000) }, { name: "big", data: content }, { name: "tail", data: "t".repeat(5000) }]);
    const layer = path.join(tmpdir(), "layer.tar");
    fs.writeFileSync(layer, layerTar);
    expect(cfsctl(["--repo", r0, "-q", "import-oci", layer]).status).toBe(0);
    const diffId = `sha256:${crypto.createHash("sha256").update(layerTar).digest("hex")}`;
    const objectOf = (data: Buffer) => {
      const hex = fsverityDigest(data).toString("hex");
      return path.join(r0, "objects", hex.slice(0, 2), hex.slice(2));
    };
    const stream = path.resolve(path.join(r0, "streams"), fs.readlinkSync(path.join(r0, "streams", `oci-layer-${diffId}`)));
    for (const object of [objectOf(content), stream]) {
      const good = fs.readFileSync(object);
      const bad = Buffer.from(good);
      bad[bad.length >> 1] ^= 0x20;
      fs.writeFileSync(object, bad);
      const r = cfsctl(["--repo", r0, "cat", diffId]);
      fs.writeFileSync(object, good);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^cfsctl: error: layer sha256:[0-9a-f]+: object [0-9a-f]{2}\/[0-9a-f]+ does not match its name \(run cfsctl fsck\)\n$/);
      // What came out before the failure is the layer's own beginning, none of the damaged object.
      expect(r.stdout.length).toBeLessThan(layerTar.length - content.length);
      expect(layerTar.subarray(0, r.stdout.length).equals(r.stdout)).toBe(true);
    }
    const ok = cfsctl(["--repo", r0, "cat", diffId]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout.equals(layerTar)).toBe(true);
  });
});

describe("mutated layers", () => {
  // Real layers with bytes changed where they matter (header fields, type
  // flags, PAX record lengths), blocks repeated, cut short, gzipped. Each
  // imports or is refused with one line, within the time limit; nothing it
  // leaves in the repository is inconsistent (fsck at the end). A fixed
  // seed: the same 40 layers every run.
  const { next: rnd, int, pick } = rng(20261202);

  const built = tar([
    { name: "./", type: "5", mode: 0o755 },
    { name: "./d/", type: "5", mode: 0o750, pax: { "SCHILY.xattr.user.x": "1", mtime: "1700000000.5" } },
    { name: "./d/f", data: "x".repeat(3000), pax: { path: "./d/" + "long".repeat(40), "SCHILY.xattr.trusted.y": "2" } },
    { name: "./d/small", data: "tiny" },
    { name: "./d/hl", type: "1", linkname: "./d/small" },
    { name: "./d/sl", type: "2", linkname: "small" },
    { name: "./d/.wh.gone", data: "" },
    { name: "./o/", type: "5" },
    { name: "./o/.wh..wh..opq", data: "" },
    { name: "./dev", type: "3", devmajor: 1, devminor: 3 },
  ]);
  const bases = [built, fs.readFileSync(path.join(G, "layer2.tar")), fs.readFileSync(path.join(G, "layer3.tar"))];

  function mutate(base: Buffer): Buffer {
    let data = Buffer.from(base);
    for (let m = 1 + int(4); m > 0; m--) {
      const blk = int(data.length / 512) * 512;
      switch (int(6)) {
        case 0:
          data[int(data.length)] = int(256);
          break;
        case 1: {
          const at = blk + pick([0, 100, 124, 136, 156, 157, 257, 263, 345]);
          for (let k = 1 + int(12); k > 0 && at + k < data.length; k--) data[at + k] = pick([0x30, 0x37, 0x20, 0, 0xff, 0x80, 0x2f, 0x2e, int(256)]);
          break;
        }
        case 2:
          data = data.subarray(0, int(data.length));
          break;
        case 3:
          data = Buffer.concat([data.subarray(0, blk), data.subarray(blk, blk + 512), data.subarray(blk)]);
          break;
        case 4: {
          // A PAX record's length digit.
          const s = data.toString("latin1");
          const i = s.indexOf(pick(["path=", "size=", "linkpath=", "SCHILY.xattr", "mtime="]));
          if (i > 2) data[i - 2 - int(3)] = pick([0x30, 0x39, 0x31, 0x20, 0x0a]);
          break;
        }
        default:
          if (blk + 156 < data.length) data[blk + 156] = pick([..."0123456789xgLKSAVD"].map((c) => c.charCodeAt(0)));
      }
    }
    // Mostly with valid checksums, so that the damage reaches past the header check.
    if (rnd() < 0.7) {
      for (let off = 0; off + 512 <= data.length; off += 512) {
        const h = data.subarray(off, off + 512);
        if (h.toString("latin1", 257, 262) !== "ustar") continue;
        h.fill(0x20, 148, 156);
        let sum = 0;
        for (const b of h) sum += b;
        h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
      }
    }
    return rnd() < 0.2 ? gzip(data) : data;
  }

  it("import or are refused with one line, and leave a consistent repository", () => {
    const r0 = tmpdir();
    const dir = tmpdir();
    let imported = 0;
    for (let c = 0; c < 40; c++) {
      const file = path.join(dir, `case${c}.tar`);
      fs.writeFileSync(file, mutate(pick(bases)));
      const t0 = Date.now();
      const r = cfsctl(["--repo", r0, "-q", "import-oci", file]);
      expect(Date.now() - t0).toBeLessThan(15000);
      const stderr = r.stderr.toString();
      if (r.status === 0) {
        imported++;
        expect(stderr, `case ${c}`).toBe("");
        expect(r.stdout.toString()).toMatch(/^[0-9a-f]{64}\n$/);
      } else {
        expect(r.status, `case ${c}: ${stderr}`).toBe(1);
        expect(stderr, `case ${c}`).toMatch(/^cfsctl: error: [^\n]+\n$/);
      }
    }
    // Both outcomes occur, or the mutations test nothing.
    expect(imported).toBeGreaterThan(3);
    expect(imported).toBeLessThan(37);
    const f = cfsctl(["--repo", r0, "fsck"]);
    expect(f.status, f.stdout.toString() + f.stderr.toString()).toBe(0);
  }, 120_000);
});
