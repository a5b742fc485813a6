/**
 * The reader against damaged and hostile images: whatever the bytes, reading
 * an image either succeeds or throws CfsError, quickly, and the tree reader
 * and the streaming dumper agree on the outcome and the output.
 *
 * CFSCTL_FUZZ_CASES (default 3000) mutated images, from a seeded PRNG:
 * CFSCTL_FUZZ_SEED picks another run, CFSCTL_FUZZ_ONLY=N replays case N.
 * A failure message names the seed, the case and the mutations.
 * CFSCTL_FUZZ_LARGE=1 adds a real-size image (config.dump.gz, 1.6 MB) to the
 * bases; CFSCTL_FUZZ_STATS=1 prints what the rejections were.
 */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseDumpfile } from "../src/dumpfile/parse.js";
import { dumpfileToString } from "../src/dumpfile/write.js";
import { dumpImage, readImage } from "../src/erofs/reader.js";
import { writeImage } from "../src/erofs/writer.js";
import { decodeInode } from "../src/erofs/format.js";
import { S_IFDIR, S_IFMT } from "../src/model/inode.js";
import { CfsError } from "../src/util/errors.js";
import { ASSETS, NOT_STRICT, assetDump, assetVersion, letRunnerIn } from "./helpers.js";

const CASES = Number(process.env.CFSCTL_FUZZ_CASES ?? 3000);
const SEED = Number(process.env.CFSCTL_FUZZ_SEED ?? 0xc0ffee);
const ONLY = process.env.CFSCTL_FUZZ_ONLY === undefined ? null : Number(process.env.CFSCTL_FUZZ_ONLY);
/** One case reads an image of at most ~100 KiB; anything near this is a hang. */
const CASE_MS = 2000;

// ------------------------------------------------------------ deterministic PRNG

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  u32(): number {
    return (this.int(0x10000) * 0x10000 + this.int(0x10000)) >>> 0;
  }
}

// ------------------------------------------------------------- base images

const R = "/ 4096 40755 2 0 0 0 0.0 - - -\n";

/** A tree with every kind of thing the reader handles. */
function richDump(): string {
  const lines = ["/ 4096 40755 2 0 0 0 100.0 - - - security.selinux=root\\x00 user.root=1"];
  const dg = (i: number) => (i.toString(16).padStart(2, "0") + "5a".repeat(31)).slice(0, 64);
  lines.push("/big 4096 40755 2 0 0 0 100.0 - - -");
  for (let i = 0; i < 300; i++) lines.push(`/big/file_${String(i).padStart(15, "0")} 0 100644 1 0 0 0 100.0 - - -`);
  lines.push("/d 4096 40755 2 1000 1000 0 200.5 - - - trusted.overlay.opaque=y user.overlay.opaque=x");
  lines.push("/d/dev 0 20644 1 0 0 259 100.0 - - -");
  lines.push("/d/blk 0 60644 1 0 0 2049 100.0 - - -");
  lines.push("/d/fifo 0 10644 1 0 0 0 100.0 - - -");
  lines.push("/d/sock 0 140644 1 0 0 0 100.0 - - -");
  lines.push("/d/gone 0 20000 1 0 0 0 100.0 - - -");
  lines.push(`/d/inline1 3 100644 1 0 0 0 100.0 - abc - user.a=shared user.b=1`);
  lines.push(`/d/inline2 2049 100644 1 0 0 0 100.0 - ${"x".repeat(2049)} - user.a=shared`);
  lines.push(`/d/inline3 4097 100644 2 0 0 0 100.0 - ${"y".repeat(4097)} -`);
  lines.push(`/d/link 7 120777 1 0 0 0 100.0 /target - -`);
  lines.push(`/d/longlink 4064 120777 1 0 0 0 100.0 ${"l".repeat(4064)} - -`);
  lines.push(`/d/hl 0 @100644 0 0 0 0 0.0 /d/inline3 - -`);
  const many = Array.from({ length: 140 }, (_, i) => `user.k${String(i).padStart(3, "0")}=v${i}`).join(" ");
  for (let i = 0; i < 6; i++) {
    const d = dg(i);
    const x = i < 2 ? " " + many : " security.selinux=system_u:object_r:usr_t:s0\\x00";
    lines.push(`/e${i} ${1000 * (i + 1) * (i + 1)} 100644 1 ${i} ${i} 0 ${100 + i}.${i} ${d.slice(0, 2)}/${d.slice(2)} - ${d}${x}`);
  }
  lines.push("/huge 9001899274941000 100644 1 70000 70000 0 -7.1 - - - trusted.foo=bar");
  lines.push("/nest 4096 40755 2 0 0 0 100.0 - - -");
  let p = "/nest";
  for (let i = 0; i < 6; i++) {
    p += `/n${i}`;
    lines.push(`${p} 4096 40755 2 0 0 0 100.0 - - - user.level=${i}`);
    lines.push(`${p}/f 0 100644 1 0 0 0 100.0 - - -`);
  }
  lines.push("/nest/dirlink 0 @100644 0 0 0 0 0.0 /nest/n0 - -");
  lines.push("/odd\\x20name\\xff\\x3d 0 100644 1 0 0 0 100.0 - - - user.sp\\x3dace=a\\x20b");
  return lines.join("\n") + "\n";
}

interface Base {
  name: string;
  image: Buffer;
}

function bases(): Base[] {
  const out: Base[] = [];
  out.push({ name: "rich-v1", image: writeImage(parseDumpfile(Buffer.from(richDump(), "latin1"), {}), {}).image });
  out.push({ name: "rich-v0", image: writeImage(parseDumpfile(Buffer.from(richDump(), "latin1"), {}), { maxVersion: 0 }).image });
  const assets = ["special.dump", "bigfile-xattr.dump", "honggfuzz-long-symlink.dump", "longlink.dump"];
  if (process.env.CFSCTL_FUZZ_LARGE) assets.push("config.dump.gz");
  for (const name of assets) {
    const v = assetVersion(name);
    const root = parseDumpfile(assetDump(name), { strict: !NOT_STRICT.has(name) });
    out.push({ name, image: writeImage(root, v === undefined ? {} : { minVersion: v, maxVersion: v }).image });
  }
  return out;
}

// --------------------------------------------- where things are in a valid image

interface InodeLoc {
  nid: number;
  off: number;
  isize: number;
  xattrSize: number;
  isDir: boolean;
  parent: number;
}

interface DirentLoc {
  off: number;
  group: number;
  groupSize: number;
  dirNid: number;
  parentNid: number;
  dot: boolean;
}

interface Layout {
  inodes: InodeLoc[];
  dirents: DirentLoc[];
  dirNids: number[];
}

/** Walk a valid image (trusting it) to find its inodes and dirents. */
function layoutOf(img: Buffer): Layout {
  const inodes: InodeLoc[] = [];
  const dirents: DirentLoc[] = [];
  const dirNids: number[] = [];
  const seen = new Set<number>();
  const queue: [number, number][] = [[img.readUInt16LE(1024 + 14), img.readUInt16LE(1024 + 14)]];
  while (queue.length > 0) {
    const [nid, parent] = queue.shift()!;
    if (seen.has(nid)) continue;
    seen.add(nid);
    const off = nid * 32;
    const h = decodeInode(img, off);
    const isize = h.extended ? 64 : 32;
    const xattrSize = h.xattrIcount === 0 ? 0 : 12 + 4 * (h.xattrIcount - 1);
    const isDir = (h.mode & S_IFMT) === S_IFDIR;
    inodes.push({ nid, off, isize, xattrSize, isDir, parent });
    if (!isDir) continue;
    dirNids.push(nid);
    const size = Number(h.size);
    const groups: [number, number][] = [];
    const tailpacked = h.layout === 2;
    const full = tailpacked ? Math.floor(size / 4096) : Math.ceil(size / 4096);
    for (let b = 0; b < full; b++) groups.push([(h.u + b) * 4096, !tailpacked && b + 1 === full ? size % 4096 || 4096 : 4096]);
    if (tailpacked) groups.push([off + isize + xattrSize, size % 4096]);
    for (const [g, gs] of groups) {
      const n = img.readUInt16LE(g + 8) / 12;
      for (let i = 0; i < n; i++) {
        const d = g + 12 * i;
        const no = img.readUInt16LE(d + 8);
        const end = i + 1 < n ? img.readUInt16LE(d + 20) : gs;
        const name = img.subarray(g + no, g + end).toString("latin1").replace(/\0+$/, "");
        const dot = name === "." || name === "..";
        dirents.push({ off: d, group: g, groupSize: gs, dirNid: nid, parentNid: parent, dot });
        if (!dot) queue.push([Number(img.readBigUInt64LE(d)), nid]);
      }
    }
  }
  return { inodes, dirents, dirNids };
}

// -------------------------------------------------------------------- running

const INTERESTING = [0, 1, 2, 3, 4, 7, 8, 11, 12, 13, 0x1f, 0x20, 0x7f, 0x80, 0xff, 0x100, 0x7ff, 0x800, 0xfff, 0x1000, 0x1001, 0x1388, 0x1389, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff];

type Outcome = { ok: true; text: string } | { ok: false; message: string };

function viaTree(img: Buffer): Outcome {
  try {
    const root = readImage(img);
    return { ok: true, text: dumpfileToString(root) };
  } catch (e) {
    if (e instanceof CfsError) return { ok: false, message: e.message };
    throw e;
  }
}

function viaStream(img: Buffer): Outcome {
  try {
    const parts: Buffer[] = [];
    dumpImage(img, (c) => parts.push(c));
    return { ok: true, text: Buffer.concat(parts).toString("latin1") };
  } catch (e) {
    if (e instanceof CfsError) return { ok: false, message: e.message };
    throw e;
  }
}

/** Read a (mutated) image both ways; throws a descriptive Error on anything but success or CfsError. */
function check(img: Buffer, what: string): Outcome {
  const t0 = performance.now();
  let tree: Outcome;
  let stream: Outcome;
  try {
    tree = viaTree(img);
    stream = viaStream(img);
  } catch (e) {
    throw new Error(`${what}: threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.stack ?? e}`);
  }
  const ms = performance.now() - t0;
  if (ms > CASE_MS) throw new Error(`${what}: took ${ms.toFixed(0)} ms`);
  if (tree.ok !== stream.ok) throw new Error(`${what}: tree ${tree.ok ? "read" : "failed"}, stream ${stream.ok ? "read" : "failed"}`);
  if (!tree.ok && !stream.ok && tree.message !== stream.message) throw new Error(`${what}: messages differ: ${tree.message} / ${stream.message}`);
  if (!tree.ok && /\n/.test(tree.message)) throw new Error(`${what}: multi-line message ${tree.message}`);
  if (tree.ok && stream.ok && tree.text !== stream.text) throw new Error(`${what}: tree and stream outputs differ`);
  return tree;
}

function mutate(base: Buffer, lay: Layout, rng: Rng, log: string[]): Buffer {
  let img = Buffer.from(base);
  const rounds = 1 + (rng.int(4) === 0 ? 1 + rng.int(2) : 0);
  for (let r = 0; r < rounds; r++) {
    const kind = rng.int(10);
    switch (kind) {
      case 0: {
        const n = 1 + rng.int(8);
        // Mostly in the metadata (before the data blocks), where a flip matters most.
        const lim = rng.int(3) === 0 ? img.length : Math.min(img.length, lastMeta(lay) + 4096);
        for (let i = 0; i < n; i++) {
          const o = rng.int(lim);
          const bit = rng.int(8);
          img[o]! ^= 1 << bit;
          log.push(`flip ${o}.${bit}`);
        }
        break;
      }
      case 1: {
        const o = rng.int(img.length);
        const n = 1 + rng.int(8);
        const v = rng.pick([0x00, 0xff, 0x7f, 0x80, -1]);
        for (let i = 0; i < n && o + i < img.length; i++) img[o + i] = v < 0 ? rng.int(256) : v;
        log.push(`bytes ${o}+${n}=${v}`);
        break;
      }
      case 2: {
        const len = rng.int(img.length);
        if (rng.int(2) === 0) {
          const blocks = Math.floor(len / 4096);
          img = Buffer.from(img.subarray(0, blocks * 4096));
          if (img.length >= 1024 + 40) img.writeUInt32LE(blocks, 1024 + 36);
          log.push(`truncate to ${blocks} blocks, sb fixed`);
        } else {
          img = Buffer.from(img.subarray(0, len));
          log.push(`truncate ${len}`);
        }
        break;
      }
      case 3:
      case 4: {
        const ino = rng.pick(lay.inodes);
        if (ino.off + 64 > img.length) break;
        const fields: [string, number, number][] = [
          ["format", 0, 2],
          ["icount", 2, 2],
          ["mode", 4, 2],
          ["nlink", 6, 2],
          ["size", 8, 4],
          ["sizehi", 12, 4],
          ["u", 16, 4],
        ];
        if (ino.xattrSize > 0) {
          const x = ino.off + ino.isize;
          fields.push(["shared", x + 4 - ino.off, 1]);
          const nShared = img[x + 4]!;
          if (nShared > 0) fields.push(["sharedid", x + 12 + 4 * rng.int(nShared) - ino.off, 4]);
          const inl = x + 12 + 4 * nShared;
          if (inl + 4 <= x + ino.xattrSize) {
            fields.push(["xname_len", inl - ino.off, 1], ["xindex", inl + 1 - ino.off, 1], ["xvalue_size", inl + 2 - ino.off, 2]);
          }
        }
        const [f, rel, width] = rng.pick(fields);
        const o = ino.off + rel;
        const v = rng.int(3) === 0 ? rng.u32() : rng.pick([...INTERESTING, Math.floor(img.length / 32), Math.floor(img.length / 4096), img.length]);
        if (o + width > img.length) break;
        if (width === 1) img[o] = v & 0xff;
        else if (width === 2) img.writeUInt16LE(v & 0xffff, o);
        else img.writeUInt32LE(v >>> 0, o);
        log.push(`inode ${ino.nid} ${f}=${v}`);
        break;
      }
      case 5:
      case 6: {
        if (lay.dirents.length === 0) break;
        const d = rng.pick(lay.dirents);
        if (d.off + 12 > img.length) break;
        const which = rng.int(3);
        if (which === 0) {
          const target = rng.pick([
            d.dirNid,
            d.parentNid,
            rng.pick(lay.dirNids),
            rng.pick(lay.inodes).nid,
            rng.pick(lay.inodes).nid + 1,
            rng.int(img.length / 32),
            Math.floor(img.length / 32),
            0xffffffff,
            2 ** 40,
          ]);
          img.writeBigUInt64LE(BigInt(target), d.off);
          log.push(`dirent @${d.off} nid=${target}`);
        } else if (which === 1) {
          const v = rng.pick([0, 1, 11, 12, 13, d.groupSize, d.groupSize - 1, d.groupSize + 1, img.readUInt16LE(d.off + 8) + 1, img.readUInt16LE(d.off + 8) - 1, rng.int(0x10000)]);
          img.writeUInt16LE(v & 0xffff, d.off + 8);
          log.push(`dirent @${d.off} nameoff=${v}`);
        } else {
          img[d.off + 10] = rng.int(256);
          log.push(`dirent @${d.off} type`);
        }
        break;
      }
      case 7: {
        // A directory entry pointing at its own directory or its parent.
        const cands = lay.dirents.filter((x) => !x.dot);
        if (cands.length === 0) break;
        const d = rng.pick(cands);
        const target = rng.int(2) === 0 ? d.dirNid : d.parentNid;
        if (d.off + 8 <= img.length) img.writeBigUInt64LE(BigInt(target), d.off);
        log.push(`dirent @${d.off} → ${target === d.dirNid ? "self" : "parent"}`);
        break;
      }
      case 8: {
        const nb = Math.floor(img.length / 4096);
        if (nb < 2) break;
        const a = rng.int(nb);
        const b = rng.int(nb);
        const copy = rng.int(2) === 0;
        const ba = Buffer.from(img.subarray(a * 4096, (a + 1) * 4096));
        const bb = Buffer.from(img.subarray(b * 4096, (b + 1) * 4096));
        if (!copy) ba.copy(img, b * 4096);
        bb.copy(img, a * 4096);
        log.push(`${copy ? "copy" : "swap"} blocks ${b}→${a}`);
        break;
      }
      default: {
        // Superblock fields.
        if (img.length < 1152) break;
        const fields: [string, number, number][] = [
          ["root_nid", 14, 2],
          ["meta_blkaddr", 40, 4],
          ["xattr_blkaddr", 44, 4],
          ["blocks", 36, 4],
          ["build_time_hi", 28, 4],
        ];
        const [f, rel, width] = rng.pick(fields);
        const v = rng.int(2) === 0 ? rng.u32() : rng.pick([...INTERESTING, Math.floor(img.length / 4096)]);
        if (width === 2) img.writeUInt16LE(v & 0xffff, 1024 + rel);
        else img.writeUInt32LE(v >>> 0, 1024 + rel);
        log.push(`sb ${f}=${v}`);
      }
    }
  }
  return img;
}

function lastMeta(lay: Layout): number {
  let m = 0;
  for (const i of lay.inodes) m = Math.max(m, i.off + i.isize + i.xattrSize);
  return m;
}

describe("reading damaged images", () => {
  const all = bases();
  const layouts = all.map((b) => layoutOf(b.image));

  it("reads the undamaged bases both ways, identically", () => {
    for (const b of all) {
      const r = check(b.image, b.name);
      expect(r.ok, b.name).toBe(true);
    }
  });

  it(`survives ${CASES} mutated images (seed ${SEED})`, { timeout: 120_000 }, async () => {
    let ok = 0;
    let failed = 0;
    const kinds = new Map<string, number>();
    for (let i = 0; i < CASES; i++) {
      if (i % 1000 === 999) await letRunnerIn();
      if (ONLY !== null && i !== ONLY) continue;
      const rng = new Rng((SEED ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
      const k = rng.int(all.length);
      const log: string[] = [];
      const img = mutate(all[k]!.image, layouts[k]!, rng, log);
      const what = `CFSCTL_FUZZ_SEED=${SEED} CFSCTL_FUZZ_ONLY=${i} (${all[k]!.name}: ${log.join(", ")})`;
      const r = check(img, what);
      if (r.ok) ok++;
      else {
        failed++;
        const kind = r.message.replace(/\(nid.*$/, "").replace(/[0-9]+/g, "N");
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
    }
    if (process.env.CFSCTL_FUZZ_STATS) {
      console.log(`read ${ok}, rejected ${failed}`);
      for (const [k, n] of [...kinds].sort((x, y) => y[1] - x[1])) console.log(String(n).padStart(7), k);
    }
    // Both outcomes must be exercised, or the mutations are too weak or too strong.
    if (ONLY === null && CASES >= 200) {
      expect(ok).toBeGreaterThan(CASES / 20);
      expect(failed).toBeGreaterThan(CASES / 20);
    }
  });
});

describe("hostile images", () => {
  const tree =
    R +
    "/a 4096 40755 2 0 0 0 0.0 - - -\n" +
    "/a/f 5 100644 1 0 0 0 0.0 - hello -\n" +
    "/a/g 0 100644 1 0 0 0 0.0 - - -\n" +
    "/b 100000 100644 1 0 0 0 0.0 " +
    "ab/" +
    "c".repeat(62) +
    " - -\n" +
    "/s 6 120777 1 0 0 0 0.0 target - -\n";
  const base = writeImage(parseDumpfile(Buffer.from(tree), {}), {}).image;
  const lay = layoutOf(base);
  const inodeOf = (name: string): InodeLoc => {
    const text = dumpfileToString(readImage(base));
    expect(text).toContain(name);
    // Find the dirent of a top-level or /a entry by name.
    for (const d of lay.dirents) {
      const g = d.group;
      const n = base.readUInt16LE(g + 8) / 12;
      const i = (d.off - g) / 12;
      const no = base.readUInt16LE(d.off + 8);
      const end = i + 1 < n ? base.readUInt16LE(d.off + 20) : d.groupSize;
      const nm = base.subarray(g + no, g + end).toString("latin1").replace(/\0+$/, "");
      if (nm === name) return lay.inodes.find((x) => x.nid === Number(base.readBigUInt64LE(d.off)))!;
    }
    throw new Error(`no entry ${name}`);
  };
  const direntOf = (dirNid: number, name: string): DirentLoc => {
    for (const d of lay.dirents) {
      if (d.dirNid !== dirNid) continue;
      const g = d.group;
      const n = base.readUInt16LE(g + 8) / 12;
      const i = (d.off - g) / 12;
      const no = base.readUInt16LE(d.off + 8);
      const end = i + 1 < n ? base.readUInt16LE(d.off + 20) : d.groupSize;
      if (base.subarray(g + no, g + end).toString("latin1").replace(/\0+$/, "") === name) return d;
    }
    throw new Error(`no entry ${name}`);
  };
  const rootNid = base.readUInt16LE(1024 + 14);
  const a = inodeOf("a");

  const expectError = (img: Buffer, re: RegExp) => {
    const r = check(img, re.source);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(re);
  };

  it("a dirent pointing at its own directory is a hardlink, not a loop", () => {
    const img = Buffer.from(base);
    img.writeBigUInt64LE(BigInt(a.nid), direntOf(a.nid, "g").off);
    const r = check(img, "self");
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.text).toMatch(/^\/a\/g \d+ @40755 2 0 0 0 0\.0 \/a - -$/m);
  });

  it("a dirent pointing at the root is a hardlink with an empty target", () => {
    const img = Buffer.from(base);
    img.writeBigUInt64LE(BigInt(rootNid), direntOf(a.nid, "g").off);
    const parts: Buffer[] = [];
    dumpImage(img, (c) => parts.push(c));
    expect(Buffer.concat(parts).toString()).toMatch(/^\/a\/g 4096 @40755 3 0 0 0 0\.0  - -$/m);
  });

  it("every entry of the root naming the root", () => {
    const img = Buffer.from(base);
    for (const d of lay.dirents) if (d.dirNid === rootNid && !d.dot) img.writeBigUInt64LE(BigInt(rootNid), d.off);
    expect(check(img, "all-root").ok).toBe(true);
  });

  it("nid out of range", () => {
    const img = Buffer.from(base);
    img.writeBigUInt64LE(2n ** 40n, direntOf(rootNid, "b").off);
    expectError(img, /inode is beyond the end of the image \(nid 1099511627776, at \/b\)/);
    const img2 = Buffer.from(base);
    img2.writeBigUInt64LE(BigInt(img2.length / 32), direntOf(rootNid, "b").off);
    expectError(img2, /inode is beyond the end/);
  });

  it("huge sizes", () => {
    // A directory claiming more bytes than the image.
    const img = Buffer.from(base);
    img.writeUInt32LE(0xfffffff0, a.off + 8);
    expectError(img, /directory size \d+ is larger than the image/);
    // An inline file claiming 2^40 bytes (make the inode extended-looking size field).
    const f = inodeOf("f");
    const img2 = Buffer.from(base);
    img2.writeUInt32LE(0x7fffffff, f.off + 8);
    expectError(img2, /inline file content of \d+ bytes exceeds 5000/);
    // A symlink target of 4096 bytes or more.
    const s = inodeOf("s");
    const img3 = Buffer.from(base);
    img3.writeUInt32LE(4096, s.off + 8);
    expectError(img3, /symlink target of 4096 bytes is too long/);
    // An external file may be as big as it likes.
    const b = inodeOf("b");
    const img4 = Buffer.from(base);
    img4.writeUInt32LE(0xffffffff, b.off + 8);
    const r = check(img4, "big external");
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.text).toContain("/b 4294967295 100644");
  });

  it("names with '/', NUL, duplicates, or out of order", () => {
    const d = direntOf(a.nid, "f");
    const nameAt = d.group + base.readUInt16LE(d.off + 8);
    const slash = Buffer.from(base);
    slash[nameAt] = 0x2f;
    expectError(slash, /contains '\/'/);
    // "f" and "g": make the first "g" too → a duplicate.
    const dup = Buffer.from(base);
    dup[nameAt] = 0x67;
    expectError(dup, /not in strictly ascending order/);
    const order = Buffer.from(base);
    order[nameAt] = 0x7a;
    expectError(order, /not in strictly ascending order/);
    // A NUL inside a name that is not the last one of its group.
    const nul = Buffer.from(base);
    nul[nameAt] = 0;
    expectError(nul, /contains a NUL byte/);
    // The last name pushed past the end of its group: empty.
    const g = direntOf(a.nid, "g");
    const empty = Buffer.from(base);
    empty.writeUInt16LE(g.groupSize, g.off + 8);
    expectError(empty, /empty name/);
    // A first nameoff that is not a multiple of 12.
    const first = Buffer.from(base);
    first.writeUInt16LE(base.readUInt16LE(d.group + 8) + 1, d.group + 8);
    expectError(first, /invalid first name offset/);
  });

  it("invalid file type, layout and xattr references", () => {
    const g = inodeOf("g");
    const img = Buffer.from(base);
    img.writeUInt16LE(0o000644, g.off + 4);
    expectError(img, /invalid file type in mode 0644/);
    const lay2 = Buffer.from(base);
    lay2.writeUInt16LE(3 << 1, a.off);
    expectError(lay2, /directory has unsupported data layout 3/);
    const b = inodeOf("b");
    const sh = Buffer.from(base);
    sh[b.off + b.isize + 4] = 200; // 200 shared ids in a small body
    expectError(sh, /shared xattr ids do not fit/);
  });

  it("directories nested deeper than 2048", () => {
    // The writer refuses such a tree, so: two chains of 1200 directories,
    // /a/d/…/d/x and /b/d/…/d, and x's dirent pointed at /b: reached
    // through x first, b's chain nests below a's.
    const lines = [R];
    for (const top of ["/a", "/b"]) {
      let p = top;
      lines.push(`${p} 4096 40755 2 0 0 0 0.0 - - -\n`);
      for (let i = 0; i < 1200; i++) lines.push(`${(p += "/d")} 4096 40755 2 0 0 0 0.0 - - -\n`);
      if (top === "/a") lines.push(`${p}/x 4096 40755 2 0 0 0 0.0 - - -\n`);
    }
    const img = writeImage(parseDumpfile(Buffer.from(lines.join("")), {}), {}).image;
    const lay = layoutOf(img);
    const nameOf = (d: (typeof lay.dirents)[number]) => {
      const k = (d.off - d.group) / 12;
      const n = img.readUInt16LE(d.group + 8) / 12;
      const end = k + 1 < n ? img.readUInt16LE(d.off + 20) : d.groupSize;
      return img.subarray(d.group + img.readUInt16LE(d.off + 8), d.group + end).toString("latin1").replace(/\0+$/, "");
    };
    const root = img.readUInt16LE(1024 + 14);
    const b = lay.dirents.find((d) => d.dirNid === root && nameOf(d) === "b")!;
    const x = lay.dirents.find((d) => !d.dot && nameOf(d) === "x")!;
    img.writeBigUInt64LE(img.readBigUInt64LE(b.off), x.off);
    expectError(img, /directories nest deeper than 2048 levels \(nid \d+, at …(\/d)+\)/);
  });

  it("directories sharing blocks cannot multiply the work", () => {
    // 60 directories, each with a full block of entries; then point every
    // directory's block at the first one: read once per directory, the
    // names resolve to the same inodes (hardlinks), and the byte budget
    // stops anything beyond the image size.
    const lines = [R];
    for (let d = 0; d < 60; d++) {
      lines.push(`/d${String(d).padStart(2, "0")} 4096 40755 2 0 0 0 0.0 - - -\n`);
      for (let f = 0; f < 200; f++) lines.push(`/d${String(d).padStart(2, "0")}/f${String(f).padStart(12, "0")} 0 100644 1 0 0 0 0.0 - - -\n`);
    }
    const img = writeImage(parseDumpfile(Buffer.from(lines.join("")), {}), {}).image;
    const l = layoutOf(img);
    const dirs = l.inodes.filter((x) => x.isDir && x.nid !== rootNid);
    const u0 = img.readUInt32LE(dirs[0]!.off + 16);
    const bad = Buffer.from(img);
    for (const d of dirs) bad.writeUInt32LE(u0, d.off + 16);
    const out = check(bad, "shared blocks");
    expect(out.ok).toBe(true);
    // Every directory's first block now lists d00's first names: d00 owns
    // those files and the others show them as hardlinks; the rest of each
    // directory (its inline tail) is its own.
    const files = (out as { text: string }).text.split("\n").filter((l) => /^\/d\d\d\//.test(l));
    expect(files.length).toBe(60 * 200);
    let links = 0;
    for (const l of files) {
      const [p, , mode, , , , , , target] = l.split(" ");
      if (mode === "@100644") {
        expect(target).toBe(`/d00/${p!.slice(5)}`);
        links++;
      } else expect([mode, target]).toEqual(["100644", "-"]);
    }
    expect(links % 59).toBe(0);
    expect(links / 59).toBeGreaterThan(100);
  });

  it("a few hand-picked byte patterns", () => {
    for (const fill of [0x00, 0xff]) {
      const img = Buffer.from(base);
      img.fill(fill, 1152);
      check(img, `fill ${fill}`);
    }
    const zeros = Buffer.alloc(base.length);
    base.copy(zeros, 0, 0, 1152);
    check(zeros, "zeroed inodes");
    expect(fs.existsSync(path.join(ASSETS, "README.md"))).toBe(true);
  });
});
