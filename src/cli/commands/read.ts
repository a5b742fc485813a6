/**
 * Reading images: `cfsctl dump` and `cfsctl image-objects`, and the helpers
 * the `info` subcommands share (opening an image argument, walking a tree).
 */
import fs from "node:fs";
import type { Command } from "commander";
import { dumpImage, readImage, type ReadOptions } from "../../erofs/reader.js";
import { S_IFMT, S_IFREG, type Inode } from "../../model/inode.js";
import { CfsError } from "../../util/errors.js";
import { readInput, StdoutBuffer, writeStdout } from "../io.js";
import { openRepository } from "./repository.js";

/** Names an image in the repository (CLI.md): a sha256 or sha512 hex digest, or refs/NAME. */
export const REPOSITORY_IMAGE = /^(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{128}|refs\/.+)$/;

/** The bytes of an image the repository holds under ARG, or null if it holds none (and ARG is a local path). */
export function repositoryImage(cmd: Command, arg: string): Buffer | null {
  const local = fs.existsSync(arg);
  try {
    const repo = openRepository(cmd);
    try {
      const r = repo.resolveImage(arg);
      if (r.source !== "path") return repo.readImage(arg).bytes;
    } finally {
      repo.close();
    }
  } catch (e) {
    if (!local) throw e;
  }
  return null;
}

/**
 * The bytes of the image an IMAGE argument names (CLI.md): a hex digest or
 * `refs/NAME` of the repository, else a path to an image file (see
 * readInput for what else can be read).
 */
export function openImageArg(cmd: Command, arg: string): Buffer {
  if (REPOSITORY_IMAGE.test(arg)) {
    const bytes = repositoryImage(cmd, arg);
    if (bytes !== null) return bytes;
  }
  return readInput(arg);
}

/** Open and read an image argument; errors name the argument. */
export function loadImageArg(cmd: Command, arg: string, opts: ReadOptions = {}): Inode {
  const buf = openImageArg(cmd, arg);
  try {
    return readImage(buf, opts);
  } catch (e) {
    if (e instanceof CfsError) throw new CfsError(`${arg}: ${e.message}`);
    throw e;
  }
}

/**
 * Print the dumpfile of each image, one after the other (composefs-info
 * dump). dumpImage prints what writeDumpfile(readImage()) would, straight
 * from the image.
 */
export function dumpImages(cmd: Command, images: string[], opts: ReadOptions = {}): void {
  for (const arg of images) {
    const buf = openImageArg(cmd, arg);
    try {
      dumpImage(buf, (chunk) => writeStdout(chunk), opts);
    } catch (e) {
      if (e instanceof CfsError) throw new CfsError(`${arg}: ${e.message}`);
      throw e;
    }
  }
}

/** Every inode of a tree once (hardlink entries skipped), root first, depth-first. */
export function forEachInode(root: Inode, visit: (inode: Inode) => void): void {
  visit(root);
  const stack: Inode[] = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const ent of dir.entries!) {
      if (ent.hardlink) continue;
      visit(ent.inode);
      if (ent.inode.entries !== null) stack.push(ent.inode);
    }
  }
}

/** Payloads (backing-file paths) of the regular files of a tree, as composefs-info collects them. */
export function collectPayloads(root: Inode, into: Set<string>): void {
  forEachInode(root, (n) => {
    if ((n.mode & S_IFMT) === S_IFREG && n.payload !== null) into.add(n.payload.toString("latin1"));
  });
}

/** `XX/YYYY…` (sha256 or sha512 fs-verity digest split after one byte). */
const OBJECT_PATH = /^\/*([0-9a-f]{2})\/([0-9a-f]{62}|[0-9a-f]{126})$/;

/**
 * The object digests an image refers to, sorted and unique.
 *
 * Choice: like composefs-rs `cfsctl image-objects` (which prints each
 * object id as plain hex), a line is the full hex digest, without the `/`
 * of the `XX/YYYY…` backing path; composefs-rs prints them in hash-set
 * order, we sort them (CLI.md). The digests come from the payloads (the
 * overlay redirects) of external files, the way overlayfs finds the object;
 * a payload that is not such a path means the image does not belong to a
 * repository, and is an error naming the file (use `cfsctl info objects` to
 * see raw payloads).
 */
export function imageObjectDigests(root: Inode): string[] {
  const out = new Set<string>();
  const bad: Inode[] = [];
  forEachInode(root, (n) => {
    if ((n.mode & S_IFMT) !== S_IFREG || n.payload === null) return;
    const m = OBJECT_PATH.exec(n.payload.toString("latin1"));
    if (m === null) bad.push(n);
    else out.add(m[1]! + m[2]!);
  });
  if (bad.length > 0) {
    const first = bad[0]!;
    throw new CfsError(
      `${pathOf(root, first)} refers to '${first.payload!.toString("latin1")}', which is not an object path` +
        (bad.length > 1 ? ` (and ${bad.length - 1} more)` : ""),
    );
  }
  return [...out].sort();
}

/** First path of an inode in depth-first order (error messages only). */
function pathOf(root: Inode, target: Inode): string {
  const rec = (dir: Inode, prefix: string): string | null => {
    for (const ent of dir.entries!) {
      const p = `${prefix}/${ent.name.toString("latin1")}`;
      if (ent.inode === target) return p;
      if (!ent.hardlink && ent.inode.entries !== null) {
        const r = rec(ent.inode, p);
        if (r !== null) return r;
      }
    }
    return null;
  };
  return target === root ? "/" : (rec(root, "") ?? "?");
}

export function registerRead(program: Command): void {
  program
    .command("dump")
    .description("print an image as a composefs-dump(5) file (as composefs-info dump)")
    .argument("<image...>", "image file, or hex digest or refs/NAME in the repository")
    .addHelpText("after", "\nExamples:\n  cfsctl dump image.cfs > image.dump\n  cfsctl --repo /var/lib/composefs dump refs/myos\n")
    .action((images: string[], _o: unknown, cmd: Command) => dumpImages(cmd, images));

  program
    .command("image-objects")
    .description("print the object digests an image refers to, one a line, sorted")
    .argument("<image>", "image file, or hex digest or refs/NAME in the repository")
    .addHelpText("after", "\nExample:\n  cfsctl image-objects image.cfs\n")
    .action((image: string, _o: unknown, cmd: Command) => {
      let digests: string[];
      const root = loadImageArg(cmd, image);
      try {
        digests = imageObjectDigests(root);
      } catch (e) {
        throw e instanceof CfsError ? new CfsError(`${image}: ${e.message}`) : e;
      }
      const out = new StdoutBuffer();
      for (const d of digests) out.write(d + "\n");
      out.flush();
    });
}
