/**
 * Repository upkeep and mounting: init, fsck, gc, mount (CLI.md).
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Command } from "commander";
import { COMPOSEFS_FLAG_HAS_ACL, COMPOSEFS_HEADER_SIZE, COMPOSEFS_MAGIC } from "../../erofs/format.js";
import { Repository, type LockMode } from "../../repository/repository.js";
import { measureVerity } from "../../repository/verity.js";
import { CfsError } from "../../util/errors.js";
import { StdoutBuffer, writeStdout } from "../io.js";
import { globalOptions } from "../main.js";
import { Progress } from "../progress.js";

export interface RepositoryCliOptions {
  create?: boolean;
  lock?: LockMode | "none";
}

/** Open the repository the global options name (--repo, --hash, --require-verity, --quiet). */
export function openRepository(cmd: Command, opts: RepositoryCliOptions = {}): Repository {
  const g = globalOptions(cmd);
  let root = cmd;
  while (root.parent) root = root.parent;
  const src = root.getOptionValueSource("hash");
  return Repository.open(g.repo, {
    hash: g.hash,
    hashExplicit: src !== undefined && src !== "default",
    create: opts.create,
    lock: opts.lock,
    requireVerity: g.requireVerity,
    quiet: g.quiet,
  });
}

export function registerRepository(program: Command): void {
  program
    .command("init")
    .description("create a repository (and its meta.json)")
    .addHelpText("after", "\nExample:\n  cfsctl --repo /var/lib/composefs init\n")
    .action((_o: unknown, cmd: Command) => {
      const g = globalOptions(cmd);
      const repo = openRepository(cmd, { create: true });
      try {
        if (!g.quiet) process.stderr.write(`cfsctl: repository ${repo.path} (fsverity-${repo.algorithm}-12)\n`);
      } finally {
        repo.close();
      }
    });

  program
    .command("fsck")
    .description("check that every object matches its name and every image, stream and ref resolves")
    .option("--json", "report as JSON on stdout")
    .addHelpText("after", "\nExample:\n  cfsctl fsck --json\n")
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const g = globalOptions(cmd);
      const repo = openRepository(cmd);
      const progress = new Progress("checking objects", !g.quiet && process.stderr.isTTY === true);
      let report;
      try {
        report = await repo.fsck((n) => progress.update(n, "objects"));
      } finally {
        progress.done();
        repo.close();
      }
      const errors = report.problems.filter((p) => p.severity === "error");
      if (o.json) {
        writeStdout(
          JSON.stringify(
            {
              ok: errors.length === 0,
              repository: report.repository,
              algorithm: `fsverity-${report.algorithm}-12`,
              objects_checked: report.objectsChecked,
              images_checked: report.imagesChecked,
              streams_checked: report.streamsChecked,
              refs_checked: report.refsChecked,
              problems: report.problems,
            },
            null,
            2,
          ) + "\n",
        );
      } else {
        const out = new StdoutBuffer();
        for (const p of report.problems) out.write(`${p.severity}: ${p.path}: ${p.message}\n`);
        out.flush();
        // The summary on success; a failure's one line says it all.
        if (!g.quiet && errors.length === 0) {
          process.stderr.write(
            `cfsctl: checked ${report.objectsChecked} objects, ${report.imagesChecked} images, ` +
              `${report.streamsChecked} streams, ${report.refsChecked} refs\n`,
          );
        }
      }
      if (errors.length > 0) {
        const first = errors[0]!;
        throw new CfsError(
          `fsck: ${errors.length} problem${errors.length === 1 ? "" : "s"} in ${report.repository} (first: ${first.path}: ${first.message})`,
        );
      }
    });

  program
    .command("gc")
    .description("remove the images, streams and objects no ref reaches")
    .option("--dry-run", "only print what would be removed")
    .addHelpText("after", "\nExample:\n  cfsctl gc --dry-run\n")
    .action((o: { dryRun?: boolean }, cmd: Command) => {
      const dryRun = !!o.dryRun;
      const repo = openRepository(cmd, { lock: dryRun ? "shared" : "exclusive" });
      let result;
      try {
        result = repo.gc({ dryRun });
      } finally {
        repo.close();
      }
      const verb = dryRun ? "would remove" : "removed";
      const out = new StdoutBuffer();
      for (const r of result.removed) out.write(`${verb} ${r.path}${r.kind === "object" ? ` (${r.bytes} bytes)` : ""}\n`);
      out.write(
        `${dryRun ? "would free" : "freed"} ${result.bytesFreed} bytes: ${result.objectsRemoved} objects, ` +
          `${result.imagesRemoved} images, ${result.streamsRemoved} streams\n`,
      );
      out.flush();
    });

  program
    .command("mount")
    .description("mount an image with the kernel: EROFS on a loop device, overlayfs with the objects as data-only layer")
    .argument("<image>", "image digest, refs/NAME, or path to an image file")
    .argument("<mountpoint>", "directory to mount on")
    .addHelpText("after", "\nExample:\n  cfsctl mount refs/myimage /mnt\n")
    .action((image: string, mountpoint: string, _o: unknown, cmd: Command) => {
      const g = globalOptions(cmd);
      const repo = openRepository(cmd);
      try {
        mountImage(repo, image, mountpoint, g.requireVerity);
      } finally {
        repo.close();
      }
    });
}

function kernelHas(fsType: string): boolean {
  const has = () => {
    try {
      return fs
        .readFileSync("/proc/filesystems", "utf8")
        .split("\n")
        .some((l) => l.split("\t").pop()?.trim() === fsType);
    } catch {
      return false;
    }
  };
  if (has()) return true;
  spawnSync("modprobe", [fsType], { stdio: "ignore" });
  return has();
}

/** Escape a path for overlayfs's lowerdir= option (`\`, `,` and `:` are special). */
function ovlEscape(p: string): string {
  return p.replace(/([\\,:])/g, "\\$1");
}

function run(cmd: string, args: string[]): { ok: boolean; message: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.error) return { ok: false, message: `${cmd}: ${r.error.message}` };
  return { ok: r.status === 0, message: (r.stderr || r.stdout || `${cmd} exited with ${r.status}`).trim() };
}

/**
 * mount.composefs (FORMAT.md §8) with util-linux: the EROFS image read-only on
 * a private temporary directory (loop device), overlayfs on TARGET with it as
 * lower layer and objects/ as data-only layer (`::`, Linux ≥ 6.5), then the
 * temporary mount is detached (the overlay keeps its reference). With
 * --require-verity the image file must carry kernel fs-verity with the
 * digest it is named by, and the overlay gets verity=require (every object
 * must then have fs-verity matching its metacopy digest).
 */
export function mountImage(repo: Repository, imageArg: string, target: string, requireVerity: boolean): void {
  const image = repo.resolveImage(imageArg);
  let header: Buffer;
  let verity: Buffer | null | "unsupported" = null;
  try {
    const fd = fs.openSync(image.path, "r");
    try {
      header = Buffer.alloc(COMPOSEFS_HEADER_SIZE);
      fs.readSync(fd, header, 0, header.length, 0);
      if (requireVerity) verity = measureVerity(fd, repo.algorithm, `image ${imageArg}`);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    if (e instanceof CfsError) throw e;
    throw new CfsError(`image ${imageArg}: ${(e as Error).message}`);
  }
  if (header.readUInt32LE(0) !== COMPOSEFS_MAGIC) throw new CfsError(`image ${imageArg}: not a composefs image (bad magic)`);
  const hasAcl = (header.readUInt32LE(8) & COMPOSEFS_FLAG_HAS_ACL) !== 0;

  let st: fs.Stats;
  try {
    st = fs.statSync(target);
  } catch {
    throw new CfsError(`mount point ${target} does not exist`);
  }
  if (!st.isDirectory()) throw new CfsError(`mount point ${target} is not a directory`);
  if (requireVerity) {
    if (verity === "unsupported") throw new CfsError("cannot mount with --require-verity: fs-verity is not supported here");
    if (verity === null) throw new CfsError(`cannot mount with --require-verity: image ${imageArg} has no fs-verity`);
    if (image.digest !== null && verity.toString("hex") !== image.digest) {
      throw new CfsError(`image ${imageArg}: the kernel measures fs-verity digest ${verity.toString("hex")}, not the image's name`);
    }
  }
  if (process.getuid?.() !== 0) throw new CfsError("mount needs root (mounting EROFS and overlayfs)");
  if (!kernelHas("erofs")) throw new CfsError("the kernel has no EROFS support (erofs is not in /proc/filesystems)");
  if (!kernelHas("overlay")) throw new CfsError("the kernel has no overlayfs support (overlay is not in /proc/filesystems)");

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), ".composefs."));
  try {
    fs.chmodSync(tmp, 0o700);
    const erofsOpts = hasAcl ? "ro,loop" : "ro,loop,noacl";
    let r = run("mount", ["-t", "erofs", "-o", erofsOpts, image.path, tmp]);
    if (!r.ok && !hasAcl) r = run("mount", ["-t", "erofs", "-o", "ro,loop", image.path, tmp]);
    if (!r.ok) throw new CfsError(`mounting image ${imageArg} (EROFS on a loop device) failed: ${r.message}`);
    try {
      const objects = path.join(repo.path, "objects");
      const opts = `ro,metacopy=on,redirect_dir=on${requireVerity ? ",verity=require" : ""},lowerdir=${ovlEscape(tmp)}::${ovlEscape(objects)}`;
      const o = run("mount", ["-t", "overlay", "composefs", "-o", opts, target]);
      if (!o.ok) throw new CfsError(`mounting overlayfs on ${target} failed (data-only lower layers need Linux 6.5 or later): ${o.message}`);
    } finally {
      // The overlay holds its own reference; the temporary mount goes either way.
      run("umount", ["-l", tmp]);
    }
  } finally {
    try {
      fs.rmdirSync(tmp);
    } catch {
      /* still busy: leave the empty directory */
    }
  }
}
