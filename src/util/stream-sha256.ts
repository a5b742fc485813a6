/**
 * SHA-256 of a byte stream, its updates run in libuv's threads by the
 * native addon, so the thread reading the stream only queues chunks: the
 * blob and diff_id digests of a layer are its largest hashing job, on an
 * import's critical path. Without the addon, node:crypto on this thread.
 *
 * Chunks are held until hashed, not copied: a caller must not change a
 * chunk it passed. `backlog` is the bytes queued and not yet hashed; a
 * caller bounds it by awaiting `drained()`.
 */
import crypto from "node:crypto";
import { loadCfsNative } from "./native.js";

/** Bytes of the opaque context the addon keeps in a caller's Buffer. */
const STATE_BYTES = 256;

export class StreamSha256 {
  private readonly native = loadCfsNative();
  private readonly state: Buffer | null = null;
  private readonly fallback: crypto.Hash | null = null;
  private queued: Buffer[] = [];
  private running: Promise<void> | null = null;
  backlog = 0;

  constructor() {
    if (this.native) {
      this.state = Buffer.alloc(STATE_BYTES);
      this.native.sha256Init(this.state);
    } else {
      this.fallback = crypto.createHash("sha256");
    }
  }

  update(b: Buffer): void {
    if (this.fallback) {
      this.fallback.update(b);
      return;
    }
    if (b.length === 0) return;
    this.queued.push(b);
    this.backlog += b.length;
    this.pump();
  }

  /** Start hashing what is queued, unless an update of this state is running (one at a time, in order). */
  private pump(): void {
    if (this.running || this.queued.length === 0) return;
    const parts = this.queued;
    this.queued = [];
    let bytes = 0;
    for (const p of parts) bytes += p.length;
    this.running = this.native!.sha256Update(this.state!, parts).then(() => {
      this.backlog -= bytes;
      this.running = null;
      this.pump();
    });
  }

  /** update(), then, when more than `limit` bytes wait to be hashed, wait until half of that is left. */
  async updateBounded(b: Buffer, limit: number): Promise<void> {
    this.update(b);
    if (this.backlog > limit) await this.drained(limit / 2);
  }

  /** Resolves once at most `limit` bytes wait to be hashed. */
  async drained(limit = 0): Promise<void> {
    while (this.backlog > limit && this.running) await this.running;
  }

  /** The digest of everything passed to update() (the hash cannot be updated after). */
  async digest(): Promise<Buffer> {
    if (this.fallback) return this.fallback.digest();
    await this.drained();
    return this.native!.sha256Final(this.state!);
  }
}
