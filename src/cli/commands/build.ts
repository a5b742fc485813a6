/**
 * The main job: compute-id and create-dumpfile (and create-image, with the
 * repository) of a root filesystem under the container-image rules.
 */
import type { Command } from "commander";
import { scanContainerRoot, type ScannedTree } from "../../scan/container-scan.js";
import { applyContainerRules, type Relabeller } from "../../tree/container-rules.js";
import { readTreeFile } from "../../tree/lookup.js";
import { imageDigest, writeImage } from "../../erofs/writer.js";
import { writeDumpfile } from "../../dumpfile/write.js";
import { StdoutBuffer, writeStdout } from "../io.js";
import { globalOptions, UsageError } from "../main.js";
import { Progress } from "../progress.js";
import { loadTreePolicy } from "./selinux-glue.js";

export type SelinuxMode = "auto" | "off";

export function parseSelinuxMode(v: string | undefined): SelinuxMode {
  if (v === undefined || v === "auto") return "auto";
  if (v === "off") return "off";
  throw new UsageError(`--selinux must be auto or off, not ${v}`);
}

/** Scan DIR and apply the container-image rules. */
export async function buildContainerTree(cmd: Command, dir: string, selinux: SelinuxMode): Promise<ScannedTree> {
  const g = globalOptions(cmd);
  const progress = new Progress(`scanning ${dir}`, !g.quiet && process.stderr.isTTY === true);
  try {
    const tree = await scanContainerRoot(dir, { algorithm: "sha256", onProgress: (n) => progress.update(n) });
    let policy: Relabeller | null = null;
    if (selinux === "auto") {
      policy = loadTreePolicy((rel) => readTreeFile(tree.root, rel, (n) => tree.contentOf(n)));
    }
    applyContainerRules(tree.root, { selinux, policy });
    return tree;
  } finally {
    progress.done();
  }
}

export function registerBuild(program: Command): void {
  program
    .command("compute-id")
    .description("print the composefs digest of a root filesystem (what create-image would print); writes nothing")
    .argument("<dir>", "the root filesystem")
    .option("--selinux <mode>", "auto: label from the tree's own policy (or drop labels without one); off: keep labels", "auto")
    .addHelpText("after", "\nExample:\n  cfsctl compute-id /rootfs\n")
    .action(async (dir: string, o: { selinux?: string }, cmd: Command) => {
      const tree = await buildContainerTree(cmd, dir, parseSelinuxMode(o.selinux));
      const { image } = writeImage(tree.root);
      writeStdout(imageDigest(image).toString("hex") + "\n");
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
