/**
 * fs.readSync that waits out EAGAIN: standard input can be a pipe another
 * process made non-blocking, where a read with no data yet fails instead of
 * waiting.
 */
import fs from "node:fs";
import { sleepMs } from "./sleep.js";

export function readSyncWaiting(fd: number, buf: Uint8Array, offset: number, length: number): number {
  for (;;) {
    try {
      return fs.readSync(fd, buf, offset, length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
      sleepMs(2);
    }
  }
}
