/** Finding the SELinux policy of the tree being imaged. */
import type { Relabeller } from "../../tree/container-rules.js";
import { loadPolicy, relabelTree } from "../../tree/selinux.js";

/**
 * The tree's own policy: `etc/selinux/config` names SELINUXTYPE whose
 * contexts/files/file_contexts exists (read from the tree, never the host).
 * Null when the tree holds none.
 */
export function loadTreePolicy(readFile: (rel: string) => Buffer | null): Relabeller | null {
  const policy = loadPolicy(readFile);
  if (!policy) return null;
  return { relabel: (root) => relabelTree(root, policy) };
}
