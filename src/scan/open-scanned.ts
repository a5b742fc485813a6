/**
 * Opening again a file the walk saw as a regular file (to hash it, copy it
 * or read it whole), when it may have been replaced meanwhile.
 *
 * O_NONBLOCK: a FIFO put in its place would otherwise block the open (and
 * its reads) forever. Readers also never read more than size + 1 bytes in
 * all, so a device put in its place cannot keep them reading. Either then
 * shows as a changed file. O_NOFOLLOW: a symlink put in its place is an
 * error (ELOOP), never followed.
 */
import fs from "node:fs";
import { openAnyLength } from "../util/open-any-length.js";

export function openScanned(path: Buffer | string): number {
  return openAnyLength(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
}

/**
 * The bytes of the file at `path`, which the walk saw as a regular file of
 * `size` bytes; null when it is no longer a regular file of that size.
 */
export function readScanned(path: Buffer | string, size: number): Buffer | null {
  const fd = openScanned(path);
  try {
    if (!fs.fstatSync(fd).isFile()) return null;
    const data = Buffer.allocUnsafe(size + 1);
    let total = 0;
    while (total <= size) {
      const n = fs.readSync(fd, data, total, size + 1 - total, null);
      if (n === 0) break;
      total += n;
    }
    return total === size ? data.subarray(0, size) : null;
  } finally {
    fs.closeSync(fd);
  }
}
