/**
 * composefs-dump(5) writer: the text `composefs-info dump` prints
 * (tools/composefs-info.c dump_node), from an inode tree.
 *
 * Depth-first in name order, root first. The first path of a hardlinked
 * inode in that order carries the full line; every later one is an `@` line
 * with the same fields and the first path as its payload.
 */
import type { Dirent, Inode } from "../model/inode.js";
import { Escape, escape, escapeOptional } from "./escape.js";

export type Sink = (chunk: string) => void;

const FLUSH_AT = 1 << 16;

/** Write the dumpfile of a tree; `sink` receives ASCII text in pieces. */
export function writeDumpfile(root: Inode, sink: Sink): void {
  const firstPath = new Map<Inode, Buffer>();
  let out = "";
  const emit = (path: Buffer, inode: Inode, linkPath: Buffer | null) => {
    out += line(path, inode, linkPath);
    if (out.length >= FLUSH_AT) {
      sink(out);
      out = "";
    }
  };
  emit(Buffer.from("/"), root, null);
  // A hardlink to the root names it by the empty path, as composefs-info does.
  firstPath.set(root, Buffer.alloc(0));
  const rec = (dir: Inode, prefix: Buffer) => {
    for (const ent of dir.entries as Dirent[]) {
      const path = Buffer.concat([prefix, SLASH, ent.name]);
      const seen = firstPath.get(ent.inode);
      if (seen) {
        emit(path, ent.inode, seen);
        continue;
      }
      firstPath.set(ent.inode, path);
      emit(path, ent.inode, null);
      if (ent.inode.entries) rec(ent.inode, path);
    }
  };
  rec(root, Buffer.alloc(0));
  if (out.length > 0) sink(out);
}

const SLASH = Buffer.from("/");

function line(path: Buffer, n: Inode, linkPath: Buffer | null): string {
  // Fields are printed as the tree holds them; producers set payload,
  // content and digest only where they mean something.
  const payload = linkPath ?? n.payload;
  const content = n.content;
  const digest = n.digest ? n.digest.toString("hex") : "-";
  let s =
    escape(path) +
    " " +
    n.size.toString() +
    " " +
    (linkPath ? "@" : "") +
    n.mode.toString(8) +
    " " +
    n.nlink +
    " " +
    n.uid +
    " " +
    n.gid +
    " " +
    n.rdev +
    " " +
    n.mtimeSec.toString() +
    "." +
    n.mtimeNsec +
    " " +
    escapeOptional(payload, Escape.LoneDash) +
    " " +
    escapeOptional(content, Escape.LoneDash) +
    " " +
    digest;
  for (const x of n.xattrs) {
    s += " " + escape(x.key, Escape.Equal) + "=" + escape(x.value, Escape.Equal);
  }
  return s + "\n";
}

/** The whole dumpfile as one string (tests, small trees). */
export function dumpfileToString(root: Inode): string {
  const parts: string[] = [];
  writeDumpfile(root, (c) => parts.push(c));
  return parts.join("");
}
