/** Small I/O helpers for commands: stdout that survives pipes, input files. */
import fs from "node:fs";
import { CfsError, describeSystemError } from "../util/errors.js";

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Write everything to a file descriptor, waiting out EAGAIN on non-blocking pipes. */
export function writeAllSync(fd: number, data: Uint8Array | string): void {
  let buf = typeof data === "string" ? Buffer.from(data, "latin1") : data;
  while (buf.length > 0) {
    try {
      const n = fs.writeSync(fd, buf);
      buf = buf.subarray(n);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EAGAIN") {
        Atomics.wait(sleeper, 0, 0, 2);
        continue;
      }
      if (code === "EPIPE") process.exit(0);
      throw describeSystemError(e, "writing output");
    }
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

/** Read a whole input file, `-` meaning standard input. */
export function readInput(path: string): Buffer {
  try {
    return path === "-" ? fs.readFileSync(0) : fs.readFileSync(path);
  } catch (e) {
    throw describeSystemError(e, path === "-" ? "reading standard input" : `open ${path}`);
  }
}

/** Write a file atomically: temporary name in the same directory, fsync, rename. */
export function writeFileAtomic(path: string, data: Uint8Array): void {
  if (path === "-") {
    if (process.stdout.isTTY) throw new CfsError("stdout is a tty. Refusing to use it");
    writeStdout(data);
    return;
  }
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  let fd = -1;
  try {
    fd = fs.openSync(tmp, "wx", 0o644);
    writeAllSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
    fs.renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* nothing to clean up */
    }
    throw describeSystemError(e, `write ${path}`);
  }
}
