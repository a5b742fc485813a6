/** Exact reads from an async stream of byte chunks (tar layers, split streams). */

/**
 * A member whose data is not in the byte stream but stored elsewhere (a
 * split stream's external object): the reader queues these in order.
 */
export interface ExternalRef {
  external: Buffer;
}

/**
 * Pulls exact byte counts out of an async stream of chunks. Every byte handed
 * out passes an optional tap unless read `silent`; reference items in the
 * stream are queued, in order, for takeRef().
 */
export class ByteReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private done = false;
  private readonly refs: ExternalRef[] = [];
  /** Bytes handed out so far. */
  offset = 0;
  constructor(
    private readonly it: AsyncIterator<Buffer | ExternalRef>,
    private readonly tap: ((b: Buffer) => void) | undefined,
  ) {}

  private async pull(): Promise<void> {
    const r = await this.it.next();
    if (r.done) this.done = true;
    else if (!Buffer.isBuffer(r.value)) this.refs.push(r.value);
    else if (r.value.length > 0) {
      this.chunks.push(r.value);
      this.have += r.value.length;
    }
  }

  private async fill(n: number): Promise<boolean> {
    while (this.have < n && !this.done) await this.pull();
    return this.have >= n;
  }

  /** The next external reference in stream order, or null when there is none. */
  async takeRef(): Promise<ExternalRef | null> {
    while (this.refs.length === 0 && !this.done) await this.pull();
    return this.refs.shift() ?? null;
  }

  private give(b: Buffer, silent: boolean): Buffer {
    this.offset += b.length;
    if (!silent && this.tap && b.length > 0) this.tap(b);
    return b;
  }

  /** Exactly n bytes, or fewer at the end of the stream. */
  async read(n: number, silent = false): Promise<Buffer> {
    await this.fill(n);
    const take = Math.min(n, this.have);
    const joined = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = joined.subarray(0, take);
    const rest = joined.subarray(take);
    this.chunks = rest.length ? [rest] : [];
    this.have = rest.length;
    return this.give(out, silent);
  }

  /** Up to n bytes (at least one unless at the end), for streaming contents. */
  async readSome(n: number, silent = false): Promise<Buffer> {
    if (this.have === 0) await this.fill(1);
    if (this.have === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length <= n) {
      this.chunks.shift();
      this.have -= first.length;
      return this.give(first, silent);
    }
    this.chunks[0] = first.subarray(n);
    this.have -= n;
    return this.give(first.subarray(0, n), silent);
  }
}
