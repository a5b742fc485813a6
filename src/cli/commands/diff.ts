/**
 * `cfsctl diff A B`: the differences between two images or trees, one line
 * each, in byte order of the paths (doc/diff.md).
 *
 * A and B are each an image file, an image in the repository (hex digest or
 * `refs/NAME`), a composefs-dump(5) file, or a directory (scanned under the
 * container-image rules, as compute-id scans it). Exit status as diff(1):
 * 0 identical, 1 different; a failure is `cfsctl: error: …` on stderr,
 * nothing on stdout, and exit 1; a usage error exits 2.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { parseDumpfile } from "../../dumpfile/parse.js";
import { COMPOSEFS_MAGIC } from "../../erofs/format.js";
import { readImage } from "../../erofs/reader.js";
import type { Inode } from "../../model/inode.js";
import { diffTrees, formatDiff } from "../../tree/diff.js";
import { CfsError, describeSystemError } from "../../util/errors.js";
import { readInput, writeStdout } from "../io.js";
import { UsageError } from "../main.js";
import { buildContainerTree, parseSelinuxMode, type SelinuxMode } from "./build.js";
import { REPOSITORY_IMAGE, repositoryImage } from "./read.js";

/** An image or a dumpfile, told apart by the composefs magic at offset 0. */
function treeOfBytes(bytes: Buffer, what: string): Inode {
  try {
    if (bytes.length >= 4 && bytes.readUInt32LE(0) === COMPOSEFS_MAGIC) return readImage(bytes);
    return parseDumpfile(bytes, { source: what });
  } catch (e) {
    if (e instanceof CfsError && !e.message.startsWith(what)) throw new CfsError(`${what}: ${e.message}`);
    throw e;
  }
}

/**
 * The tree ARG names. A hex digest or `refs/NAME` is looked up in the
 * repository first (as every command reading an image does), then as a path;
 * `-` is standard input (an image or a dumpfile).
 */
export async function loadDiffInput(cmd: Command, arg: string, selinux: SelinuxMode): Promise<Inode> {
  if (arg === "-") return treeOfBytes(readInput("-"), "<stdin>");
  if (REPOSITORY_IMAGE.test(arg)) {
    const bytes = repositoryImage(cmd, arg);
    if (bytes !== null) return treeOfBytes(bytes, arg);
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(arg);
  } catch (e) {
    throw describeSystemError(e, arg);
  }
  if (st.isDirectory()) return (await buildContainerTree(cmd, arg, selinux)).root;
  // A file, or a pipe or block device holding one (readInput refuses what never ends).
  if (!st.isFile() && !st.isFIFO() && !st.isBlockDevice()) throw new CfsError(`${arg}: not an image, a dumpfile or a directory`);
  return treeOfBytes(readInput(arg), arg);
}

export function registerDiff(program: Command): void {
  program
    .command("diff")
    .description("print the differences between two images, dumpfiles or directories, one line each")
    .argument("<a>", "image file, repository image (digest or refs/NAME), dumpfile, directory, or - for stdin")
    .argument("<b>", "the same, compared against A")
    .option("--selinux <mode>", "for a directory: auto or off (see compute-id)", "auto")
    .option("--json", "print the differences as a JSON array")
    .addHelpText(
      "after",
      [
        "",
        "Output, in byte order of the paths (escaped as in composefs-dump(5)):",
        "  - PATH                          only in A",
        "  + PATH                          only in B",
        "  ~ PATH FIELD A -> B             FIELD: type mode uid gid size mtime rdev target",
        "                                  content payload nlink hardlink",
        "  ~ PATH xattr added|removed KEY=VALUE",
        "  ~ PATH xattr changed KEY=A -> KEY=B",
        "Exit status: 0 identical, 1 different (or an error, with `cfsctl: error:`), 2 usage.",
        "",
        "Examples:",
        "  cfsctl diff old.cfs new.cfs",
        "  cfsctl --repo /var/lib/composefs diff refs/myos /rootfs",
        "",
      ].join("\n"),
    )
    .action(async (a: string, b: string, o: { selinux?: string; json?: boolean }, cmd: Command) => {
      const selinux = parseSelinuxMode(o.selinux);
      if (a === "-" && b === "-") throw new UsageError("diff: only one of A and B can be standard input");
      const ta = await loadDiffInput(cmd, a, selinux);
      const tb = await loadDiffInput(cmd, b, selinux);
      const diffs = diffTrees(ta, tb);
      if (o.json) writeStdout(JSON.stringify(diffs, null, 2) + "\n");
      else writeStdout(formatDiff(diffs));
      if (diffs.length > 0) process.exitCode = 1;
    });
}
