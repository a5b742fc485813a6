/**
 * The directory scan for container images (create-image, compute-id,
 * create-dumpfile): hardlinks kept as one inode with nlink = the names found,
 * every xattr as found, files of up to 64 bytes inline. The container-image
 * rules are applied afterwards by src/tree/container-rules.ts.
 */
import { CfsError } from "../util/errors.js";
import type { VerityAlgorithm } from "../fsverity/digest.js";
import type { Inode } from "../model/inode.js";
import { readScanned } from "./open-scanned.js";
import { walk, type ExternalFile } from "./walk.js";
import { SCAN_INLINE_MAX } from "./mkcomposefs-scan.js";

export interface ScannedTree {
  root: Inode;
  /** With a store: the files copied to temporary names, to commit (store.ts). */
  external: ExternalFile[];
  /** The bytes of an external file, read from where it was scanned (its resolved path in the tree). */
  contentOf(inode: Inode, resolved: string): Buffer | null;
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
    wholeSeconds: true,
    algorithm: opts.algorithm,
    threads: opts.threads,
    store: opts.store,
    onProgress: opts.onProgress,
  });
  return {
    root: res.root,
    external: res.external,
    contentOf(inode, resolved) {
      const data = readScanned(Buffer.concat([Buffer.from(dir), Buffer.from("/"), Buffer.from(resolved, "latin1")]), Number(inode.size));
      if (data === null) throw new CfsError(`${dir}/${resolved}: changed while it was read`);
      return data;
    },
  };
}
