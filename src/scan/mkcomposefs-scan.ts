import { CfsError } from "../util/errors.js";
import type { Inode } from "../model/inode.js";

export interface MkcomposefsScanOptions {
  useEpoch: boolean;
  skipDevices: boolean;
  skipXattrs: boolean;
  userXattrs: boolean;
  digestStore?: string;
  threads?: number;
}

export async function scanForMkcomposefs(dir: string, _opts: MkcomposefsScanOptions): Promise<Inode> {
  throw new CfsError(`directory scanning of ${dir} is being written`);
}
