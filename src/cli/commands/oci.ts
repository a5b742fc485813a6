/** `cfsctl import-oci`: the image of a root filesystem from its OCI layers. */
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { LayerMerger } from "../../oci/import.js";
import { TarReader } from "../../oci/tar.js";
import { openLayer } from "../../oci/import.js";
import { commitObjects, syncFilesystem } from "../../scan/store.js";
import { applyContainerRules, type Relabeller } from "../../tree/container-rules.js";
import { readTreeFile } from "../../tree/lookup.js";
import { writeImage } from "../../erofs/writer.js";
import { CfsError } from "../../util/errors.js";
import { writeStdout } from "../io.js";
import { parseSelinuxMode } from "./build.js";
import { openRepository } from "./repository.js";
import { loadTreePolicy } from "./selinux-glue.js";

const ARCHIVE_MARKERS = ["oci-layout", "index.json", "manifest.json", "repositories"];

/** Refuse image archives and layouts: only layer tarballs are read for now. */
async function checkIsLayer(source: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.statSync(source);
  } catch {
    throw new CfsError(`${source}: No such file or directory`);
  }
  if (st.isDirectory()) throw new CfsError(`${source}: OCI image layout directories are not supported yet: give the layer tarballs, lowest first`);
  const first = await new TarReader(openLayer(source)).next();
  const name = first?.path.toString("utf8").replace(/^\.\//, "") ?? "";
  if (ARCHIVE_MARKERS.includes(name) || name.startsWith("blobs/")) {
    throw new CfsError(`${source}: an image archive (oci-archive or docker-archive), not a layer; archives are not supported yet: give the layer tarballs, lowest first`);
  }
}

export function registerOci(program: Command): void {
  program
    .command("import-oci")
    .description("build the image of the layers' root filesystem (layer tarballs, lowest first), store it, print its digest")
    .argument("<source...>", "layer tarballs (plain, gzip or zstd), lowest first")
    .option("--name <name>", "also link images/refs/NAME to the image")
    .option("--selinux <mode>", "auto: label from the tree's own policy (or drop labels without one); off: keep labels", "auto")
    .addHelpText("after", "\nExample:\n  cfsctl --repo /var/lib/composefs import-oci --name myos base.tar.gz app.tar.zst\n")
    .action(async (sources: string[], o: { name?: string; selinux?: string }, cmd: Command) => {
      const selinux = parseSelinuxMode(o.selinux);
      for (const s of sources) await checkIsLayer(s);
      const repo = openRepository(cmd, { create: true });
      try {
        const objects = path.join(repo.path, "objects");
        const merger = new LayerMerger(objects, repo.algorithm, (d) => repo.hasObject(d));
        try {
          for (const s of sources) await merger.addLayer(s);
        } catch (e) {
          merger.discard();
          throw e;
        }
        const root = merger.finish();
        commitObjects(objects, merger.external);
        let policy: Relabeller | null = null;
        if (selinux === "auto") {
          policy = loadTreePolicy((rel) => readTreeFile(root, rel, (n) => (n.digest ? fs.readFileSync(repo.objectPath(n.digest)) : null)));
        }
        applyContainerRules(root, { selinux, policy });
        const { image } = writeImage(root, { metacopyAlgorithm: repo.algorithm });
        const digest = repo.writeImage(image, o.name);
        syncFilesystem(repo.path);
        writeStdout(digest + "\n");
      } finally {
        repo.close();
      }
    });
}
