/**
 * The native addons cfsctl uses: fs-xattr (reading xattrs while scanning)
 * and fs-ext (flock for the repository lock). node-gyp compiles them when
 * cfsctl is installed; where that did not happen (no compiler, install
 * scripts skipped, another Node ABI), a command that reads xattrs fails with
 * one line saying what to install, and every other command works. Without
 * fs-ext, repository locks fall back to lock files (src/repository/lock.ts).
 * cfsctl's own addon (build/Release/cfsctl_native.node, compiled the same
 * way) makes scanning and hashing faster; without it the JavaScript code
 * paths do the same work.
 */
import { createRequire } from "node:module";
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

/** cfsctl's own addon (native/cfsctl_native.c): a directory scanner and an fs-verity hasher. */
export interface CfsNative {
  /**
   * Every entry of a directory, sorted by name bytes, packed (see
   * src/scan/packed-entries.ts). With useCwd the directory is the working
   * directory while it is read (restored before the call returns).
   */
  scanDir(path: Uint8Array, xattrMode: 0 | 1 | 2, inlineMax: number, useCwd?: boolean): Buffer;
  /** hashFiles in a libuv thread; the arrays must stay untouched until the promise settles. */
  hashFilesAsync(paths: Uint8Array, ends: Uint32Array, meta: Float64Array, algorithm: 1 | 2, out: Uint8Array): Promise<(string | null)[] | null>;
  /**
   * At most n of libuv's threads run hashFilesAsync batches at once, in the
   * whole process (0: no limit), so that the walk feeding them keeps a CPU.
   * Returns the limit before.
   */
  setHashLimit(n: number): number;
  /** writeFile and writeFiles create no file after this, in the whole process (an interrupted run). */
  stopWrites(): void;
  /** open(2) of a path of any length (past PATH_MAX: from its longest leading part, then one component at a time); flags without O_CREAT. */
  openLong(path: Uint8Array, flags: number): number;
  /** The xattrs of a path itself (not following a symlink), packed as in scanDir's entries. */
  readXattrs(path: Uint8Array, xattrMode: 1 | 2): Buffer;
  /** fs-verity digests of files into `out`; per file an error message, or null when none failed. */
  hashFiles(paths: Uint8Array, ends: Uint32Array, meta: Float64Array, algorithm: 1 | 2, out: Uint8Array): (string | null)[] | null;
  /** The fs-verity digest of bytes in memory, written to out[at…]. */
  verityDigest(data: Uint8Array, algorithm: 1 | 2, out: Uint8Array, at: number): void;
  /**
   * Create `path` (O_EXCL, 0644; with chmod, whatever the umask) holding the
   * parts, start its writeback and close it, in a libuv thread; a missing
   * parent directory is made (resolves to true when it was).
   */
  writeFile(path: string, parts: Buffer[], chmod: boolean): Promise<boolean>;
  /**
   * writeFile for many files in one libuv job: file i holds the next
   * counts[i] parts. Per file: null, "made" (its directory made) or
   * "<ERRNO> <syscall>".
   */
  writeFiles(paths: string[], parts: Buffer[], counts: number[], chmod: boolean): Promise<(string | null)[]>;
  /** The hash of each 4096-byte block of `data`, one after another at out[at…]. */
  hashBlocks(data: Uint8Array, algorithm: 1 | 2, out: Uint8Array, at: number): void;
  /** Whether SHA-256 of 4096-byte blocks uses the CPU's SHA extensions; `on` false forces OpenSSL's path (tests). */
  useShaExtensions(on?: boolean): boolean;
  /** FS_IOC_ENABLE_VERITY (4096-byte blocks, no salt): null when enabled, else the errno name. */
  enableVerity(fd: number, algorithm: 1 | 2): string | null;
  /** FS_IOC_MEASURE_VERITY: the digest, or the errno name ("EALGORITHM": another algorithm). */
  measureVerity(fd: number, algorithm: 1 | 2): Buffer | string;
  /** Name temporary object files (pairs tmp, final) in a libuv thread; see src/util/name-objects.ts. */
  nameObjects(paths: string[], verity: 0 | 1 | 2 | 3 | 4, digests: Buffer): Promise<{ results: string[]; verityUnsupported: boolean }>;
  /** Reset a SHA-256 context kept in `state` (256 bytes, see src/util/stream-sha256.ts). */
  sha256Init(state: Buffer): void;
  /** Hash the parts into the context in a libuv thread; one update of a state at a time. */
  sha256Update(state: Buffer, parts: Buffer[]): Promise<void>;
  /** The digest of the context (32 bytes). */
  sha256Final(state: Buffer): Buffer;
}

let cfsNative: CfsNative | null | undefined;

/**
 * The addon, or null where it was not built (no compiler when cfsctl was
 * installed, install scripts skipped) or CFSCTL_NATIVE=0 asks for the
 * JavaScript code paths, which give the same results more slowly.
 */
export function loadCfsNative(): CfsNative | null {
  if (cfsNative !== undefined) return cfsNative;
  cfsNative = null;
  if (process.env.CFSCTL_NATIVE === "0") return null;
  try {
    // dist/util/native.js and src/util/native.ts alike: the package's build/
    // directory (CFSCTL_NATIVE_ADDON: another build, as the sanitizer check loads).
    const addon = process.env.CFSCTL_NATIVE_ADDON ?? "../../build/Release/cfsctl_native.node";
    cfsNative = createRequire(import.meta.url)(addon) as CfsNative;
  } catch {
    cfsNative = null;
  }
  return cfsNative;
}
