/**
 * open(2) for a path of any length: one longer than PATH_MAX (which only the
 * native scanner walks) is opened by the addon, from its longest leading
 * part the kernel takes, then one component at a time.
 */
import fs from "node:fs";
import { loadCfsNative } from "./native.js";

/** Linux O_PATH (not exported by node:fs). */
export const O_PATH = 0o10000000;

const native = loadCfsNative();

export function openAnyLength(path: Buffer | string, flags: number): number {
  try {
    return fs.openSync(path, flags);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENAMETOOLONG" || native === null) throw e;
    return native.openLong(typeof path === "string" ? Buffer.from(path) : path, flags);
  }
}
