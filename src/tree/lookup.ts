/**
 * Reading a file of an inode tree by its path inside the tree, following
 * symlinks within the tree (never on the host): how a policy file of the
 * root filesystem being imaged is found.
 */
import { S_IFLNK, S_IFREG, type Inode } from "../model/inode.js";

const MAX_SYMLINKS = 40;

/**
 * Resolve a path relative to the tree root; null if absent. Also gives the
 * path with the symlinks resolved (names in latin1, joined by "/").
 */
export function lookupPath(root: Inode, rel: string): { inode: Inode; resolved: string } | null {
  let comps = rel.split("/").filter((c) => c.length > 0 && c !== ".");
  const stack: Inode[] = [root];
  const names: string[] = [];
  let hops = 0;
  while (comps.length > 0) {
    const c = comps.shift()!;
    const dir = stack[stack.length - 1]!;
    if (c === "..") {
      if (stack.length > 1) {
        stack.pop();
        names.pop();
      }
      continue;
    }
    const ent = dir.lookup(Buffer.from(c, "latin1"));
    if (!ent) return null;
    const n = ent.inode;
    if (n.type === S_IFLNK) {
      if (++hops > MAX_SYMLINKS) return null;
      const target = n.payload!.toString("latin1");
      if (target.startsWith("/")) {
        stack.length = 1;
        names.length = 0;
      }
      comps = [...target.split("/").filter((x) => x.length > 0 && x !== "."), ...comps];
      continue;
    }
    if (comps.length > 0 && !n.entries) return null;
    stack.push(n);
    names.push(c);
  }
  return { inode: stack[stack.length - 1]!, resolved: names.join("/") };
}

/**
 * A regular file's bytes. `content` supplies those of external files, given
 * the inode and its path in the tree with symlinks resolved.
 */
export function readTreeFile(root: Inode, rel: string, content: (inode: Inode, resolved: string) => Buffer | null): Buffer | null {
  const found = lookupPath(root, rel);
  if (!found || found.inode.type !== S_IFREG) return null;
  const n = found.inode;
  if (n.content) return n.content;
  if (n.size === 0n) return Buffer.alloc(0);
  return content(n, found.resolved);
}
