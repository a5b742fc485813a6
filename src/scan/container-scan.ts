/**
 * The directory scan for container images (create-image, compute-id,
 * create-dumpfile): hardlinks kept as one inode with nlink = the names found,
 * every xattr as found, files of up to 64 bytes inline. The container-image
 * rules are applied afterwards by src/tree/container-rules.ts.
 */
import fs from "node:fs";
import type { VerityAlgorithm } from "../fsverity/digest.js";
import type { Inode } from "../model/inode.js";
import { walk, type ExternalFile } from "./walk.js";
import { SCAN_INLINE_MAX } from "./mkcomposefs-scan.js";

export interface ScannedTree {
  root: Inode;
  external: ExternalFile[];
  /** The bytes of an external file, read from where it was scanned. */
  contentOf(inode: Inode): Buffer | null;
}

export async function scanContainerRoot(
  dir: string,
  opts: { algorithm: VerityAlgorithm; threads?: number; store?: string; onProgress?: (n: number) => void },
): Promise<ScannedTree> {
  const res = await walk(dir, {
    hardlinks: true,
    useEpoch: false,
    skipDevices: false,
    xattrs: "all",
    inlineMax: SCAN_INLINE_MAX,
    algorithm: opts.algorithm,
    threads: opts.threads,
    store: opts.store,
    onProgress: opts.onProgress,
  });
  const paths = new Map<Inode, Buffer>();
  for (const f of res.external) paths.set(f.inode, f.path);
  return {
    root: res.root,
    external: res.external,
    contentOf(inode) {
      const p = paths.get(inode);
      return p ? fs.readFileSync(p) : null;
    },
  };
}
