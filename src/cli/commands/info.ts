/** `cfsctl info …`: the commands of upstream composefs-info. */
import type { Command } from "commander";
import fs from "node:fs";
import { CfsError, describeSystemError } from "../../util/errors.js";
import { fsverityDigestFdSync } from "../../fsverity/digest.js";
import { Escape, escape } from "../../dumpfile/escape.js";
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type Inode } from "../../model/inode.js";
import type { ReadOptions } from "../../erofs/reader.js";
import { StdoutBuffer } from "../io.js";
import { UsageError } from "../main.js";
import { collectPayloads, dumpImages, loadImageArg } from "./read.js";
import { O_PATH, openAnyLength } from "../../util/open-any-length.js";

interface ImageCmdOptions {
  filter?: string[];
  basedir?: string;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/**
 * Options may be given to `info` (as composefs-info takes them before the
 * command) or to the subcommand; the subcommand's win.
 */
function imageOptions(cmd: Command): { read: ReadOptions; basedir?: string } {
  const parent = (cmd.parent?.opts() ?? {}) as ImageCmdOptions;
  const own = cmd.opts() as ImageCmdOptions;
  const filters = [...(parent.filter ?? []), ...(own.filter ?? [])];
  for (const f of filters) {
    if (f.includes("/")) throw new CfsError(`Filter must be a single name: ${f}`);
  }
  const read: ReadOptions = filters.length > 0 ? { filter: filters.map((f) => Buffer.from(f)) } : {};
  const basedir = own.basedir ?? parent.basedir;
  // composefs-info opens a given basedir before any image, whatever the command.
  if (basedir !== undefined) checkBasedir(basedir);
  return { read, basedir };
}

/** The basedir must be a directory that can be opened (O_PATH, as upstream opens it). */
function checkBasedir(basedir: string): void {
  let fd: number;
  try {
    fd = fs.openSync(basedir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | O_PATH);
  } catch (e) {
    throw describeSystemError(e, `Can't open basedir ${basedir}`);
  }
  fs.closeSync(fd);
}

const FILTER_HELP = "only these entries of the root directory (repeatable)";

/** `composefs-info ls`: every path but the root, with `/`, `-> target` or `@ payload`. */
function listTree(root: Inode, out: StdoutBuffer): void {
  // Escaping works byte by byte, so a path escapes as its escaped components.
  const rec = (dir: Inode, prefix: string): void => {
    for (const ent of dir.entries!) {
      const path = prefix + "/" + escape(ent.name, Escape.NoEscapeSpace);
      let line = path;
      // A hardlink entry prints its path only, as upstream's link nodes carry no mode.
      if (!ent.hardlink) {
        const n = ent.inode;
        const type = n.mode & S_IFMT;
        if (type === S_IFDIR) line += "/\t";
        else if (type === S_IFLNK) line += "\t-> " + escape(n.payload ?? EMPTY);
        else if (type === S_IFREG && n.payload !== null) line += "\t@ " + escape(n.payload);
      }
      out.write(line + "\n");
      if (!ent.hardlink && ent.inode.entries !== null) rec(ent.inode, path);
    }
  };
  rec(root, "");
}

const SLASH = Buffer.from("/");
const EMPTY = Buffer.alloc(0);

/** `objects` / `missing-objects`: payloads over all images, sorted by bytes, printed raw. */
function printObjects(cmd: Command, images: string[], read: ReadOptions, basedir: string | undefined): void {
  const payloads = new Set<string>();
  for (const arg of images) collectPayloads(loadImageArg(cmd, arg, read), payloads);
  let list = [...payloads].sort();
  if (basedir !== undefined) {
    const base = Buffer.from(basedir);
    list = list.filter((p) => !existsBelow(base, p.replace(/^\/+/, "")));
  }
  const out = new StdoutBuffer();
  for (const p of list) out.write(p + "\n");
  // Payloads are raw bytes held in latin1 strings.
  out.flush();
}

/**
 * fstatat(basedir, rel) succeeds (following symlinks); an empty rel is the
 * base itself. Opened with O_PATH, so a joined path past PATH_MAX works too.
 */
function existsBelow(base: Buffer, rel: string): boolean {
  const p = rel.length === 0 ? base : Buffer.concat([base, SLASH, Buffer.from(rel, "latin1")]);
  try {
    fs.closeSync(openAnyLength(p, O_PATH));
    return true;
  } catch {
    return false;
  }
}

export function registerInfo(program: Command): Command {
  const info = program
    .command("info")
    .description("inspect composefs images and files (as composefs-info)")
    .option("--basedir <dir>", "object directory for missing-objects")
    .option("--filter <name>", FILTER_HELP, collect)
    .addHelpText("after", "\nExamples:\n  cfsctl info ls image.cfs\n  cfsctl info missing-objects --basedir=/composefs/objects image.cfs\n");

  info
    .command("ls")
    .description("list the paths of each image, with symlink targets and backing files")
    .argument("<image...>")
    .option("--filter <name>", FILTER_HELP, collect)
    .addHelpText("after", "\nExample:\n  cfsctl info ls image.cfs\n")
    .action((images: string[], _o: unknown, cmd: Command) => {
      const { read } = imageOptions(cmd);
      for (const arg of images) {
        const root = loadImageArg(cmd, arg, read);
        const out = new StdoutBuffer();
        listTree(root, out);
        out.flush();
      }
    });

  info
    .command("dump")
    .description("print each image as a composefs-dump(5) file")
    .argument("<image...>")
    .option("--filter <name>", FILTER_HELP, collect)
    .addHelpText("after", "\nExample:\n  cfsctl info dump image.cfs\n")
    .action((images: string[], _o: unknown, cmd: Command) => dumpImages(cmd, images, imageOptions(cmd).read));

  info
    .command("objects")
    .description("print the backing files the images refer to, sorted, once each")
    .argument("<image...>")
    .option("--filter <name>", FILTER_HELP, collect)
    .addHelpText("after", "\nExample:\n  cfsctl info objects image.cfs\n")
    .action((images: string[], _o: unknown, cmd: Command) => printObjects(cmd, images, imageOptions(cmd).read, undefined));

  info
    .command("missing-objects")
    .description("print the backing files the images refer to that are missing below --basedir")
    .argument("<image...>")
    .option("--basedir <dir>", "the object directory")
    .option("--filter <name>", FILTER_HELP, collect)
    .addHelpText("after", "\nExample:\n  cfsctl info missing-objects --basedir=/composefs/objects image.cfs\n")
    .action((images: string[], _o: unknown, cmd: Command) => {
      const { read, basedir } = imageOptions(cmd);
      if (basedir === undefined) throw new UsageError("missing-objects needs --basedir=DIR");
      printObjects(cmd, images, read, basedir);
    });
  info
    .command("measure-file")
    .description("print the fs-verity sha256 digest of each file")
    .argument("<file...>")
    .addHelpText("after", "\nExample:\n  cfsctl info measure-file /usr/bin/bash\n")
    .action((files: string[]) => {
      const out = new StdoutBuffer();
      try {
        for (const f of files) {
          let fd: number;
          try {
            fd = fs.openSync(f, "r");
          } catch (e) {
            throw new CfsError(`failed to measure '${f}': ${describeSystemError(e, "").message.replace(/^: /, "")}`);
          }
          try {
            // A character device such as /dev/zero never ends: refused, not read forever.
            if (fs.fstatSync(fd).isCharacterDevice()) throw new CfsError("not a file, a pipe or a block device");
            out.write(fsverityDigestFdSync(fd, "sha256").toString("hex") + "\n");
          } catch (e) {
            throw new CfsError(`failed to measure '${f}': ${describeSystemError(e, "").message.replace(/^: /, "")}`);
          } finally {
            fs.closeSync(fd);
          }
        }
      } finally {
        out.flush();
      }
    });
  return info;
}
