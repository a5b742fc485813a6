/**
 * fs-verity file digests (Linux Documentation/filesystems/fsverity.rst;
 * composefs libcomposefs/lcfs-fsverity.c): a Merkle tree of 4096-byte blocks
 * with no salt, then a hash of the 256-byte fs_verity_descriptor.
 *
 * Hashing is the hot path of the whole tool. Every 4096-byte block is hashed
 * on its own, and node:crypto's one-shot `crypto.hash()` measured fastest for
 * that (bench/hash-speed.mjs): faster than a streaming createHash() per block
 * and several times faster than @noble/hashes.
 */
import crypto from "node:crypto";
import fs from "node:fs";

export type VerityAlgorithm = "sha256" | "sha512";

export const BLOCK_SIZE = 4096;

const ALG_ID: Record<VerityAlgorithm, number> = { sha256: 1, sha512: 2 };
const DIGEST_LEN: Record<VerityAlgorithm, number> = { sha256: 32, sha512: 64 };

// crypto.hash() exists from Node 20.12; fall back to createHash elsewhere.
const oneShot: (alg: string, data: Uint8Array) => Buffer =
  typeof (crypto as { hash?: unknown }).hash === "function"
    ? (alg, data) => (crypto as unknown as { hash(a: string, d: Uint8Array, e: "buffer"): Buffer }).hash(alg, data, "buffer")
    : (alg, data) => crypto.createHash(alg).update(data).digest();

export function digestLength(alg: VerityAlgorithm): number {
  return DIGEST_LEN[alg];
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
  private total = 0n;
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
    this.total += BigInt(len);
    if (this.blockFill > 0) {
      const n = Math.min(BLOCK_SIZE - this.blockFill, len);
      this.block.set(data.subarray(0, n), this.blockFill);
      this.blockFill += n;
      off = n;
      if (this.blockFill < BLOCK_SIZE) return this;
      this.addHash(0, oneShot(this.alg, this.block));
      this.blockFill = 0;
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
    this.total = 0n;
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

  private addHash(level: number, h: Buffer): void {
    if (level === this.levels.length) {
      this.levels.push(Buffer.allocUnsafe(BLOCK_SIZE));
      this.levelFill.push(0);
      this.levelCount.push(0);
    }
    const buf = this.levels[level]!;
    h.copy(buf, this.levelFill[level]!);
    this.levelFill[level]! += this.hashLen;
    this.levelCount[level]! += 1;
    if (this.levelFill[level] === BLOCK_SIZE) {
      this.levelFill[level] = 0;
      this.addHash(level + 1, oneShot(this.alg, buf));
    }
  }

  /** The Merkle root: all zeros for empty data (as the kernel computes it). */
  private rootHash(): Buffer {
    if (this.total === 0n) return Buffer.alloc(this.hashLen);
    if (this.blockFill > 0) {
      this.block.fill(0, this.blockFill);
      this.addHash(0, oneShot(this.alg, this.block));
      this.blockFill = 0;
    }
    for (let level = 0; ; level++) {
      const top = level === this.levels.length - 1 || this.levelCount[level + 1] === 0;
      if (top && this.levelCount[level] === 1) {
        return Buffer.from(this.levels[level]!.subarray(0, this.hashLen));
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
    return descriptorDigest(this.alg, this.rootHash(), this.total);
  }
}

const descScratch = Buffer.alloc(256);

/** Hash of the 256-byte fs_verity_descriptor: the file digest. */
function descriptorDigest(alg: VerityAlgorithm, root: Buffer, size: bigint | number): Buffer {
  const desc = descScratch;
  desc.fill(0);
  desc[0] = 1; // version
  desc[1] = ALG_ID[alg];
  desc[2] = 12; // log2(block size)
  desc[3] = 0; // salt size
  if (typeof size === "number") {
    desc.writeUInt32LE(size % 4294967296, 8);
    desc.writeUInt32LE(Math.floor(size / 4294967296), 12);
  } else {
    desc.writeBigUInt64LE(size, 8);
  }
  root.copy(desc, 16);
  return oneShot(alg, desc);
}

const padScratch = Buffer.alloc(BLOCK_SIZE);

/**
 * Digest of data of at most one block, with no allocation but the result:
 * the root is the hash of the zero-padded block (all zeros when empty).
 * Most files of a root filesystem take this path.
 */
export function fsverityDigestSmall(data: Uint8Array, alg: VerityAlgorithm = "sha256"): Buffer {
  if (data.length > BLOCK_SIZE) return new FsVerityHasher(alg).update(data).digest();
  let root: Buffer;
  if (data.length === 0) {
    root = Buffer.alloc(DIGEST_LEN[alg]);
  } else if (data.length === BLOCK_SIZE) {
    root = oneShot(alg, data);
  } else {
    padScratch.set(data, 0);
    padScratch.fill(0, data.length);
    root = oneShot(alg, padScratch);
  }
  return descriptorDigest(alg, root, data.length);
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
