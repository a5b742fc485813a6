/**
 * The image digest: the fs-verity digest of a written image, what
 * `--print-digest` prints. Apart from the writer so that writing an image
 * does not load node:crypto.
 */
import { FsVerityHasher } from "../fsverity/digest.js";

export function imageDigest(image: Buffer): Buffer {
  return new FsVerityHasher("sha256").update(image).digest();
}
