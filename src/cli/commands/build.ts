/**
 * The main job: compute-id and create-dumpfile (and create-image, with the
 * repository) of a root filesystem under the container-image rules.
 */
import path from "node:path";
import type { Command } from "commander";
import type { VerityAlgorithm } from "../../fsverity/digest.js";
import { scanContainerRoot, type ScannedTree } from "../../scan/container-scan.js";
import { applyContainerRules, type Relabeller } from "../../tree/container-rules.js";
import { readTreeFile } from "../../tree/lookup.js";
import { writeImage, writeImageTo } from "../../erofs/writer.js";
import { FsVerityHasher } from "../../fsverity/digest.js";
import { writeDumpfile } from "../../dumpfile/write.js";
import { StdoutBuffer, writeStdout } from "../io.js";
import { globalOptions, UsageError } from "../main.js";
import { validateRefName } from "../../repository/ref-name.js";
import { Progress } from "../progress.js";
import { loadTreePolicy } from "./selinux-glue.js";

export type SelinuxMode = "auto" | "off";

export function parseSelinuxMode(v: string | undefined): SelinuxMode {
  if (v === undefined || v === "auto") return "auto";
  if (v === "off") return "off";
  throw new UsageError(`--selinux must be auto or off, not ${v}`);
}

/**
 * Scan DIR and apply the container-image rules. With `store` (an objects/
 * directory) missing objects are copied to temporary names while hashing.
 */
export async function buildContainerTree(
  cmd: Command,
  dir: string,
  selinux: SelinuxMode,
  opts: { algorithm?: VerityAlgorithm; store?: string } = {},
): Promise<ScannedTree> {
  const g = globalOptions(cmd);
  const progress = new Progress(`scanning ${dir}`, !g.quiet && process.stderr.isTTY === true);
  try {
    const tree = await scanContainerRoot(dir, {
      algorithm: opts.algorithm ?? "sha256",
      store: opts.store,
      onProgress: (n) => progress.update(n),
    });
    let policy: Relabeller | null = null;
    if (selinux === "auto") {
      policy = loadTreePolicy((rel) => readTreeFile(tree.root, rel, (n, resolved) => tree.contentOf(n, resolved)));
    }
    applyContainerRules(tree.root, { selinux, policy });
    return tree;
  } finally {
    progress.done();
  }
}

/** --name, checked before anything is written: a usage error, not a failure after the work. */
export function checkNameOption(name: string | undefined): void {
  if (name === undefined) return;
  try {
    validateRefName(name);
  } catch (e) {
    throw new UsageError(`--name: ${(e as Error).message}`);
  }
}

export function registerBuild(program: Command): void {
  program
    .command("create-image")
    .description("scan a root filesystem, store its files in the repository, write the image, print its digest")
    .argument("<dir>", "the root filesystem")
    .option("--name <name>", "also link images/refs/NAME to the image")
    .option("--selinux <mode>", "auto: label from the tree's own policy (or drop labels without one); off: keep labels", "auto")
    .addHelpText("after", "\nExample:\n  cfsctl --repo /var/lib/composefs create-image --name myos /rootfs\n")
    .action(async (dir: string, o: { name?: string; selinux?: string }, cmd: Command) => {
      const selinux = parseSelinuxMode(o.selinux);
      checkNameOption(o.name);
      // Loaded here: compute-id and create-dumpfile never open a repository.
      const [{ openRepository }, { commitObjects, syncFilesystem }] = await Promise.all([import("./repository.js"), import("../../scan/store.js")]);
      const repo = openRepository(cmd, { create: true });
      try {
        const objects = path.join(repo.path, "objects");
        const tree = await buildContainerTree(cmd, dir, selinux, { algorithm: repo.algorithm, store: objects });
        await commitObjects(objects, tree.external, (items) => repo.adoptSyncedObjects(items));
        const { image } = writeImage(tree.root, { metacopyAlgorithm: repo.algorithm });
        const digest = repo.writeImage(image, o.name);
        syncFilesystem(repo.path);
        writeStdout(digest + "\n");
      } finally {
        repo.close();
      }
    });
  program
    .command("compute-id")
    .description("print the composefs digest of a root filesystem (what create-image would print); writes nothing")
    .argument("<dir>", "the root filesystem")
    .option("--selinux <mode>", "auto: label from the tree's own policy (or drop labels without one); off: keep labels", "auto")
    .addHelpText("after", "\nExample:\n  cfsctl compute-id /rootfs\n")
    .action(async (dir: string, o: { selinux?: string }, cmd: Command) => {
      const tree = await buildContainerTree(cmd, dir, parseSelinuxMode(o.selinux));
      // Hashed as it is produced: the image is never whole in memory.
      const hasher = new FsVerityHasher("sha256");
      writeImageTo(tree.root, {}, (chunk) => hasher.update(chunk));
      writeStdout(hasher.digest().toString("hex") + "\n");
    });
  program
    .command("create-dumpfile")
    .description("print the composefs-dump(5) text of the tree create-image would build; writes nothing")
    .argument("<dir>", "the root filesystem")
    .option("--selinux <mode>", "auto or off (see compute-id)", "auto")
    .addHelpText("after", "\nExample:\n  cfsctl create-dumpfile /rootfs > rootfs.dump\n")
    .action(async (dir: string, o: { selinux?: string }, cmd: Command) => {
      const tree = await buildContainerTree(cmd, dir, parseSelinuxMode(o.selinux));
      const out = new StdoutBuffer();
      writeDumpfile(tree.root, (s) => out.write(s));
      out.flush();
    });
}
