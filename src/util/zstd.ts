/**
 * zstd through the `zstd` command (Debian package zstd): Node 20's zlib has
 * no zstd. Streams in and out of a child process, so memory stays flat.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { CfsError } from "./errors.js";

const MISSING = "the zstd command is missing: install zstd (Debian: apt-get install zstd)";

function childFailure(child: ChildProcess, what: string): Promise<void> {
  let err = "";
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.on("error", (e: NodeJS.ErrnoException) => reject(new CfsError(e.code === "ENOENT" ? `${what}: ${MISSING}` : `${what}: ${e.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) resolve();
      else {
        // zstd's last line, without the name it gives its standard input or output ("/*stdin*\ : ").
        const why = err.trim().split("\n").pop()?.replace(/^\/\*std(in|out)\*\\ ?: /, "");
        reject(new CfsError(`${what}: ${why || (signal ? `killed by ${signal}` : `exit ${code}`)}`));
      }
    });
  });
}

/** Decompress a stream of zstd bytes; yields the plain bytes. */
export async function* zstdDecompress(input: AsyncIterable<Buffer>, what: string): AsyncGenerator<Buffer> {
  const child = spawn("zstd", ["-q", "-d", "-c"], { stdio: ["pipe", "pipe", "pipe"] });
  const done = childFailure(child, what);
  done.catch(() => undefined);
  const stdin = child.stdin!;
  stdin.on("error", () => undefined); // EPIPE when zstd stops early: its exit status says why
  const feed = (async () => {
    try {
      for await (const b of input) {
        if (!stdin.write(b)) await Promise.race([once(stdin, "drain"), done]);
      }
    } finally {
      stdin.end();
    }
  })();
  feed.catch(() => child.kill());
  try {
    for await (const b of child.stdout!) yield b as Buffer;
    await feed;
    await done;
  } finally {
    if (child.exitCode === null) child.kill();
  }
}

/**
 * A zstd compressor writing its output to `fd`. write() respects back
 * pressure; finish() waits for the last byte.
 */
export class ZstdWriter {
  private readonly child: ChildProcess;
  private readonly done: Promise<void>;
  constructor(fd: number, what: string, level = 3) {
    this.child = spawn("zstd", ["-q", "-c", `-${level}`], { stdio: ["pipe", fd, "pipe"] });
    this.done = childFailure(this.child, what);
    this.done.catch(() => undefined);
    this.child.stdin!.on("error", () => undefined);
  }

  async write(b: Buffer): Promise<void> {
    if (!this.child.stdin!.write(b)) await Promise.race([once(this.child.stdin!, "drain"), this.done]);
  }

  async finish(): Promise<void> {
    this.child.stdin!.end();
    await this.done;
  }

  abort(): void {
    if (this.child.exitCode === null) this.child.kill();
  }
}

/** Decompress a small buffer in one call (bounded output). */
export function zstdDecompressSync(data: Buffer, what: string, maxBytes = 64 << 20): Buffer {
  const r = spawnSync("zstd", ["-q", "-d", "-c"], { input: data, maxBuffer: maxBytes });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    throw new CfsError(code === "ENOENT" ? `${what}: ${MISSING}` : `${what}: ${r.error.message}`);
  }
  if (r.status !== 0) throw new CfsError(`${what}: not valid zstd data (${r.stderr.toString().trim().split("\n").pop() ?? ""})`);
  return r.stdout;
}

/**
 * One zstd frame holding `data` in raw (stored) blocks: valid for every zstd
 * decoder, written without the zstd command. For small sections only.
 * Frame: magic, descriptor 0 (no checksum, window descriptor follows),
 * window 128 KiB, blocks of at most 128 KiB: 3-byte header size<<3 | raw<<1 | last.
 */
export function zstdStoredFrame(data: Buffer): Buffer {
  const parts: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, (17 - 10) << 3])];
  const BLOCK = 128 * 1024;
  let off = 0;
  do {
    const n = Math.min(BLOCK, data.length - off);
    const last = off + n >= data.length ? 1 : 0;
    const h = (n << 3) | last;
    parts.push(Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff]), data.subarray(off, off + n));
    off += n;
  } while (off < data.length);
  return Buffer.concat(parts);
}
