/**
 * The objects an image needs: the backing files of its external regular
 * files, named by their payload (`XX/YYYY…`, the overlay redirect without its
 * leading `/`), or by their fs-verity digest where an image has no payload.
 */
import { readImage } from "../erofs/reader.js";
import { S_IFMT, S_IFREG, type Inode } from "../model/inode.js";

export interface ImageObjectRef {
  /** Object digest in hex (the payload with its `/` removed). */
  digest: string;
  /** A path in the image that uses it (the first found), for messages. */
  where: string;
}

export interface ImageObjects {
  /** Digest → first path using it. */
  objects: Map<string, string>;
  /** External files whose payload is not an object path of `hexLength` hex digits. */
  invalid: { where: string; payload: string }[];
}

/** Parse an image and collect the objects its external files refer to. */
export function collectImageObjects(image: Buffer, hexLength: number): ImageObjects {
  const root = readImage(image);
  return collectTreeObjects(root, hexLength);
}

export function collectTreeObjects(root: Inode, hexLength: number): ImageObjects {
  const objects = new Map<string, string>();
  const invalid: { where: string; payload: string }[] = [];
  const seen = new Set<Inode>();
  const re = new RegExp(`^/?([0-9a-f]{2})/([0-9a-f]{${hexLength - 2}})$`);
  const stack: { node: Inode; where: string }[] = [{ node: root, where: "/" }];
  while (stack.length > 0) {
    const { node, where } = stack.pop()!;
    if (seen.has(node)) continue;
    seen.add(node);
    if (node.entries) {
      for (const d of node.entries) {
        const name = d.name.toString("latin1");
        if (name === "." || name === "..") continue;
        stack.push({ node: d.inode, where: where === "/" ? `/${name}` : `${where}/${name}` });
      }
      continue;
    }
    if ((node.mode & S_IFMT) !== S_IFREG || node.content) continue;
    let digest: string | null = null;
    if (node.payload && node.payload.length > 0) {
      const p = node.payload.toString("latin1");
      const m = re.exec(p);
      if (m) digest = m[1]! + m[2]!;
      else {
        invalid.push({ where, payload: p });
        continue;
      }
    } else if (node.digest && node.digest.length * 2 === hexLength && node.size > 0n) {
      digest = node.digest.toString("hex");
    }
    if (digest !== null && !objects.has(digest)) objects.set(digest, where);
  }
  return { objects, invalid };
}
