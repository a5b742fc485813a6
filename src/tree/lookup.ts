/**
 * Reading a file of an inode tree by its path inside the tree, following
 * symlinks within the tree (never on the host): how a policy file of the
 * root filesystem being imaged is found.
 */
import { S_IFLNK, S_IFREG, type Inode } from "../model/inode.js";

const MAX_SYMLINKS = 40;

/** Resolve a path relative to the tree root; null if absent. */
export function lookupPath(root: Inode, rel: string): Inode | null {
  let comps = rel.split("/").filter((c) => c.length > 0 && c !== ".");
  const stack: Inode[] = [root];
  let hops = 0;
  while (comps.length > 0) {
    const c = comps.shift()!;
    const dir = stack[stack.length - 1]!;
    if (c === "..") {
      if (stack.length > 1) stack.pop();
      continue;
    }
    const ent = dir.lookup(Buffer.from(c, "latin1"));
    if (!ent) return null;
    const n = ent.inode;
    if (n.type === S_IFLNK) {
      if (++hops > MAX_SYMLINKS) return null;
      const target = n.payload!.toString("latin1");
      if (target.startsWith("/")) stack.length = 1;
      comps = [...target.split("/").filter((x) => x.length > 0 && x !== "."), ...comps];
      continue;
    }
    if (comps.length > 0 && !n.entries) return null;
    stack.push(n);
  }
  return stack[stack.length - 1]!;
}

/** A regular file's bytes, with `content` supplying those of external files. */
export function readTreeFile(root: Inode, rel: string, content: (inode: Inode) => Buffer | null): Buffer | null {
  const n = lookupPath(root, rel);
  if (!n || n.type !== S_IFREG) return null;
  if (n.content) return n.content;
  if (n.size === 0n) return Buffer.alloc(0);
  return content(n);
}
