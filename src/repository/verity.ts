/**
 * The one place where stored objects would get kernel fs-verity.
 *
 * Enabling fs-verity is the FS_IOC_ENABLE_VERITY ioctl on a read-only file
 * descriptor (and FS_IOC_MEASURE_VERITY to read a digest back). Node.js has no
 * ioctl(2): issuing it needs a native addon, which this project does not ship.
 * (The kernel of the machines this runs on is built without fs-verity anyway.)
 * So this seam reports "unsupported" and objects are named by their
 * user-space computed digest (src/fsverity/digest.ts), which is exactly what
 * the kernel would measure. An addon can later replace this function alone.
 */
export type VerityResult = "ok" | "unsupported";

export function enableVerity(_fd: number): VerityResult {
  return "unsupported";
}

/** The warning printed (once per process) when objects are stored without verity. */
export const VERITY_UNSUPPORTED_WARNING = "cfsctl: fs-verity is not supported here; objects are named by their computed digest";
