/**
 * Where layers come from: layer tarballs given in order, an OCI image layout
 * directory (`DIR` or `DIR:TAG`), or one `oci-archive` / `docker-archive`
 * tarball. Every JSON document read is checked against the digest its
 * descriptor names; layer blobs are checked while they are read (import.ts).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";
import { CfsError, describeSystemError } from "../util/errors.js";
import { TarReader } from "./tar.js";

export interface LayerBlob {
  /** For messages: the file, or the blob inside a layout. */
  label: string;
  open(): Readable;
  /** `sha256:<hex>` of the stored (maybe compressed) bytes, when a descriptor names it. */
  digest?: string;
  size?: number;
  /** `sha256:<hex>` of the uncompressed tar, from the image config. */
  diffId?: string;
}

export interface ImageSource {
  kind: "layers" | "oci-layout" | "oci-archive" | "docker-archive";
  layers: LayerBlob[];
  /** The image configuration as stored, when the source has one. */
  config?: { bytes: Buffer; digest: string };
}

const MAX_JSON = 16 << 20;
const REF_NAME = "org.opencontainers.image.ref.name";
const INDEX_TYPES = new Set(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]);
const LAYER_TYPES = new Set([
  "application/vnd.oci.image.layer.v1.tar",
  "application/vnd.oci.image.layer.v1.tar+gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd",
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.diff.tar",
  "application/vnd.docker.image.rootfs.diff.tar.gzip",
  "application/vnd.docker.image.rootfs.diff.tar.zstd",
]);

/** What a layout or archive holds: small files read whole, blobs opened as streams. */
interface Store {
  where: string;
  has(rel: string): boolean;
  read(rel: string, max: number): Buffer;
  open(rel: string): Readable;
  size(rel: string): number;
}

function dirStore(dir: string): Store {
  const abs = (rel: string) => path.join(dir, rel);
  return {
    where: dir,
    has: (rel) => {
      try {
        return fs.statSync(abs(rel)).isFile();
      } catch {
        return false;
      }
    },
    size: (rel) => fs.statSync(abs(rel)).size,
    read: (rel, max) => {
      let st: fs.Stats;
      try {
        st = fs.statSync(abs(rel));
      } catch (e) {
        throw describeSystemError(e, `${dir}: ${rel}`);
      }
      if (!st.isFile()) throw new CfsError(`${dir}: ${rel} is not a file`);
      if (st.size > max) throw new CfsError(`${dir}: ${rel} is too large (${st.size} bytes)`);
      return fs.readFileSync(abs(rel));
    },
    open: (rel) => fs.createReadStream(abs(rel), { highWaterMark: 1 << 20 }),
  };
}

interface Member {
  offset: number;
  size: number;
  link?: string;
}

function normalMember(name: string): string {
  return path.posix.normalize(name.replace(/^(\.\/)+/, "")).replace(/\/+$/, "");
}

/** An uncompressed tar archive: members are located once, then read in place. */
async function archiveStore(file: string): Promise<Store> {
  const members = new Map<string, Member>();
  const tar = new TarReader(fs.createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>);
  for (;;) {
    const e = await tar.next();
    if (!e) break;
    const name = normalMember(e.path.toString("utf8"));
    if (e.type === "0" || e.type === "7") {
      if (e.sparse) throw new CfsError(`${file}: ${name}: sparse member in an image archive`);
      members.set(name, { offset: tar.offset, size: e.dataSize });
    } else if (e.type === "1") {
      members.set(name, { offset: 0, size: 0, link: normalMember(e.linkname.toString("utf8")) });
    } else if (e.type === "2") {
      // docker save links a layer seen twice: the target is relative to the link's directory
      members.set(name, { offset: 0, size: 0, link: normalMember(path.posix.join(path.posix.dirname(name), e.linkname.toString("utf8"))) });
    }
  }
  const resolve = (rel: string): Member | null => {
    let m = members.get(normalMember(rel));
    for (let i = 0; m?.link !== undefined && i < 8; i++) m = members.get(m.link);
    return m && m.link === undefined ? m : null;
  };
  const need = (rel: string) => {
    const m = resolve(rel);
    if (!m) throw new CfsError(`${file}: the archive has no ${rel}`);
    return m;
  };
  return {
    where: file,
    has: (rel) => resolve(rel) !== null,
    size: (rel) => need(rel).size,
    read: (rel, max) => {
      const m = need(rel);
      if (m.size > max) throw new CfsError(`${file}: ${rel} is too large (${m.size} bytes)`);
      const b = Buffer.alloc(m.size);
      const fd = fs.openSync(file, "r");
      try {
        let off = 0;
        while (off < b.length) {
          const n = fs.readSync(fd, b, off, b.length - off, m.offset + off);
          if (n === 0) throw new CfsError(`${file}: truncated`);
          off += n;
        }
      } finally {
        fs.closeSync(fd);
      }
      return b;
    },
    open: (rel) => {
      const m = need(rel);
      if (m.size === 0) return fs.createReadStream(file, { start: 1, end: 0 });
      return fs.createReadStream(file, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 });
    },
  };
}

function sha256(b: Buffer): string {
  return `sha256:${crypto.createHash("sha256").update(b).digest("hex")}`;
}

/** `blobs/ALG/HEX` of a digest, refusing anything that is not a plain digest. */
function blobPath(digest: unknown, where: string): string {
  if (typeof digest !== "string") throw new CfsError(`${where}: descriptor without a digest`);
  const m = /^(sha256|sha512):([0-9a-f]+)$/.exec(digest);
  if (!m || m[2]!.length !== (m[1] === "sha256" ? 64 : 128)) throw new CfsError(`${where}: unsupported or malformed digest ${JSON.stringify(digest).slice(0, 100)}`);
  return `blobs/${m[1]}/${m[2]}`;
}

function checkDigest(bytes: Buffer, digest: string, what: string): void {
  const alg = digest.startsWith("sha512:") ? "sha512" : "sha256";
  const got = `${alg}:${crypto.createHash(alg).update(bytes).digest("hex")}`;
  if (got !== digest) throw new CfsError(`${what}: digest mismatch: ${got}, descriptor says ${digest}`);
}

function parseJson(bytes: Buffer, what: string): any {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new CfsError(`${what}: not valid JSON`);
  }
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string };
}

function readBlob(store: Store, d: Descriptor, what: string): Buffer {
  const rel = blobPath(d.digest, `${store.where}: ${what}`);
  const bytes = store.read(rel, MAX_JSON);
  if (typeof d.size === "number" && bytes.length !== d.size) throw new CfsError(`${store.where}: ${what} ${d.digest}: size ${bytes.length}, descriptor says ${d.size}`);
  checkDigest(bytes, d.digest, `${store.where}: ${what}`);
  return bytes;
}

function descriptors(v: unknown, what: string): Descriptor[] {
  if (!Array.isArray(v)) throw new CfsError(`${what}: no descriptor list`);
  for (const d of v) {
    if (!d || typeof d !== "object" || typeof (d as Descriptor).digest !== "string") throw new CfsError(`${what}: malformed descriptor`);
  }
  return v as Descriptor[];
}

const GOARCH: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };

function configDiffIds(config: any, what: string, layers: number): string[] {
  const ids = config?.rootfs?.diff_ids;
  if (!Array.isArray(ids) || ids.some((x: unknown) => typeof x !== "string" || !/^sha256:[0-9a-f]{64}$/.test(x as string))) {
    throw new CfsError(`${what}: the image config has no valid rootfs.diff_ids`);
  }
  if (ids.length !== layers) throw new CfsError(`${what}: the config lists ${ids.length} diff_ids for ${layers} layers`);
  return ids as string[];
}

function fromLayout(store: Store, tag: string | undefined, kind: "oci-layout" | "oci-archive"): ImageSource {
  const where = store.where;
  const index = parseJson(store.read("index.json", MAX_JSON), `${where}: index.json`);
  let manifests = descriptors(index?.manifests, `${where}: index.json`);
  let chosen: Descriptor | undefined;
  if (tag !== undefined) {
    chosen = manifests.find((m) => m.annotations?.[REF_NAME] === tag);
    if (!chosen) {
      const tags = manifests.map((m) => m.annotations?.[REF_NAME]).filter((t) => t !== undefined);
      throw new CfsError(`${where}: no manifest tagged ${JSON.stringify(tag)} (tags: ${tags.join(", ") || "none"})`);
    }
  } else if (manifests.length === 1) {
    chosen = manifests[0];
  } else if (manifests.length === 0) {
    throw new CfsError(`${where}: index.json lists no manifest`);
  } else {
    const tags = manifests.map((m) => m.annotations?.[REF_NAME] ?? m.digest);
    throw new CfsError(`${where}: ${manifests.length} manifests: name one as ${where}:TAG (tags: ${tags.join(", ")})`);
  }
  // An image index (multi-platform): the manifest for this machine's platform.
  for (let depth = 0; chosen && INDEX_TYPES.has(chosen.mediaType ?? ""); depth++) {
    if (depth > 4) throw new CfsError(`${where}: image indexes nested too deep`);
    const sub = parseJson(readBlob(store, chosen, "image index"), `${where}: image index`);
    manifests = descriptors(sub?.manifests, `${where}: image index ${chosen.digest}`);
    const arch = GOARCH[process.arch] ?? process.arch;
    chosen = manifests.length === 1 ? manifests[0] : manifests.find((m) => m.platform?.os === "linux" && m.platform?.architecture === arch);
    if (!chosen) throw new CfsError(`${where}: the image index has no manifest for linux/${arch}`);
  }
  const manifest = parseJson(readBlob(store, chosen!, "manifest"), `${where}: manifest ${chosen!.digest}`);
  const mwhat = `${where}: manifest ${chosen!.digest}`;
  if (!manifest?.config || typeof manifest.config.digest !== "string") throw new CfsError(`${mwhat}: no config descriptor`);
  const configBytes = readBlob(store, manifest.config as Descriptor, "config");
  const config = parseJson(configBytes, `${where}: config`);
  const layers = descriptors(manifest.layers, mwhat);
  for (const l of layers) {
    if (!LAYER_TYPES.has(l.mediaType ?? "")) throw new CfsError(`${mwhat}: layer ${l.digest} has unsupported media type ${JSON.stringify(l.mediaType)}`);
  }
  const diffIds = configDiffIds(config, `${where}: config`, layers.length);
  return {
    kind,
    config: { bytes: configBytes, digest: (manifest.config as Descriptor).digest },
    layers: layers.map((l, i) => {
      const rel = blobPath(l.digest, mwhat);
      // A missing blob is an error only when it must be read (a layer stored before is not).
      const open = () => {
        if (!store.has(rel)) throw new CfsError(`layer blob ${l.digest} is missing`);
        return store.open(rel);
      };
      return { label: `${where}: layer ${i + 1} (${l.digest})`, open, digest: l.digest, size: l.size, diffId: diffIds[i] };
    }),
  };
}

function fromDockerArchive(store: Store, tag: string | undefined): ImageSource {
  const where = store.where;
  const list = parseJson(store.read("manifest.json", MAX_JSON), `${where}: manifest.json`);
  if (!Array.isArray(list) || list.length === 0) throw new CfsError(`${where}: manifest.json lists no image`);
  let entry: any;
  if (tag !== undefined) {
    entry = list.find((m: any) => Array.isArray(m?.RepoTags) && m.RepoTags.some((t: string) => t === tag || t.endsWith(`/${tag}`) || t.split(":")[0] === tag));
    if (!entry) throw new CfsError(`${where}: no image tagged ${JSON.stringify(tag)}`);
  } else if (list.length === 1) entry = list[0];
  else {
    const tags = list.flatMap((m: any) => (Array.isArray(m?.RepoTags) ? m.RepoTags : []));
    throw new CfsError(`${where}: ${list.length} images: name one as ${where}:TAG (tags: ${tags.join(", ")})`);
  }
  if (typeof entry?.Config !== "string" || !Array.isArray(entry?.Layers) || entry.Layers.some((l: unknown) => typeof l !== "string")) {
    throw new CfsError(`${where}: malformed manifest.json`);
  }
  const configBytes = store.read(entry.Config, MAX_JSON);
  // The config is named by its digest (`<hex>.json` or `blobs/sha256/<hex>`): check it when it is.
  const m = /(?:^|\/)([0-9a-f]{64})(?:\.json)?$/.exec(entry.Config);
  const configDigest = sha256(configBytes);
  if (m && `sha256:${m[1]}` !== configDigest) throw new CfsError(`${where}: config ${entry.Config}: digest mismatch (${configDigest})`);
  const diffIds = configDiffIds(parseJson(configBytes, `${where}: config`), `${where}: config`, entry.Layers.length);
  return {
    kind: "docker-archive",
    config: { bytes: configBytes, digest: configDigest },
    layers: (entry.Layers as string[]).map((rel, i) => {
      if (!store.has(rel)) throw new CfsError(`${where}: the archive has no ${rel}`);
      return { label: `${where}: ${rel}`, open: () => store.open(rel), diffId: diffIds[i] };
    }),
  };
}

function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch {
    return null;
  }
}

/** The first member's name of an uncompressed tar, or null when the file is not one. */
function firstMember(file: string): string | null {
  const fd = fs.openSync(file, "r");
  try {
    const h = Buffer.alloc(512);
    if (fs.readSync(fd, h, 0, 512, 0) < 512) return null;
    if (h.toString("latin1", 257, 262) !== "ustar") return null;
    const z = h.indexOf(0);
    return normalMember(h.toString("utf8", 0, z < 0 || z > 100 ? 100 : z));
  } finally {
    fs.closeSync(fd);
  }
}

// What an image archive starts with: an OCI layout's files, docker save's manifest, or a
// blob named by its digest (`<hex>.json` config, `<hex>.tar` layer as skopeo and
// podman write it, `<hex>/layer.tar` as old docker wrote it).
const ARCHIVE_FIRST = /^(oci-layout|index\.json|manifest\.json|repositories|blobs(\/.*)?|[0-9a-f]{64}(\.json|\.tar|\/.*)?)$/;

function layerFile(file: string): LayerBlob {
  return { label: file, open: () => fs.createReadStream(file, { highWaterMark: 1 << 20 }) };
}

/** Resolve the SOURCE arguments of import-oci. */
export async function resolveSources(args: string[]): Promise<ImageSource> {
  const one = args.length === 1 ? args[0]! : null;
  if (one !== null) {
    let target = one;
    let tag: string | undefined;
    let st = statOrNull(one);
    // DIR:TAG or ARCHIVE:TAG; a tag may hold colons itself (docker's repo:tag)
    for (let colon = one.indexOf(":"); !st && colon > 0; colon = one.indexOf(":", colon + 1)) {
      const s = statOrNull(one.slice(0, colon));
      if (s) {
        target = one.slice(0, colon);
        tag = one.slice(colon + 1);
        st = s;
      }
    }
    if (!st) throw new CfsError(`${one}: No such file or directory`);
    if (st.isDirectory()) {
      if (!fs.existsSync(path.join(target, "index.json"))) throw new CfsError(`${target}: a directory, but not an OCI image layout (no index.json)`);
      return fromLayout(dirStore(target), tag, "oci-layout");
    }
    if (!st.isFile()) throw new CfsError(`${target}: not a file or directory`);
    const first = firstMember(target);
    if (first !== null && ARCHIVE_FIRST.test(first)) {
      const store = await archiveStore(target);
      if (store.has("index.json") && store.has("oci-layout")) return fromLayout(store, tag, "oci-archive");
      if (store.has("manifest.json")) return fromDockerArchive(store, tag);
      if (tag !== undefined) throw new CfsError(`${target}: not an oci-archive or docker-archive (no index.json or manifest.json), so it cannot take a tag`);
    } else if (tag !== undefined) {
      throw new CfsError(`${one}: No such file or directory`);
    }
    return { kind: "layers", layers: [layerFile(target)] };
  }
  for (const a of args) {
    const st = statOrNull(a);
    if (!st) throw new CfsError(`${a}: No such file or directory`);
    if (st.isDirectory()) throw new CfsError(`${a}: is a directory: an OCI layout is given alone, as the only SOURCE`);
    const first = firstMember(a);
    if (first !== null && (first === "oci-layout" || first === "index.json" || first === "manifest.json" || first === "repositories")) {
      throw new CfsError(`${a}: an image archive: give it alone, as the only SOURCE`);
    }
  }
  return { kind: "layers", layers: args.map(layerFile) };
}
