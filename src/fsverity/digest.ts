/**
 * fs-verity file digests (Linux Documentation/filesystems/fsverity.rst;
 * composefs libcomposefs/lcfs-fsverity.c): a Merkle tree of 4096-byte blocks
 * with no salt, then a hash of the 256-byte fs_verity_descriptor.
 *
 * Hashing is the hot path of the whole tool. Every 4096-byte block is hashed
 * on its own with node:crypto's one-shot `crypto.hash()`, asking for the
 * digest as a latin1 string (one byte a character) and writing it where it
 * goes: a Buffer result costs an ArrayBuffer per block, which measured about
 * 40% more per block than the string (bench/hash-speed.mjs has the rest:
 * crypto.hash beats a streaming createHash() per block and @noble/hashes).
 *
 * Where cfsctl's native addon is built, runs of whole data blocks (the first
 * tree level, nearly all the work) are hashed by it instead
 * (native/cfsctl_native.c hashBlocks: several blocks at a time with the
 * CPU's SHA extensions), straight into the level's buffer.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { loadCfsNative, type CfsNative } from "../util/native.js";

let native: CfsNative | null = loadCfsNative();

/** Hash data blocks in JavaScript even where the native addon is built (tests comparing the two). */
export function useNativeBlockHashing(on: boolean): void {
  native = on ? loadCfsNative() : null;
}

export type VerityAlgorithm = "sha256" | "sha512";

export const BLOCK_SIZE = 4096;

const ALG_ID: Record<VerityAlgorithm, number> = { sha256: 1, sha512: 2 };
const DIGEST_LEN: Record<VerityAlgorithm, number> = { sha256: 32, sha512: 64 };

/** The digest of `data` as a latin1 string. crypto.hash() exists from Node 20.12; createHash elsewhere. */
const oneShot: (alg: string, data: Uint8Array) => string =
  typeof (crypto as { hash?: unknown }).hash === "function"
    ? (alg, data) => (crypto as unknown as { hash(a: string, d: Uint8Array, e: "latin1"): string }).hash(alg, data, "latin1")
    : (alg, data) => crypto.createHash(alg).update(data).digest("binary");

export function digestLength(alg: VerityAlgorithm): number {
  return DIGEST_LEN[alg];
}

/** The kernel's number for the algorithm (FS_VERITY_HASH_ALG_*), as the native addon takes it. */
export function verityAlgorithmId(alg: VerityAlgorithm): 1 | 2 {
  return alg === "sha512" ? 2 : 1;
}

/**
 * Streaming fs-verity hasher: memory is one data block plus one block of
 * hashes per tree level, whatever the input size.
 */
export class FsVerityHasher {
  readonly alg: VerityAlgorithm;
  private readonly hashLen: number;
  private readonly block = Buffer.allocUnsafe(BLOCK_SIZE);
  private blockFill = 0;
  /** Bytes so far (a double: exact far beyond any file size). */
  private total = 0;
  /** levels[i]: a block being filled with hashes of level i. */
  private readonly levels: Buffer[] = [];
  private readonly levelFill: number[] = [];
  /** Number of hashes ever appended to each level. */
  private readonly levelCount: number[] = [];

  constructor(alg: VerityAlgorithm = "sha256") {
    this.alg = alg;
    this.hashLen = DIGEST_LEN[alg];
  }

  update(data: Uint8Array): this {
    let off = 0;
    const len = data.length;
    this.total += len;
    if (this.blockFill > 0) {
      const n = Math.min(BLOCK_SIZE - this.blockFill, len);
      this.block.set(data.subarray(0, n), this.blockFill);
      this.blockFill += n;
      off = n;
      if (this.blockFill < BLOCK_SIZE) return this;
      this.addHash(0, oneShot(this.alg, this.block));
      this.blockFill = 0;
    }
    if (native !== null && len - off >= BLOCK_SIZE) {
      const level0 = this.levelBuffer(0);
      const algId = verityAlgorithmId(this.alg);
      while (len - off >= BLOCK_SIZE) {
        // As many blocks as the level's buffer has room for hashes.
        const room = (BLOCK_SIZE - this.levelFill[0]!) / this.hashLen;
        const n = Math.min(room, Math.floor((len - off) / BLOCK_SIZE));
        native.hashBlocks(data.subarray(off, off + n * BLOCK_SIZE), algId, level0, this.levelFill[0]!);
        off += n * BLOCK_SIZE;
        this.levelCount[0]! += n;
        this.levelFill[0]! += n * this.hashLen;
        if (this.levelFill[0] === BLOCK_SIZE) {
          this.levelFill[0] = 0;
          this.addHash(1, oneShot(this.alg, level0));
        }
      }
    }
    while (len - off >= BLOCK_SIZE) {
      this.addHash(0, oneShot(this.alg, data.subarray(off, off + BLOCK_SIZE)));
      off += BLOCK_SIZE;
    }
    if (off < len) {
      this.block.set(data.subarray(off), 0);
      this.blockFill = len - off;
    }
    return this;
  }

  /** Start over for another file, keeping the buffers. */
  reset(): this {
    this.blockFill = 0;
    this.total = 0;
    this.levelFill.fill(0);
    this.levelCount.fill(0);
    this.levels.length = Math.min(this.levels.length, this.levelFill.length);
    while (this.levelCount.length > 0 && this.levelCount[this.levelCount.length - 1] === 0 && this.levels.length > 4) {
      this.levels.pop();
      this.levelFill.pop();
      this.levelCount.pop();
    }
    return this;
  }

  /** The block being filled at tree level `level` (the next level up is made when first needed). */
  private levelBuffer(level: number): Buffer {
    if (level === this.levels.length) {
      this.levels.push(Buffer.allocUnsafe(BLOCK_SIZE));
      this.levelFill.push(0);
      this.levelCount.push(0);
    }
    return this.levels[level]!;
  }

  private addHash(level: number, h: string): void {
    const buf = this.levelBuffer(level);
    buf.write(h, this.levelFill[level]!, this.hashLen, "latin1");
    this.levelFill[level]! += this.hashLen;
    this.levelCount[level]! += 1;
    if (this.levelFill[level] === BLOCK_SIZE) {
      this.levelFill[level] = 0;
      this.addHash(level + 1, oneShot(this.alg, buf));
    }
  }

  /** The Merkle root (latin1): all zeros for empty data (as the kernel computes it). */
  private rootHash(): string {
    if (this.total === 0) return zeros(this.hashLen);
    if (this.blockFill > 0) {
      this.block.fill(0, this.blockFill);
      this.addHash(0, oneShot(this.alg, this.block));
      this.blockFill = 0;
    }
    for (let level = 0; ; level++) {
      const top = level === this.levels.length - 1 || this.levelCount[level + 1] === 0;
      if (top && this.levelCount[level] === 1) {
        return this.levels[level]!.toString("latin1", 0, this.hashLen);
      }
      const fill = this.levelFill[level]!;
      if (fill > 0) {
        const buf = this.levels[level]!;
        buf.fill(0, fill);
        this.levelFill[level] = 0;
        this.addHash(level + 1, oneShot(this.alg, buf));
      }
    }
  }

  /** Finish and return the fs-verity digest (32 or 64 bytes). */
  digest(): Buffer {
    return Buffer.from(descriptorDigest(this.alg, this.rootHash(), this.total), "latin1");
  }

  /** Finish and write the digest into `out` at `at` (no allocation). */
  digestInto(out: Uint8Array, at: number): void {
    writeLatin1(out, at, descriptorDigest(this.alg, this.rootHash(), this.total));
  }
}

const zeroStrings = new Map<number, string>();
function zeros(n: number): string {
  let z = zeroStrings.get(n);
  if (z === undefined) zeroStrings.set(n, (z = "\0".repeat(n)));
  return z;
}

function writeLatin1(out: Uint8Array, at: number, s: string): void {
  if (Buffer.isBuffer(out)) {
    out.write(s, at, s.length, "latin1");
  } else {
    for (let i = 0; i < s.length; i++) out[at + i] = s.charCodeAt(i);
  }
}

const descScratch = Buffer.alloc(256);

/** Hash of the 256-byte fs_verity_descriptor: the file digest (latin1). */
function descriptorDigest(alg: VerityAlgorithm, root: string, size: number): string {
  const desc = descScratch;
  desc.fill(0);
  desc[0] = 1; // version
  desc[1] = ALG_ID[alg];
  desc[2] = 12; // log2(block size)
  desc[3] = 0; // salt size
  desc.writeUInt32LE(size % 4294967296, 8);
  desc.writeUInt32LE(Math.floor(size / 4294967296), 12);
  desc.write(root, 16, root.length, "latin1");
  return oneShot(alg, desc);
}

const padScratch = Buffer.alloc(BLOCK_SIZE);

/** The digest of at most one block (latin1): the root is the hash of the zero-padded block. */
function smallDigest(data: Uint8Array, alg: VerityAlgorithm): string {
  let root: string;
  if (data.length === 0) {
    root = zeros(DIGEST_LEN[alg]);
  } else if (data.length === BLOCK_SIZE) {
    root = oneShot(alg, data);
  } else {
    padScratch.set(data, 0);
    padScratch.fill(0, data.length);
    root = oneShot(alg, padScratch);
  }
  return descriptorDigest(alg, root, data.length);
}

/**
 * Digest of data of at most one block, with no allocation but the result.
 * Most files of a root filesystem take this path.
 */
export function fsverityDigestSmall(data: Uint8Array, alg: VerityAlgorithm = "sha256"): Buffer {
  if (data.length > BLOCK_SIZE) return new FsVerityHasher(alg).update(data).digest();
  return Buffer.from(smallDigest(data, alg), "latin1");
}

/** fsverityDigestSmall, written into `out` at `at`. */
export function fsverityDigestSmallInto(data: Uint8Array, alg: VerityAlgorithm, out: Uint8Array, at: number): void {
  if (data.length > BLOCK_SIZE) new FsVerityHasher(alg).update(data).digestInto(out, at);
  else writeLatin1(out, at, smallDigest(data, alg));
}

export function fsverityDigest(data: Uint8Array, alg: VerityAlgorithm = "sha256"): Buffer {
  return new FsVerityHasher(alg).update(data).digest();
}

const READ_CHUNK = 1 << 20;

/** Digest of a file's contents, read in 1 MiB pieces (constant memory). */
export function fsverityDigestFileSync(path: string, alg: VerityAlgorithm = "sha256"): Buffer {
  const fd = fs.openSync(path, "r");
  try {
    return fsverityDigestFdSync(fd, alg);
  } finally {
    fs.closeSync(fd);
  }
}

export function fsverityDigestFdSync(fd: number, alg: VerityAlgorithm = "sha256"): Buffer {
  const h = new FsVerityHasher(alg);
  const buf = Buffer.allocUnsafe(READ_CHUNK);
  for (;;) {
    const n = fs.readSync(fd, buf, 0, READ_CHUNK, null);
    if (n === 0) break;
    h.update(buf.subarray(0, n));
  }
  return h.digest();
}

/** `XX/YYYY…`: the object path of a digest (first byte, then the rest). */
export function digestToObjectPath(digest: Uint8Array): string {
  const hex = Buffer.from(digest).toString("hex");
  return `${hex.slice(0, 2)}/${hex.slice(2)}`;
}
