/**
 * Kernel fs-verity on stored objects, through the native addon's ioctls
 * (FS_IOC_ENABLE_VERITY with 4096-byte blocks and no salt, then
 * FS_IOC_MEASURE_VERITY): the digest the kernel measures must be the one the
 * object is named by, which cfsctl computed in user space
 * (src/fsverity/digest.ts). composefs-rs checks the same after enabling.
 *
 * "unsupported" where the filesystem or kernel has no fs-verity (ENOTTY,
 * EOPNOTSUPP), the parameters are refused (EINVAL: e.g. 4096-byte blocks on a
 * filesystem that cannot use them), or the addon is not built; the caller
 * then names objects by their computed digest alone. Any other failure, and
 * a measured digest that differs, is an error.
 */
import { verityAlgorithmId, type VerityAlgorithm } from "../fsverity/digest.js";
import { CfsError } from "../util/errors.js";
import { loadCfsNative, type CfsNative } from "../util/native.js";

/** The two ioctls (the addon's; tests pass a stand-in). */
export type VerityIoctls = Pick<CfsNative, "enableVerity" | "measureVerity">;

export type VerityResult = "ok" | "unsupported";

/** Answers meaning "no fs-verity here" (nameObjects in native/cfsctl_native.c keeps the same list). */
const UNSUPPORTED = new Set(["ENOTTY", "EOPNOTSUPP", "ENOTSUP", "EINVAL", "ENOSYS"]);

/**
 * Enable fs-verity on `fd` (open read-only, no writer left) and check the
 * kernel's digest against `expected`. A file that already has verity is
 * only checked.
 */
export function enableVerity(
  fd: number,
  algorithm: VerityAlgorithm,
  expected: Uint8Array,
  what: string,
  native: VerityIoctls | null = loadCfsNative(),
): VerityResult {
  if (native === null) return "unsupported";
  const code = native.enableVerity(fd, verityAlgorithmId(algorithm));
  if (code !== null && code !== "EEXIST") {
    if (UNSUPPORTED.has(code)) return "unsupported";
    throw new CfsError(`cannot enable fs-verity on ${what}: ${code}`);
  }
  const got = measureVerity(fd, algorithm, what, native);
  if (!Buffer.isBuffer(got)) throw new CfsError(`cannot measure fs-verity of ${what}: ${got === null ? "ENODATA" : "not supported"}`);
  if (!got.equals(expected)) {
    throw new CfsError(`${what}: the kernel measures fs-verity digest ${got.toString("hex")}, cfsctl computed ${Buffer.from(expected).toString("hex")}`);
  }
  return "ok";
}

/**
 * The kernel's fs-verity digest of `fd`: "unsupported" where there is no
 * fs-verity, null for a file without it.
 */
export function measureVerity(
  fd: number,
  algorithm: VerityAlgorithm,
  what: string,
  native: VerityIoctls | null = loadCfsNative(),
): Buffer | null | "unsupported" {
  if (native === null) return "unsupported";
  const got = native.measureVerity(fd, verityAlgorithmId(algorithm));
  if (Buffer.isBuffer(got)) return got;
  if (got === "ENODATA") return null;
  if (UNSUPPORTED.has(got)) return "unsupported";
  if (got === "EALGORITHM") throw new CfsError(`${what}: fs-verity with another hash algorithm than the repository's`);
  throw new CfsError(`cannot measure fs-verity of ${what}: ${got}`);
}

/** The warning printed (once per process) when objects are stored without verity. */
export const VERITY_UNSUPPORTED_WARNING = "cfsctl: fs-verity is not supported here; objects are named by their computed digest";
