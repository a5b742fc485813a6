/**
 * The rules of a container image (CLI.md "Rules of a container image"), one
 * transformation of the inode tree that every producer goes through — the
 * directory scan and the OCI import alike — so that a root filesystem and the
 * layers it was built from give the same digest:
 *
 * - mtimes are whole seconds;
 * - the root is root:root 0555 with the newest mtime of the *other* inodes
 *   (0 when there are none or all are before 1970) and no xattrs but its
 *   SELinux label; its own metadata never counts;
 * - SELinux: with a policy in the tree every inode gets the label the policy
 *   gives it; without one `security.selinux` is removed; `off` keeps labels;
 * - directory sizes are 0 (an image stores the computed size anyway) and
 *   xattrs are in key order, so the dumpfile is canonical.
 */
import { Inode, S_IFDIR } from "../model/inode.js";

const SELINUX = Buffer.from("security.selinux");

export interface Relabeller {
  relabel(root: Inode): void;
}

export interface ContainerRuleOptions {
  selinux: "auto" | "off";
  /** The tree's own policy (auto mode), or null when it holds none. */
  policy: Relabeller | null;
}

/** Every inode once (hardlinked inodes are reached through their primary entry). */
export function forEachInode(root: Inode, fn: (inode: Inode, isRoot: boolean) => void): void {
  fn(root, true);
  const stack: Inode[] = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const e of dir.entries!) {
      if (e.hardlink) continue;
      fn(e.inode, false);
      if (e.inode.entries) stack.push(e.inode);
    }
  }
}

export function applyContainerRules(root: Inode, opts: ContainerRuleOptions): void {
  let newest = 0n;
  forEachInode(root, (n, isRoot) => {
    n.mtimeNsec = 0;
    if (n.entries) n.size = 0n;
    if (!isRoot && n.mtimeSec > newest) newest = n.mtimeSec;
  });
  root.mode = S_IFDIR | 0o555;
  root.uid = 0;
  root.gid = 0;
  root.mtimeSec = newest;
  root.xattrs = [];
  root.xattrBudgetUsed = 0;
  if (opts.selinux === "auto") {
    if (opts.policy) opts.policy.relabel(root);
    else forEachInode(root, (n) => n.removeXattr(SELINUX));
  }
  forEachInode(root, (n) => {
    if (n.xattrs.length > 1) n.xattrs.sort((a, b) => Buffer.compare(a.key, b.key));
    // Directory nlink as an image stores it: 2 + subdirectories.
    if (n.entries) n.nlink = 2 + n.entries.filter((e) => !e.hardlink && e.inode.entries !== null).length;
  });
}
