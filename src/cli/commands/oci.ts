/**
 * `cfsctl import-oci`: the image of a root filesystem from its OCI layers,
 * each layer kept as a split stream; `cfsctl cat`: a stored layer back as
 * the exact uncompressed tar.
 *
 * Nothing is named before everything is verified: objects and split streams
 * are written under temporary names while the layers are read, and are
 * given their names (objects, then streams, then the image) only after
 * every blob digest and diff_id matched.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import type { Command } from "commander";
import { LayerReader, type EntryData, type LayerSink } from "../../oci/layer.js";
import type { TarEntry } from "../../oci/tar.js";
import { LayerMerger } from "../../oci/merge.js";
import { resolveSources } from "../../oci/source.js";
import {
  CONTENT_TYPE_CONFIG,
  CONTENT_TYPE_LAYER,
  SplitStreamWriter,
  openSplitStream,
  type SplitStreamFile,
} from "../../repository/splitstream.js";
import type { Repository } from "../../repository/repository.js";
import { syncFilesystem } from "../../scan/store.js";
import { applyContainerRules, type Relabeller } from "../../tree/container-rules.js";
import { readTreeFile } from "../../tree/lookup.js";
import { writeImage } from "../../erofs/writer.js";
import { fsverityDigestFdSync } from "../../fsverity/digest.js";
import { CfsError } from "../../util/errors.js";
import { writeAllSync, writeStdout } from "../io.js";
import { globalOptions } from "../main.js";
import { Progress } from "../progress.js";
import { checkNameOption, parseSelinuxMode } from "./build.js";
import { openRepository } from "./repository.js";
import { loadTreePolicy } from "./selinux-glue.js";

/** composefs-rs names: streams/oci-layer-sha256:<diff_id>, streams/oci-config-sha256:<digest>. */
export function layerStreamId(diffId: string): string {
  return `oci-layer-${diffId}`;
}
function configStreamId(digest: string): string {
  return `oci-config-${digest}`;
}

interface StagedStream {
  id: string;
  /** The split stream written by this import, or null for one already stored. */
  tmp: string | null;
  digest: Buffer;
}

/**
 * "Is this object stored?" answered from one listing of each objects/XX
 * directory, read the first time it is asked about, instead of an lstat per
 * file. An object stored meanwhile by another writer is only written again
 * under a temporary name: naming it then finds the existing object.
 */
function objectLookup(repo: Repository): (digest: Buffer) => boolean {
  const listings = new Map<string, Set<string>>();
  return (digest) => {
    const name = repo.objectName(digest);
    const xx = name.slice(0, 2);
    let names = listings.get(xx);
    if (!names) {
      names = new Set();
      try {
        for (const n of fs.readdirSync(`${repo.path}/objects/${xx}`)) names.add(n);
      } catch {
        /* no such directory yet: nothing stored there */
      }
      listings.set(xx, names);
    }
    return names.has(name.slice(3));
  };
}

/** A layer stream already in the repository, usable when it and every object it names are present. */
function storedLayer(repo: Repository, diffId: string): { file: SplitStreamFile; digest: Buffer } | null {
  let hex: string | null;
  try {
    hex = repo.hasStream(layerStreamId(diffId));
  } catch {
    return null;
  }
  if (hex === null || !repo.hasObject(hex)) return null;
  try {
    const file = openSplitStream(repo.objectPath(hex), repo.algorithm, `stream ${layerStreamId(diffId)}`);
    if (!file.contentType.equals(CONTENT_TYPE_LAYER) || !file.objectRefs.every((o) => repo.hasObject(o))) return null;
    return { file, digest: Buffer.from(hex, "hex") };
  } catch {
    return null; // unreadable: import the blob again
  }
}

async function importOci(repo: Repository, sources: string[], opts: { name?: string; selinux: "auto" | "off"; progress: Progress }): Promise<string> {
  const source = await resolveSources(sources);
  const objects = `${repo.path}/objects`;
  const reader = new LayerReader({
    dir: objects,
    algorithm: repo.algorithm,
    hasObject: objectLookup(repo),
    tmpName: () => repo.tmpName(),
  });
  const merger = new LayerMerger();
  const staged: StagedStream[] = [];
  const writers: SplitStreamWriter[] = [];
  const diffIds: string[] = [];
  let entries = 0;
  try {
    for (const [i, blob] of source.layers.entries()) {
      merger.beginLayer(blob.label);
      const onEntry = (e: TarEntry, data: EntryData | null) => {
        merger.add(e, data);
        opts.progress.update(++entries, `entries, layer ${i + 1}/${source.layers.length}`);
      };
      // A layer stored before (same diff_id) is read back from its split stream, not from the blob.
      const stored = blob.diffId !== undefined ? storedLayer(repo, blob.diffId) : null;
      if (stored) {
        await reader.readStored(stored.file.chunks(), `${blob.label} (stored)`, onEntry);
        merger.endLayer();
        staged.push({ id: layerStreamId(blob.diffId!), tmp: null, digest: stored.digest });
        diffIds.push(blob.diffId!);
        continue;
      }
      const writer = new SplitStreamWriter(objects, repo.algorithm, CONTENT_TYPE_LAYER, () => repo.tmpName());
      writers.push(writer);
      const sink: LayerSink = { inline: (b) => writer.addInline(b), external: (d, n) => writer.addExternal(d, n) };
      const got = await reader.read(blob, sink, onEntry);
      merger.endLayer();
      if (blob.digest !== undefined && blob.digest.startsWith("sha256:") && got.blob !== blob.digest) {
        throw new CfsError(`${blob.label}: blob digest mismatch: ${got.blob}, descriptor says ${blob.digest}`);
      }
      if (blob.diffId !== undefined && got.diffId !== blob.diffId) {
        throw new CfsError(`${blob.label}: uncompressed digest ${got.diffId} does not match the config's diff_id ${blob.diffId}`);
      }
      const { tmp, digest } = await writer.finish();
      staged.push({ id: layerStreamId(got.diffId), tmp, digest });
      diffIds.push(got.diffId);
    }
    // The image config as a split stream naming its layers (composefs-rs does the same),
    // so that one ref keeps the layers alive. Loose layers get a minimal config.
    const configBytes = source.config?.bytes ?? Buffer.from(JSON.stringify({ rootfs: { type: "layers", diff_ids: diffIds } }));
    const configDigest = source.config?.digest ?? `sha256:${crypto.createHash("sha256").update(configBytes).digest("hex")}`;
    const cw = new SplitStreamWriter(objects, repo.algorithm, CONTENT_TYPE_CONFIG, () => repo.tmpName());
    writers.push(cw);
    staged.forEach((s, i) => cw.addNamedStreamRef(diffIds[i]!, s.digest));
    await cw.addInline(configBytes);
    const cfg = await cw.finish();
    staged.push({ id: configStreamId(configDigest), tmp: cfg.tmp, digest: cfg.digest });
    await reader.settle();
  } catch (e) {
    await reader.settle().catch(() => undefined);
    for (const w of writers) w.abort();
    for (const s of staged) if (s.tmp) fs.rmSync(s.tmp, { force: true });
    reader.discard();
    throw e;
  }
  opts.progress.done();

  // Everything verified: name objects, then streams, then the image.
  try {
    syncFilesystem(repo.path);
    await repo.adoptSyncedObjects([...reader.pending.values()]);
    reader.pending.clear();
    for (const s of staged) if (s.tmp) repo.adoptSyncedObject(s.tmp, s.digest);
  } finally {
    reader.discard();
    for (const s of staged) if (s.tmp) fs.rmSync(s.tmp, { force: true });
  }
  const root = merger.finish();
  let policy: Relabeller | null = null;
  if (opts.selinux === "auto") {
    policy = loadTreePolicy((rel) => readTreeFile(root, rel, (n) => (n.digest ? fs.readFileSync(repo.objectPath(n.digest)) : null)));
  }
  applyContainerRules(root, { selinux: opts.selinux, policy });
  const { image } = writeImage(root, { metacopyAlgorithm: repo.algorithm });
  const config = staged[staged.length - 1]!;
  for (const s of staged.slice(0, -1)) repo.linkStream(s.digest, s.id);
  repo.linkStream(config.digest, config.id, opts.name);
  const digest = repo.writeImage(image, opts.name);
  syncFilesystem(repo.path);
  return digest;
}

/** The stream a LAYER argument names: `sha256:<diff_id>`, a stream digest, a stream id, or `refs/NAME`. */
function resolveLayerStream(repo: Repository, arg: string): { file: string; hex: string; what: string; diffId?: string } {
  if (/^sha256:[0-9a-f]{64}$/.test(arg)) {
    const id = layerStreamId(arg);
    const hex = repo.hasStream(id);
    if (hex === null) throw new CfsError(`no layer with diff_id ${arg} in the repository`);
    return { file: repo.objectPath(hex), hex, what: `layer ${arg}`, diffId: arg };
  }
  if (/^[0-9a-f]+$/.test(arg) && (arg.length === 64 || arg.length === 128)) {
    const hex = repo.digestHex(arg);
    if (!repo.hasObject(hex)) throw new CfsError(`no stream object ${arg} in the repository`);
    return { file: repo.objectPath(hex), hex, what: `stream ${arg}` };
  }
  const s = repo.resolveStream(arg);
  const m = /^oci-layer-(sha256:[0-9a-f]{64})$/.exec(s.streamId);
  return { file: s.path, hex: s.digest, what: `stream ${arg}`, diffId: m ? m[1] : undefined };
}

/** Check that the open object `fd` holds what its name `hex` says (fs-verity digest), before any of it is used. */
function checkObject(repo: Repository, fd: number, hex: string, what: string): void {
  if (fsverityDigestFdSync(fd, repo.algorithm).toString("hex") !== repo.digestHex(hex)) {
    throw new CfsError(`${what}: object ${repo.objectName(hex)} does not match its name (run cfsctl fsck)`);
  }
}

/**
 * Write a stored layer to stdout. Nothing unchecked goes out: the stream's
 * own object and each object it refers to are hashed and compared with
 * their names before their bytes are written (a damaged repository fails
 * before the first damaged byte, not after writing it).
 */
async function catLayer(repo: Repository, arg: string): Promise<void> {
  const { file, hex, what, diffId } = resolveLayerStream(repo, arg);
  let sfd: number;
  try {
    sfd = fs.openSync(file, "r");
  } catch {
    throw new CfsError(`${what}: its object ${repo.objectName(hex)} is missing (run cfsctl fsck)`);
  }
  try {
    checkObject(repo, sfd, hex, what);
  } finally {
    fs.closeSync(sfd);
  }
  const ss = openSplitStream(file, repo.algorithm, what);
  if (!ss.contentType.equals(CONTENT_TYPE_LAYER)) {
    throw new CfsError(`${what}: not a layer (content type ${JSON.stringify(ss.contentType.toString("latin1"))})`);
  }
  const h = crypto.createHash("sha256");
  let total = 0n;
  const out = (b: Buffer) => {
    h.update(b);
    total += BigInt(b.length);
    writeAllSync(1, b);
  };
  const buf = Buffer.allocUnsafe(1 << 20);
  for await (const c of ss.chunks()) {
    if ("inline" in c) {
      out(c.inline);
      continue;
    }
    const obj = repo.objectPath(c.external);
    let fd: number;
    try {
      fd = fs.openSync(obj, "r");
    } catch {
      throw new CfsError(`${what}: object ${repo.objectName(c.external)} is missing (run cfsctl fsck)`);
    }
    try {
      checkObject(repo, fd, typeof c.external === "string" ? c.external : Buffer.from(c.external).toString("hex"), what);
      for (let pos = 0; ; ) {
        const n = fs.readSync(fd, buf, 0, buf.length, pos);
        if (n === 0) break;
        pos += n;
        out(buf.subarray(0, n));
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  if (total !== ss.streamSize) throw new CfsError(`${what}: gave ${total} bytes, the stream records ${ss.streamSize}`);
  const got = `sha256:${h.digest("hex")}`;
  if (diffId !== undefined && got !== diffId) throw new CfsError(`${what}: content sha256 ${got} does not match its diff_id`);
}

export function registerOci(program: Command): void {
  program
    .command("import-oci")
    .description("build the image of an OCI image's root filesystem from its layers, store layers and image, print the image digest")
    .argument("<source...>", "layer tarballs lowest first (plain, gzip or zstd), or one OCI layout DIR[:TAG], oci-archive or docker-archive")
    .option("--name <name>", "also link images/refs/NAME to the image and streams/refs/NAME to its layers")
    .option("--selinux <mode>", "auto: label from the tree's own policy (or drop labels without one); off: keep labels", "auto")
    .addHelpText(
      "after",
      "\nExamples:\n  cfsctl --repo /var/lib/composefs import-oci --name myos base.tar.gz app.tar.zst\n  cfsctl import-oci ./oci-layout:latest\n  podman save --format oci-archive -o img.tar IMAGE && cfsctl import-oci img.tar\n",
    )
    .action(async (sources: string[], o: { name?: string; selinux?: string }, cmd: Command) => {
      const selinux = parseSelinuxMode(o.selinux);
      checkNameOption(o.name);
      const g = globalOptions(cmd);
      const repo = openRepository(cmd, { create: true });
      try {
        const progress = new Progress("importing", !g.quiet && process.stderr.isTTY === true);
        const digest = await importOci(repo, sources, { name: o.name, selinux, progress });
        writeStdout(digest + "\n");
      } finally {
        repo.close();
      }
    });

  program
    .command("cat")
    .description("write a stored layer to stdout: the uncompressed tar, byte for byte as imported")
    .argument("<layer>", "sha256:<diff_id>, a stream digest, a stream id, or refs/NAME")
    .addHelpText("after", "\nExample:\n  cfsctl cat sha256:ca4efb1c73bcadb186781f978712b6d9ac0fffc3b9316c1e10777bea69be10fe | tar -t\n")
    .action(async (layer: string, _o: unknown, cmd: Command) => {
      const repo = openRepository(cmd);
      try {
        await catLayer(repo, layer);
      } finally {
        repo.close();
      }
    });
}
