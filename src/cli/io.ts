/** Small I/O helpers for commands: stdout that survives pipes, input files. */
import fs from "node:fs";
import { createRequire } from "node:module";
import { CfsError, describeSystemError } from "../util/errors.js";
import { readSyncWaiting } from "../util/read-sync.js";
import { sleepMs } from "../util/sleep.js";

/** Write all of buf to a file descriptor, waiting out EAGAIN on non-blocking pipes; other errors are thrown. */
export function writeFully(fd: number, buf: Uint8Array): void {
  while (buf.length > 0) {
    try {
      buf = buf.subarray(fs.writeSync(fd, buf));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
      sleepMs(2);
    }
  }
}

/** writeFully for output: a reader that went away ends the run quietly (exit 0). */
export function writeAllSync(fd: number, data: Uint8Array | string): void {
  try {
    writeFully(fd, typeof data === "string" ? Buffer.from(data, "latin1") : data);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EPIPE") process.exit(0);
    throw describeSystemError(e, "writing output");
  }
}

export function writeStdout(data: Uint8Array | string): void {
  writeAllSync(1, data);
}

/** Buffered stdout writer for many small pieces of text. */
export class StdoutBuffer {
  private parts: string[] = [];
  private size = 0;
  write(s: string): void {
    this.parts.push(s);
    this.size += s.length;
    if (this.size >= 1 << 16) this.flush();
  }
  flush(): void {
    if (this.parts.length === 0) return;
    writeStdout(this.parts.join(""));
    this.parts = [];
    this.size = 0;
  }
}

/** isatty(fd), with node:tty (which loads node:net) loaded only when asked: not on every start. */
function isTerminal(fd: number): boolean {
  const tty = createRequire(import.meta.url)("node:tty") as typeof import("node:tty");
  return tty.isatty(fd);
}

/** Most bytes an input held whole (an image or dumpfile) is read from a pipe or a device: a file is read at its size. */
export const MAX_STREAM_INPUT = 1 << 30;

/**
 * Read a whole input (an image or a dumpfile), `-` meaning standard input.
 * A regular file is read at its size; a pipe, a terminal or a block device
 * until its end, but never more than MAX_STREAM_INPUT bytes; any other
 * character device (/dev/zero, which never ends) is refused.
 */
export function readInput(path: string): Buffer {
  const what = path === "-" ? "reading standard input" : `open ${path}`;
  const opened = path !== "-";
  let fd = 0;
  try {
    if (opened) fd = fs.openSync(path, "r");
    const st = fs.fstatSync(fd);
    if (st.isFile()) return fs.readFileSync(fd);
    if (st.isDirectory()) throw new CfsError(`${what}: Is a directory`);
    if (st.isCharacterDevice() && !isTerminal(fd)) throw new CfsError(`${what}: not a file, a pipe or a block device`);
    const parts: Buffer[] = [];
    let total = 0;
    for (;;) {
      const part = Buffer.allocUnsafe(1 << 20);
      const n = readSyncWaiting(fd, part, 0, part.length);
      if (n === 0) break;
      total += n;
      if (total > MAX_STREAM_INPUT) throw new CfsError(`${what}: more than ${MAX_STREAM_INPUT >> 20} MiB (give it as a file)`);
      parts.push(n === part.length ? part : part.subarray(0, n));
    }
    return Buffer.concat(parts, total);
  } catch (e) {
    throw describeSystemError(e, what);
  } finally {
    if (opened && fd !== 0) fs.closeSync(fd);
  }
}

