/** Finding the SELinux policy of the tree being imaged. */
import { CfsError } from "../../util/errors.js";
import type { Relabeller } from "../../tree/container-rules.js";

/**
 * The tree's policy: `etc/selinux/config` names SELINUXTYPE whose
 * contexts/files/file_contexts exists. Null when the tree holds none.
 */
export function loadTreePolicy(readFile: (rel: string) => Buffer | null): Relabeller | null {
  const config = readFile("etc/selinux/config");
  if (!config) return null;
  const m = /^\s*SELINUXTYPE\s*=\s*(\S+)\s*$/m.exec(config.toString("latin1"));
  if (!m) return null;
  if (!readFile(`etc/selinux/${m[1]}/contexts/files/file_contexts`)) return null;
  throw new CfsError("this tree holds an SELinux policy and relabelling is not available in this build; use --selinux off");
}
