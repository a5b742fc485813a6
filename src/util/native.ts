/**
 * The native addons cfsctl uses: fs-xattr (reading xattrs while scanning)
 * and fs-ext (flock for the repository lock). node-gyp compiles them when
 * cfsctl is installed; where that did not happen (no compiler, install
 * scripts skipped, another Node ABI), a command that reads xattrs fails with
 * one line saying what to install, and every other command works. Without
 * fs-ext, repository locks fall back to lock files (src/repository/lock.ts).
 */
import { fileURLToPath } from "node:url";
import { CfsError } from "./errors.js";

/** The one-line error for an addon that cannot be loaded. */
export function nativeAddonError(name: string, cause: unknown): CfsError {
  const why = String((cause as Error)?.message ?? cause).split("\n")[0];
  // dist/util/native.js -> the package directory, where `npm rebuild` works.
  const pkg = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");
  return new CfsError(
    `the native addon ${name} could not be loaded (${why}); it is compiled when cfsctl is installed, ` +
      `which needs python3, make and a C++ compiler (g++): install them, then reinstall cfsctl ` +
      `or run \`npm rebuild ${name}\` in ${pkg}`,
  );
}

export interface XattrAddon {
  listAttributesSync(path: string): string[];
  getAttributeSync(path: string, attr: string): Buffer;
}

/**
 * fs-xattr, or a stand-in whose every call throws the one-line error: a
 * command that never reads an xattr (dump, diff of images, mkcomposefs
 * --skip-xattrs) still works without it.
 */
export async function loadXattrAddon(): Promise<XattrAddon> {
  try {
    return await import("fs-xattr");
  } catch (e) {
    return failingXattr(e);
  }
}

function failingXattr(cause: unknown): XattrAddon {
  const fail = (): never => {
    throw nativeAddonError("fs-xattr", cause);
  };
  return { listAttributesSync: fail, getAttributeSync: fail };
}
