/**
 * `cfsctl mkcomposefs`: the raw upstream tool, same options, same bytes
 * (upstream tools/mkcomposefs.c main). No container-image rules here.
 */
import type { Command } from "commander";
import fs from "node:fs";
import { CfsError, describeSystemError } from "../../util/errors.js";
import { parseDumpfileFd, parseDumpfileFile } from "../../dumpfile/parse.js";
import { COMPOSEFS_VERSION_MAX } from "../../erofs/format.js";
import { writeImageTo, type WriteOptions } from "../../erofs/writer.js";
import type { Inode } from "../../model/inode.js";
import { deliverPendingSignal, onInterrupt } from "../../util/interrupt.js";
import { removeQuietly } from "../../util/remove-quietly.js";
import { writeAllSync, writeStdout } from "../io.js";
import { UsageError } from "../main.js";

export interface Opts {
  fromFile?: boolean;
  digestStore?: string;
  printDigest?: boolean;
  printDigestOnly?: boolean;
  minVersion?: string;
  maxVersion?: string;
  useEpoch?: boolean;
  skipDevices?: boolean;
  skipXattrs?: boolean;
  userXattrs?: boolean;
  threads?: string;
}

/** --min-version / --max-version: a format version cfsctl writes, else a usage error. */
function parseVersion(v: string, what: string): number {
  if (!/^[+-]?\d+$/.test(v)) throw new UsageError(`Invalid ${what} version ${v}`);
  const n = Number(v);
  if (n < 0 || n > COMPOSEFS_VERSION_MAX) throw new UsageError(`Invalid ${what} version ${v}: format versions are 0 to ${COMPOSEFS_VERSION_MAX}`);
  return n;
}

export function registerMkcomposefs(program: Command): void {
  program
    .command("mkcomposefs")
    .description("build a composefs image from a directory or a dumpfile, byte-identical to upstream mkcomposefs")
    .argument("<source>", "a directory, or with --from-file a composefs-dump(5) file (- for stdin)")
    .argument("[image]", "the image to write (- for stdout)")
    .option("--from-file", "SOURCE is a composefs-dump(5) file")
    .option("--digest-store <dir>", "copy external files into DIR/XX/YYYY… (directory mode)")
    .option("--print-digest", "print the image's fs-verity digest")
    .option("--print-digest-only", "print the digest and write no image")
    .option("--min-version <n>", "lowest composefs format version (0 or 1)")
    .option("--max-version <n>", "highest composefs format version (0 or 1)")
    .option("--use-epoch", "all mtimes 0.0 (directory mode)")
    .option("--skip-devices", "leave out char and block devices, whiteouts included (directory mode)")
    .option("--skip-xattrs", "read no xattrs (directory mode)")
    .option("--user-xattrs", "read only user.* xattrs (directory mode)")
    .option("--threads <n>", "hashing parallelism (directory mode); does not change the output")
    .addHelpText(
      "after",
      "\nExamples:\n  cfsctl mkcomposefs --from-file image.dump image.cfs\n  cfsctl mkcomposefs --print-digest-only /srv/rootfs\n",
    )
    .action(runMkcomposefs);
}

/** Flags without a value, by name, and the options with one. */
const FLAGS: Record<string, keyof Opts> = {
  "--from-file": "fromFile",
  "--print-digest": "printDigest",
  "--print-digest-only": "printDigestOnly",
  "--use-epoch": "useEpoch",
  "--skip-devices": "skipDevices",
  "--skip-xattrs": "skipXattrs",
  "--user-xattrs": "userXattrs",
};
const VALUED: Record<string, keyof Opts> = {
  "--digest-store": "digestStore",
  "--min-version": "minVersion",
  "--max-version": "maxVersion",
  "--threads": "threads",
};

/**
 * The arguments after `mkcomposefs` when they are plain (known long options,
 * `--opt=value` or `--opt value`, one or two operands): what commander would
 * make of them, without loading it. null for anything else (help, short or
 * unknown options, `--`, a value that looks like an option, a wrong number
 * of operands), which commander then handles with its own messages.
 */
export function plainMkcomposefsArgs(args: string[]): { source: string; image: string | undefined; opts: Opts } | null {
  const opts: Opts = {};
  const operands: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "-" || !a.startsWith("-")) {
      operands.push(a);
      continue;
    }
    const flag = FLAGS[a];
    if (flag !== undefined && Object.hasOwn(FLAGS, a)) {
      (opts as Record<string, unknown>)[flag] = true;
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq < 0 ? a : a.slice(0, eq);
    if (!Object.hasOwn(VALUED, name)) return null;
    let value: string;
    if (eq >= 0) value = a.slice(eq + 1);
    else {
      const next = args[i + 1];
      if (next === undefined || next.startsWith("-")) return null;
      value = next;
      i++;
    }
    (opts as Record<string, unknown>)[VALUED[name]!] = value;
  }
  if (operands.length < 1 || operands.length > 2) return null;
  return { source: operands[0]!, image: operands[1], opts };
}

/** The command itself (upstream tools/mkcomposefs.c main). */
export async function runMkcomposefs(source: string, image: string | undefined, o: Opts): Promise<void> {
  let minVersion = 0;
  let maxVersion = 1;
  if (o.minVersion !== undefined || o.maxVersion !== undefined) {
    // Upstream: naming either flag makes the other default to 0.
    minVersion = o.minVersion !== undefined ? parseVersion(o.minVersion, "min") : 0;
    maxVersion = o.maxVersion !== undefined ? parseVersion(o.maxVersion, "max") : 0;
  }
  let threads: number | undefined;
  if (o.threads !== undefined) {
    if (!/^\d+$/.test(o.threads) || Number(o.threads) <= 0) throw new UsageError(`Invalid threads count ${o.threads}`);
    threads = Number(o.threads);
  }
  if (source === "") throw new CfsError("Empty source path specified");
  if (o.printDigestOnly) {
    if (image !== undefined) throw new UsageError("Cannot specify destination path with --print-digest-only");
  } else if (image === undefined) {
    throw new UsageError("No destination path specified");
  }
  let root: Inode;
  if (o.fromFile) {
    const popts = { strict: process.env.CFS_PARSE_STRICT !== undefined, source: source === "-" ? "<stdin>" : source };
    // Read a chunk at a time (the tree keeps copies of what it needs).
    root = source === "-" ? parseDumpfileFd(0, "reading standard input", popts) : parseDumpfileFile(source, popts);
  } else {
    if (o.skipXattrs && o.userXattrs) throw new CfsError(`error accessing ${source}: Invalid argument`);
    // Loaded only here: the scanner brings the xattr addon and the hashing workers.
    const { scanForMkcomposefs } = await import("../../scan/mkcomposefs-scan.js");
    root = await scanForMkcomposefs(source, {
      useEpoch: !!o.useEpoch,
      skipDevices: !!o.skipDevices,
      skipXattrs: !!o.skipXattrs,
      userXattrs: !!o.userXattrs,
      digestStore: o.digestStore,
      threads,
    });
  }
  let hash: ((chunk: Buffer) => void) | null = null;
  let digest: (() => Buffer) | null = null;
  if (o.printDigest || o.printDigestOnly) {
    const { FsVerityHasher } = await import("../../fsverity/digest.js");
    const hasher = new FsVerityHasher("sha256");
    hash = (chunk) => hasher.update(chunk);
    digest = () => hasher.digest();
  }
  await writeImageFile(root, { minVersion, maxVersion }, o.printDigestOnly ? null : image!, hash);
  if (digest) writeStdout(digest().toString("hex") + "\n");
}

/**
 * Whether IMAGE may be replaced by a new file: it does not exist, or is a
 * regular file of one name. Anything else (a symlink, a device such as
 * /dev/null, a FIFO, a file with other names) is written into, as upstream
 * mkcomposefs does: replacing it would destroy what the name stands for.
 */
function replaceable(path: string): boolean {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch {
    return true;
  }
  return st.isFile() && st.nlink === 1;
}

/**
 * Write the image, and hash it, into the file `open` makes: opened at the
 * first chunk (so only once the tree has passed every check of the writer),
 * or at the end for none. `out.fd` is the descriptor once open.
 */
function streamInto(root: Inode, opts: WriteOptions, out: { fd: number }, open: () => number, hash: ((chunk: Buffer) => void) | null): void {
  writeImageTo(root, opts, (chunk) => {
    if (out.fd < 0) out.fd = open();
    writeAllSync(out.fd, chunk);
    hash?.(chunk);
  });
  if (out.fd < 0) out.fd = open();
}

/** Write the image into the existing `path` (through a symlink, into a device or FIFO), as upstream does. */
function writeInto(root: Inode, opts: WriteOptions, path: string, hash: ((chunk: Buffer) => void) | null): void {
  const out = { fd: -1 };
  try {
    streamInto(root, opts, out, () => fs.openSync(path, "w", 0o644), hash);
    if (fs.fstatSync(out.fd).isFile()) fs.fsyncSync(out.fd);
  } catch (e) {
    throw describeSystemError(e, `write ${path}`);
  } finally {
    if (out.fd >= 0) fs.closeSync(out.fd);
  }
}

/**
 * Write the image as it is produced, a chunk at a time (never whole in
 * memory), to `path` (`-`: stdout; null: nowhere) and to `hash`. A new or
 * regular file is written under a temporary name, synced and renamed, so a
 * failed run leaves no partial image; it is created only once the tree has
 * passed every check of the writer. Any other IMAGE is written into.
 */
async function writeImageFile(root: Inode, opts: WriteOptions, path: string | null, hash: ((chunk: Buffer) => void) | null): Promise<void> {
  if (path === "-") {
    writeImageTo(root, opts, (chunk) => {
      if (process.stdout.isTTY) throw new CfsError("stdout is a tty. Refusing to use it");
      writeStdout(chunk);
      hash?.(chunk);
    });
    return;
  }
  if (path === null) {
    writeImageTo(root, opts, (chunk) => hash?.(chunk));
    return;
  }
  if (!replaceable(path)) {
    writeInto(root, opts, path, hash);
    return;
  }
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  const out = { fd: -1 };
  const cancel = onInterrupt(() => removeQuietly(tmp));
  try {
    streamInto(root, opts, out, () => fs.openSync(tmp, "wx", 0o644), hash);
    fs.fsyncSync(out.fd);
    fs.closeSync(out.fd);
    out.fd = -1;
    // The image was written without a pause: a signal sent meanwhile is
    // taken now, and the run ends as interrupted, with no image.
    await deliverPendingSignal();
    fs.renameSync(tmp, path);
  } catch (e) {
    if (out.fd >= 0) {
      fs.closeSync(out.fd);
      removeQuietly(tmp);
    }
    throw describeSystemError(e, `write ${path}`);
  } finally {
    cancel();
  }
}
