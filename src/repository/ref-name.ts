/** Names in the repository: refs, and the prefix of temporary files. */
import { CfsError } from "../util/errors.js";

/** Temporary files in the repository start with this; no ref component may. */
export const TMP_PREFIX = ".tmp-";

/**
 * A ref name (images/refs/NAME, streams/refs/NAME): slash-separated
 * components, none empty, `.`, `..` or a temporary name; no NUL byte and no
 * control character (a newline would break every listing of refs).
 */
export function validateRefName(name: string): void {
  const parts = name.split("/");
  if (name === "" || /[\x00-\x1f\x7f]/.test(name) || parts.some((p) => p === "" || p === "." || p === ".." || p.startsWith(TMP_PREFIX))) {
    throw new CfsError(`invalid ref name ${JSON.stringify(name)}`);
  }
}
