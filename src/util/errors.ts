/**
 * An error meant for the user: the CLI prints `cfsctl: error: <message>` and
 * exits 1, without a stack trace. Anything else that escapes is a bug.
 */
export class CfsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CfsError";
  }
}

/** Turn a Node.js system error into a one-line message naming the path. */
export function describeSystemError(err: unknown, what: string): CfsError {
  if (err instanceof CfsError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === "string") {
    const text = SYSTEM_ERROR_TEXT[e.code] ?? e.code;
    return new CfsError(`${what}: ${text}`);
  }
  return new CfsError(`${what}: ${e?.message ?? String(err)}`);
}

/**
 * A per-file error of the hashers ("EACCES (open)": the errno name, then
 * the system call) as a message reads it: "Permission denied (open)".
 * Anything else ("changed while it was read") is returned as it is.
 */
export function describeFileError(error: string): string {
  const m = /^(E[A-Z0-9]+) \((\w+)\)$/.exec(error);
  if (m === null) return error;
  const text = SYSTEM_ERROR_TEXT[m[1]!];
  return text === undefined ? error : `${text} (${m[2]})`;
}

const SYSTEM_ERROR_TEXT: Record<string, string> = {
  ENOENT: "No such file or directory",
  EACCES: "Permission denied",
  EPERM: "Operation not permitted",
  ENOTDIR: "Not a directory",
  EISDIR: "Is a directory",
  EEXIST: "File exists",
  ENOSPC: "No space left on device",
  EROFS: "Read-only file system",
  ELOOP: "Too many levels of symbolic links",
  ENAMETOOLONG: "File name too long",
  EIO: "Input/output error",
  ENOTSUP: "Operation not supported",
  EOPNOTSUPP: "Operation not supported",
  EINVAL: "Invalid argument",
  EBUSY: "Device or resource busy",
  ENODATA: "No data available",
};
