/**
 * The object repository, on disk as composefs-rs lays it out
 * (crates/composefs/src/repository.rs, doc/repository.md; FORMAT.md §9.5):
 *
 *   REPO/meta.json              {"version":1,"algorithm":"fsverity-sha256-12"}
 *   REPO/objects/XX/YYYY…       content named by its fs-verity digest
 *   REPO/images/<hex>        -> ../objects/XX/YYYY…
 *   REPO/images/refs/<name>  -> ../<hex> (one more ../ per '/' in name)
 *   REPO/streams/<id>        -> ../objects/XX/YYYY…
 *   REPO/streams/refs/<name> -> ../<id>
 *
 * Nothing appears under its final name before it is complete: objects are
 * written to a temporary file in their own objects/XX/ directory, fsynced and
 * hard-linked to their name (so an existing object is never replaced), and
 * links are made as a temporary symlink renamed over the final name.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { digestLength, fsverityDigest, fsverityDigestFdSync, verityAlgorithmId, type VerityAlgorithm } from "../fsverity/digest.js";
import { openSplitStream } from "./splitstream.js";
import { CfsError, describeSystemError } from "../util/errors.js";
import { checkObjects } from "./fsck-objects.js";
import { collectImageObjects } from "./image-objects.js";
import { lockRepository, type LockMode, type RepoLock } from "./lock.js";
import { enableVerity, VERITY_UNSUPPORTED_WARNING } from "./verity.js";
import { nameObjectsInThreads, type NamingResult } from "../util/name-objects.js";
import { makeDirs } from "../util/make-dirs.js";
import { TMP_PREFIX, validateRefName } from "./ref-name.js";
import { onInterrupt, removeByPrefix } from "../util/interrupt.js";
import { removeQuietly } from "../util/remove-quietly.js";

export type { LockMode } from "./lock.js";

export const META_FILE = "meta.json";
export const REPO_FORMAT_VERSION = 1;
export { TMP_PREFIX, validateRefName } from "./ref-name.js";

export interface OpenOptions {
  /** Algorithm for a new repository (default sha256). */
  hash?: VerityAlgorithm;
  /** The user gave --hash: a conflict with an existing repository is an error. */
  hashExplicit?: boolean;
  /** Create the repository (directories and meta.json) when it does not exist. */
  create?: boolean;
  /** Fail when fs-verity cannot be enabled on a stored object. */
  requireVerity?: boolean;
  /** No warnings on stderr. */
  quiet?: boolean;
  /** Lock to hold while open (default shared; gc takes exclusive). */
  lock?: LockMode | "none";
}

export interface ResolvedImage {
  /** File to read or mount. */
  path: string;
  /** The image digest when it came from the repository, else null. */
  digest: string | null;
  source: "digest" | "ref" | "path";
}

export interface FsckProblem {
  severity: "error" | "warning";
  /** Repository-relative path of what is wrong. */
  path: string;
  message: string;
}

export interface FsckReport {
  repository: string;
  algorithm: VerityAlgorithm;
  objectsChecked: number;
  imagesChecked: number;
  streamsChecked: number;
  refsChecked: number;
  problems: FsckProblem[];
}

export interface GcRemoval {
  kind: "object" | "image" | "stream" | "temporary";
  /** Repository-relative path. */
  path: string;
  bytes: number;
}

export interface GcResult {
  dryRun: boolean;
  removed: GcRemoval[];
  objectsRemoved: number;
  imagesRemoved: number;
  streamsRemoved: number;
  bytesFreed: number;
}

let verityWarned = false;

/** $CFSCTL_REPO, else /sysroot/composefs as root, else ~/.var/lib/composefs (CLI.md). */
export function defaultRepoPath(): string {
  const env = process.env.CFSCTL_REPO;
  if (env) return env;
  if (process.getuid?.() === 0) return "/sysroot/composefs";
  // Never a repository below the working directory by accident: an empty or
  // relative HOME (or none at all) is an error, not a place.
  let home: string;
  try {
    home = os.homedir();
  } catch {
    home = "";
  }
  if (!path.isAbsolute(home)) throw new CfsError("no repository given and no home directory for the default one: use --repo or CFSCTL_REPO");
  return path.join(home, ".var", "lib", "composefs");
}

export function algorithmId(alg: VerityAlgorithm): string {
  return `fsverity-${alg}-12`;
}

function parseAlgorithmId(id: unknown, where: string): VerityAlgorithm {
  if (id === "fsverity-sha256-12") return "sha256";
  if (id === "fsverity-sha512-12") return "sha512";
  throw new CfsError(`${where}: unsupported algorithm ${JSON.stringify(id)}`);
}

/** Temporary names: pid, one random part per process, a counter (no random call per file). */
const TMP_SALT = crypto.randomBytes(4).toString("hex");
let tmpCounter = 0;
function tmpName(): string {
  return `${TMP_PREFIX}${process.pid}-${TMP_SALT}-${(tmpCounter++).toString(36)}`;
}

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw describeSystemError(e, `stat ${p}`);
  }
}

function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP") return null;
    throw describeSystemError(e, `stat ${p}`);
  }
}

function readdirOrEmpty(p: string): fs.Dirent[] {
  try {
    return fs.readdirSync(p, { withFileTypes: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return [];
    throw describeSystemError(e, `read directory ${p}`);
  }
}

function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
}

/** A stream id: one path component, not `refs`, not hidden. */
export function validateStreamId(id: string): void {
  if (id === "" || id === "refs" || id.includes("/") || id.includes("\0") || id.startsWith(".")) {
    throw new CfsError(`invalid stream id ${JSON.stringify(id)}`);
  }
}

export class Repository {
  /** Set once enabling fs-verity failed as unsupported: adoptSyncedObject skips the attempt after that. */
  private verityKnownUnsupported = false;
  /** objects/XX directories known to exist (made or seen by adoptSyncedObject). */
  private readonly madeDirs = new Set<string>();
  readonly path: string;
  readonly algorithm: VerityAlgorithm;
  /** false: an old repository without meta.json (algorithm inferred). */
  readonly hasMeta: boolean;
  private readonly requireVerity: boolean;
  private readonly quiet: boolean;
  private lock: RepoLock | null;

  private constructor(p: string, alg: VerityAlgorithm, hasMeta: boolean, opts: OpenOptions, lock: RepoLock | null, cancelCleanup: () => void) {
    this.cancelCleanup = cancelCleanup;
    this.path = p;
    this.algorithm = alg;
    this.hasMeta = hasMeta;
    this.requireVerity = !!opts.requireVerity;
    this.quiet = !!opts.quiet;
    this.lock = lock;
  }

  /** Hex length of a digest of this repository. */
  get hexLength(): number {
    return digestLength(this.algorithm) * 2;
  }

  /**
   * Open the repository at `repoPath` (undefined: defaultRepoPath()). With
   * `create`, make it (and meta.json) when missing. The algorithm is the one
   * in meta.json; without meta.json, the one the object names show; for an
   * empty or new repository, `hash`.
   */
  static open(repoPath: string | undefined, opts: OpenOptions = {}): Repository {
    const p = path.resolve(repoPath ?? defaultRepoPath());
    const st = statOrNull(p);
    if (!st) {
      if (!opts.create) throw new CfsError(`repository ${p} does not exist (create it with \`cfsctl init\`)`);
    } else if (!st.isDirectory()) {
      throw new CfsError(`repository ${p}: not a directory`);
    }
    if (opts.create) {
      for (const d of ["", "objects", "images/refs", "streams/refs"]) {
        try {
          makeDirs(path.join(p, d), 0o755);
        } catch (e) {
          throw describeSystemError(e, `create ${path.join(p, d)}`);
        }
      }
    }
    const mode = opts.lock ?? "shared";
    const lock =
      mode === "none"
        ? null
        : lockRepository(p, mode, () => {
            if (!opts.quiet) process.stderr.write(`cfsctl: waiting for the lock of repository ${p}\n`);
          });
    // A writer (create): from here until close(), an interrupted run removes
    // its temporary files (every one is named `.tmp-PID-…`), meta.json's
    // included. Not before the lock is taken: a run waiting for it dies of
    // the signal at once. Readers and gc make no temporary file, and keep
    // the default action of a signal (see util/interrupt.ts).
    const cancelCleanup = opts.create
      ? onInterrupt(() => {
          const mine = `${TMP_PREFIX}${process.pid}-`;
          removeByPrefix(p, mine, 0);
          removeByPrefix(path.join(p, "objects"), mine, 1);
          for (const category of ["images", "streams"]) removeByPrefix(path.join(p, category), mine, 8);
        })
      : () => {};
    try {
      const { algorithm, hasMeta } = Repository.decideAlgorithm(p, opts);
      if (opts.create && !hasMeta) {
        Repository.writeMeta(p, algorithm);
        return new Repository(p, algorithm, true, opts, lock, cancelCleanup);
      }
      return new Repository(p, algorithm, hasMeta, opts, lock, cancelCleanup);
    } catch (e) {
      cancelCleanup();
      lock?.release();
      throw e;
    }
  }

  /** `cfsctl init`: create the repository, or check an existing one; meta.json is written when missing. */
  static init(repoPath: string | undefined, opts: OpenOptions = {}): { repo: Repository; created: boolean } {
    const p = path.resolve(repoPath ?? defaultRepoPath());
    const created = !fs.existsSync(path.join(p, META_FILE));
    const repo = Repository.open(p, { ...opts, create: true });
    return { repo, created };
  }

  private static decideAlgorithm(p: string, opts: OpenOptions): { algorithm: VerityAlgorithm; hasMeta: boolean } {
    const wanted = opts.hash ?? "sha256";
    const metaPath = path.join(p, META_FILE);
    let text: string | null = null;
    try {
      text = fs.readFileSync(metaPath, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw describeSystemError(e, `read ${metaPath}`);
    }
    if (text !== null) {
      const alg = Repository.parseMeta(text, metaPath);
      if (opts.hashExplicit && alg !== wanted) {
        throw new CfsError(`repository ${p} uses ${alg} (${META_FILE}), which conflicts with --hash ${wanted}`);
      }
      return { algorithm: alg, hasMeta: true };
    }
    const inferred = Repository.inferAlgorithm(p);
    if (inferred && opts.hashExplicit && inferred !== wanted) {
      throw new CfsError(`repository ${p} holds ${inferred} objects, which conflicts with --hash ${wanted}`);
    }
    return { algorithm: inferred ?? wanted, hasMeta: false };
  }

  private static parseMeta(text: string, where: string): VerityAlgorithm {
    let meta: unknown;
    try {
      meta = JSON.parse(text);
    } catch {
      throw new CfsError(`${where}: not valid JSON`);
    }
    if (typeof meta !== "object" || meta === null) throw new CfsError(`${where}: not a JSON object`);
    const m = meta as { version?: unknown; algorithm?: unknown; features?: { incompatible?: unknown } };
    if (typeof m.version !== "number" || !Number.isInteger(m.version) || m.version < 1) {
      throw new CfsError(`${where}: invalid version ${JSON.stringify(m.version)}`);
    }
    if (m.version > REPO_FORMAT_VERSION) {
      throw new CfsError(`${where}: repository format version ${m.version} is newer than this cfsctl supports (${REPO_FORMAT_VERSION})`);
    }
    const incompatible = m.features?.incompatible;
    if (Array.isArray(incompatible) && incompatible.length > 0) {
      throw new CfsError(`${where}: repository needs features this cfsctl does not know: ${incompatible.join(", ")}`);
    }
    return parseAlgorithmId(m.algorithm, where);
  }

  /** The algorithm the object names show (62 hex digits: sha256, 126: sha512), or null. */
  static inferAlgorithm(p: string): VerityAlgorithm | null {
    const objects = path.join(p, "objects");
    for (const d of readdirOrEmpty(objects)) {
      if (!d.isDirectory() || !/^[0-9a-f]{2}$/.test(d.name)) continue;
      for (const f of readdirOrEmpty(path.join(objects, d.name))) {
        if (/^[0-9a-f]{62}$/.test(f.name)) return "sha256";
        if (/^[0-9a-f]{126}$/.test(f.name)) return "sha512";
      }
    }
    return null;
  }

  private static writeMeta(p: string, alg: VerityAlgorithm): void {
    const data = Buffer.from(JSON.stringify({ version: REPO_FORMAT_VERSION, algorithm: algorithmId(alg) }) + "\n");
    const final = path.join(p, META_FILE);
    const tmp = path.join(p, tmpName());
    try {
      const fd = fs.openSync(tmp, "wx", 0o644);
      try {
        writeAll(fd, data);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      // link, not rename: a concurrent init that got there first wins.
      try {
        fs.linkSync(tmp, final);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        const other = Repository.parseMeta(fs.readFileSync(final, "utf8"), final);
        if (other !== alg) throw new CfsError(`repository ${p} was just initialized with ${other}`);
      }
    } catch (e) {
      throw describeSystemError(e, `write ${final}`);
    } finally {
      removeQuietly(tmp);
    }
  }

  /** Drop the lock. The object must not be used afterwards. */
  close(): void {
    this.cancelCleanup?.();
    this.cancelCleanup = null;
    this.lock?.release();
    this.lock = null;
  }

  /** Cancels the removal of this run's temporary files on an interrupt (see open()). */
  private cancelCleanup: (() => void) | null;

  // ---- objects -----------------------------------------------------------

  /** Normalise a digest (bytes or hex) to lowercase hex of this repository's length. */
  digestHex(digest: string | Uint8Array): string {
    const hex = typeof digest === "string" ? digest.toLowerCase() : Buffer.from(digest).toString("hex");
    if (hex.length !== this.hexLength || !/^[0-9a-f]+$/.test(hex)) {
      throw new CfsError(`invalid ${this.algorithm} digest ${JSON.stringify(typeof digest === "string" ? digest : hex)}`);
    }
    return hex;
  }

  /** `XX/YYYY…` of a digest: the payload of an external file. */
  objectName(digest: string | Uint8Array): string {
    const hex = this.digestHex(digest);
    return `${hex.slice(0, 2)}/${hex.slice(2)}`;
  }

  /** Absolute path of an object. */
  objectPath(digest: string | Uint8Array): string {
    return path.join(this.path, "objects", this.objectName(digest));
  }

  hasObject(digest: string | Uint8Array): boolean {
    return lstatOrNull(this.objectPath(digest)) !== null;
  }

  /**
   * Store the file `src` as the object `digest` (its fs-verity digest, which
   * the caller computed). Copied with a reflink where the filesystem can.
   * With `verify` (default) the copy is hashed again and must match, so a file
   * that changed since it was hashed never lands under a wrong name.
   */
  storeObjectFromFile(src: string, digest: string | Uint8Array, opts: { verify?: boolean } = {}): "stored" | "present" {
    const hex = this.digestHex(digest);
    const final = this.objectPath(hex);
    if (lstatOrNull(final)) return "present";
    const dir = path.dirname(final);
    this.mkdirObjects(dir);
    const tmp = path.join(dir, tmpName());
    try {
      fs.copyFileSync(src, tmp, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE);
      const fd = fs.openSync(tmp, fs.constants.O_RDONLY);
      try {
        if (opts.verify !== false) {
          const got = fsverityDigestFdSync(fd, this.algorithm).toString("hex");
          if (got !== hex) throw new CfsError(`${src}: content changed while it was stored (digest ${got}, expected ${hex})`);
        }
        this.finishObject(fd, final, hex);
      } finally {
        fs.closeSync(fd);
      }
      return this.linkObject(tmp, final);
    } catch (e) {
      throw describeSystemError(e, `store ${src} as object ${this.objectName(hex)}`);
    } finally {
      removeQuietly(tmp);
    }
  }

  /** A fresh temporary name (for files written in objects/ before they are named). */
  tmpName(): string {
    return tmpName();
  }

  /**
   * Name a complete temporary file in objects/ (written and hashed by the
   * caller, and made durable by a syncfs of the repository's filesystem for
   * many objects at once) as the object `digest`: fs-verity where possible,
   * then a link. The file must already have mode 0644. The temporary name is
   * removed in every case.
   */
  adoptSyncedObject(tmp: string, digest: string | Uint8Array): "stored" | "present" {
    const hex = this.digestHex(digest);
    const final = this.objectPath(hex);
    try {
      // No lstat first: the link fails with EEXIST for an object already there.
      const dir = path.dirname(final);
      if (!this.madeDirs.has(dir)) {
        this.mkdirObjects(dir);
        this.madeDirs.add(dir);
      }
      if (!this.verityKnownUnsupported) {
        const fd = fs.openSync(tmp, fs.constants.O_RDONLY);
        try {
          this.applyVerity(fd, final, hex);
        } finally {
          fs.closeSync(fd);
        }
      }
      return this.linkObject(tmp, final);
    } catch (e) {
      throw describeSystemError(e, `store object ${this.objectName(hex)}`);
    } finally {
      removeQuietly(tmp);
    }
  }

  /**
   * adoptSyncedObject for many objects: in batches in libuv's threads where
   * the native addon is built (fs-verity, link, removal of the temporary
   * name), else one by one. An object a thread could not name goes through
   * adoptSyncedObject, whose rules and messages apply. Objects named before
   * a failure stay (they are complete); every temporary name is gone
   * afterwards.
   */
  async adoptSyncedObjects(items: Array<{ tmp: string; digest: string | Uint8Array }>): Promise<void> {
    const alg = verityAlgorithmId(this.algorithm);
    const verity = this.verityKnownUnsupported ? 0 : this.requireVerity ? ((alg + 2) as 3 | 4) : alg;
    const namings = items.map((it) => {
      const hex = this.digestHex(it.digest);
      return { tmp: it.tmp, final: this.objectPath(hex), digest: Buffer.from(hex, "hex") };
    });
    let named: NamingResult | null;
    try {
      named = await nameObjectsInThreads(namings, verity);
    } catch (e) {
      for (const n of namings) removeQuietly(n.tmp);
      throw e;
    }
    // Named without fs-verity by the threads: the one warning (--require-verity named none of them).
    if (named?.verityUnsupported && !this.requireVerity) this.verityUnsupported(this.objectPath(this.digestHex(items[0]!.digest)));
    let failure: unknown = null;
    items.forEach((it, i) => {
      const r = named?.results[i];
      if (r === "stored" || r === "present") return; // named, its temporary name removed
      if (failure !== null) {
        removeQuietly(it.tmp);
        return;
      }
      try {
        this.adoptSyncedObject(it.tmp, it.digest);
      } catch (e) {
        failure = e;
      }
    });
    if (failure !== null) throw failure;
  }

  /** Store bytes as an object; returns its digest (hex). */
  storeObjectFromBuffer(data: Uint8Array): string {
    const hex = fsverityDigest(data, this.algorithm).toString("hex");
    const final = this.objectPath(hex);
    if (lstatOrNull(final)) return hex;
    const dir = path.dirname(final);
    this.mkdirObjects(dir);
    const tmp = path.join(dir, tmpName());
    try {
      const fd = fs.openSync(tmp, "wx", 0o644);
      try {
        writeAll(fd, data);
      } finally {
        fs.closeSync(fd);
      }
      const ro = fs.openSync(tmp, fs.constants.O_RDONLY);
      try {
        this.finishObject(ro, final, hex);
      } finally {
        fs.closeSync(ro);
      }
      this.linkObject(tmp, final);
      return hex;
    } catch (e) {
      throw describeSystemError(e, `store object ${this.objectName(hex)}`);
    } finally {
      removeQuietly(tmp);
    }
  }

  private mkdirObjects(dir: string): void {
    try {
      makeDirs(dir, 0o755);
    } catch (e) {
      throw describeSystemError(e, `create ${dir}`);
    }
  }

  /** Mode 0644, data on disk, fs-verity where possible (on a read-only fd, as the kernel wants). */
  private finishObject(fd: number, final: string, hex: string): void {
    fs.fchmodSync(fd, 0o644);
    fs.fsyncSync(fd);
    this.applyVerity(fd, final, hex);
  }

  /**
   * fs-verity on a read-only fd, checked against the object's name; where
   * unsupported: an error under --require-verity, else one warning.
   */
  private applyVerity(fd: number, final: string, hex: string): void {
    if (enableVerity(fd, this.algorithm, Buffer.from(hex, "hex"), `object ${this.objectName(hex)}`) !== "unsupported") return;
    this.verityUnsupported(final);
  }

  /** fs-verity cannot be enabled here: an error under --require-verity, else one warning. */
  private verityUnsupported(final: string): void {
    if (this.requireVerity) throw new CfsError(`cannot enable fs-verity on ${final}: not supported here (--require-verity)`);
    if (!verityWarned && !this.quiet) process.stderr.write(`${VERITY_UNSUPPORTED_WARNING}\n`);
    verityWarned = true;
    this.verityKnownUnsupported = true;
  }

  /** Give the complete temporary file its final name, never replacing an existing object. */
  private linkObject(tmp: string, final: string): "stored" | "present" {
    try {
      fs.linkSync(tmp, final);
      return "stored";
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EEXIST") return "present"; // a concurrent writer stored it first
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "EMLINK") throw e;
    }
    // No hard links here: rename (objects with equal names have equal content).
    if (lstatOrNull(final)) return "present";
    fs.renameSync(tmp, final);
    return "stored";
  }

  // ---- links -------------------------------------------------------------

  /** Make `link` (repository-relative) a symlink to `target` (repository-relative), atomically. */
  private symlink(link: string, target: string): void {
    const linkAbs = path.join(this.path, link);
    const dir = path.dirname(linkAbs);
    const rel = path.relative(dir, path.join(this.path, target));
    try {
      makeDirs(dir, 0o755);
      try {
        if (fs.readlinkSync(linkAbs) === rel) return;
      } catch {
        /* missing or not a link: (re)create */
      }
      const tmp = path.join(dir, tmpName());
      try {
        fs.symlinkSync(rel, tmp);
        fs.renameSync(tmp, linkAbs);
      } finally {
        removeQuietly(tmp);
      }
    } catch (e) {
      throw describeSystemError(e, `link ${linkAbs}`);
    }
  }

  // ---- images ------------------------------------------------------------

  /** Store image bytes, link images/<hex> (and images/refs/<name>); returns the image digest (hex). */
  writeImage(image: Uint8Array, name?: string): string {
    if (name !== undefined) validateRefName(name);
    const hex = this.storeObjectFromBuffer(image);
    this.linkImage(hex, name);
    return hex;
  }

  /** Link an image already stored as an object: images/<hex>, and images/refs/<name>. */
  linkImage(digest: string | Uint8Array, name?: string): void {
    const hex = this.digestHex(digest);
    if (!this.hasObject(hex)) throw new CfsError(`image ${hex}: object ${this.objectName(hex)} is not in the repository`);
    this.symlink(`images/${hex}`, `objects/${this.objectName(hex)}`);
    if (name !== undefined) this.nameImage(hex, name);
  }

  /** images/refs/<name> -> ../<hex> (replacing an earlier ref of that name). */
  nameImage(digest: string | Uint8Array, name: string): void {
    validateRefName(name);
    const hex = this.digestHex(digest);
    if (!lstatOrNull(path.join(this.path, "images", hex))) throw new CfsError(`image ${hex} is not in the repository`);
    this.symlink(`images/refs/${name}`, `images/${hex}`);
  }

  imagePath(digest: string | Uint8Array): string {
    return path.join(this.path, "images", this.digestHex(digest));
  }

  /**
   * An image named on the command line: a hex digest (images/<hex>),
   * `refs/NAME` (images/refs/NAME), or a path to an image file.
   */
  resolveImage(arg: string): ResolvedImage {
    return resolveImageArg(arg, this);
  }

  readImage(arg: string): { bytes: Buffer; image: ResolvedImage } {
    const image = this.resolveImage(arg);
    try {
      return { bytes: fs.readFileSync(image.path), image };
    } catch (e) {
      throw describeSystemError(e, `read image ${arg}`);
    }
  }

  /** Digests (hex) of the objects an image needs, sorted. */
  imageObjects(image: Buffer): string[] {
    const { objects } = collectImageObjects(image, this.hexLength);
    return [...objects.keys()].sort();
  }

  // ---- streams -----------------------------------------------------------

  /** streams/<id> -> the object `digest` (a stored split stream), and optionally streams/refs/<name>. */
  linkStream(digest: string | Uint8Array, streamId: string, name?: string): void {
    validateStreamId(streamId);
    const hex = this.digestHex(digest);
    if (!this.hasObject(hex)) throw new CfsError(`stream ${streamId}: object ${this.objectName(hex)} is not in the repository`);
    this.symlink(`streams/${streamId}`, `objects/${this.objectName(hex)}`);
    if (name !== undefined) this.nameStream(streamId, name);
  }

  /** streams/refs/<name> -> ../<id>. */
  nameStream(streamId: string, name: string): void {
    validateStreamId(streamId);
    validateRefName(name);
    if (!lstatOrNull(path.join(this.path, "streams", streamId))) throw new CfsError(`stream ${streamId} is not in the repository`);
    this.symlink(`streams/refs/${name}`, `streams/${streamId}`);
  }

  /** The object digest (hex) behind streams/<id>, or null when there is no such stream. */
  hasStream(streamId: string): string | null {
    validateStreamId(streamId);
    const link = path.join(this.path, "streams", streamId);
    let target: string;
    try {
      target = fs.readlinkSync(link);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw describeSystemError(e, `read link ${link}`);
    }
    return this.objectDigestOfTarget(target);
  }

  /** A stream named by its id or `refs/NAME`: its id, object digest and file. */
  resolveStream(arg: string): { streamId: string; digest: string; path: string } {
    let id = arg;
    if (arg.startsWith("refs/")) {
      const name = arg.slice("refs/".length);
      validateRefName(name);
      const ref = path.join(this.path, "streams", "refs", name);
      let target: string;
      try {
        target = fs.readlinkSync(ref);
      } catch (e) {
        throw describeSystemError(e, `stream ${arg}`);
      }
      id = path.basename(target);
    }
    const digest = this.hasStream(id);
    if (!digest) throw new CfsError(`stream ${arg} is not in the repository`);
    return { streamId: id, digest, path: this.objectPath(digest) };
  }

  /**
   * The objects a stream keeps alive: its own object, the objects it refers
   * to, and (through its named references) the streams it names and theirs.
   * Throws when a stream cannot be read.
   */
  streamObjects(streamId: string): string[] {
    const root = this.hasStream(streamId);
    if (root === null) return [];
    const out = new Set<string>();
    const todo = [root];
    while (todo.length) {
      const hex = todo.pop()!;
      if (out.has(hex)) continue;
      out.add(hex);
      if (!this.hasObject(hex)) continue;
      const ss = openSplitStream(this.objectPath(hex), this.algorithm, `stream object ${this.objectName(hex)}`);
      for (const o of ss.objectRefs) out.add(o.toString("hex"));
      for (const s of ss.streamRefs) todo.push(s.toString("hex"));
    }
    return [...out];
  }

  /** Hex digest from a link target `…/objects/XX/YYYY…`, or null when it is not one. */
  private objectDigestOfTarget(target: string): string | null {
    const m = /(?:^|\/)objects\/([0-9a-f]{2})\/([0-9a-f]+)$/.exec(target);
    if (!m || m[1]!.length + m[2]!.length !== this.hexLength) return null;
    return m[1]! + m[2]!;
  }

  // ---- fsck --------------------------------------------------------------

  /** Check the whole repository; the report lists every problem found. */
  async fsck(onProgress?: (n: number) => void): Promise<FsckReport> {
    const report: FsckReport = {
      repository: this.path,
      algorithm: this.algorithm,
      objectsChecked: 0,
      imagesChecked: 0,
      streamsChecked: 0,
      refsChecked: 0,
      problems: [],
    };
    const err = (p: string, message: string) => report.problems.push({ severity: "error", path: p, message });
    const warn = (p: string, message: string) => report.problems.push({ severity: "warning", path: p, message });

    if (!this.hasMeta) warn(META_FILE, `missing (algorithm ${this.algorithm} inferred; \`cfsctl init\` writes it)`);

    // Objects: every name is the fs-verity digest of the content.
    await checkObjects(this, report, onProgress);

    // Images and streams: links, refs, and the objects images need.
    for (const category of ["images", "streams"] as const) {
      const dir = path.join(this.path, category);
      if (!statOrNull(dir)) {
        warn(category, "missing directory");
        continue;
      }
      for (const d of readdirOrEmpty(dir)) {
        const rel = `${category}/${d.name}`;
        if (d.name === "refs") {
          if (!d.isDirectory()) err(rel, "not a directory");
          continue;
        }
        if (d.name.startsWith(TMP_PREFIX)) {
          warn(rel, "stray temporary file (an interrupted write; gc removes it)");
          continue;
        }
        if (!d.isSymbolicLink()) {
          err(rel, "not a symlink");
          continue;
        }
        if (category === "images") report.imagesChecked++;
        else report.streamsChecked++;
        const target = fs.readlinkSync(path.join(dir, d.name));
        const digest = this.objectDigestOfTarget(target);
        if (digest === null) {
          err(rel, `link target ${target} is not an object`);
          continue;
        }
        const expect = `../objects/${digest.slice(0, 2)}/${digest.slice(2)}`;
        if (target !== expect) warn(rel, `link target ${target} is not the relative ${expect}`);
        if (category === "images" && d.name !== digest) err(rel, `link points to object ${digest}, not its own digest`);
        const objPath = this.objectPath(digest);
        const st = statOrNull(path.join(dir, d.name));
        if (!st) {
          err(rel, `dangling link: object objects/${this.objectName(digest)} is missing`);
          continue;
        }
        if (category === "images") {
          let bytes: Buffer;
          try {
            bytes = fs.readFileSync(objPath);
          } catch (e) {
            err(rel, describeSystemError(e, "read").message);
            continue;
          }
          let found;
          try {
            found = collectImageObjects(bytes, this.hexLength);
          } catch (e) {
            err(rel, `not a readable composefs image: ${(e as Error).message}`);
            continue;
          }
          for (const { where, payload } of found.invalid) {
            err(rel, `${where}: payload ${JSON.stringify(payload)} is not an object of this repository`);
          }
          for (const [obj, where] of found.objects) {
            if (!this.hasObject(obj)) err(rel, `needs missing object objects/${this.objectName(obj)} (${where})`);
          }
        } else {
          let objs: string[];
          try {
            objs = this.streamObjects(d.name);
          } catch (e) {
            err(rel, `not a readable split stream: ${(e as Error).message}`);
            continue;
          }
          for (const obj of objs) {
            if (!this.hasObject(obj)) err(rel, `needs missing object objects/${this.objectName(obj)}`);
          }
        }
      }
      // Refs: each resolves to a first-level entry of the category.
      const refsDir = path.join(dir, "refs");
      const walk = (sub: string) => {
        for (const d of readdirOrEmpty(path.join(refsDir, sub))) {
          const name = sub ? `${sub}/${d.name}` : d.name;
          const rel = `${category}/refs/${name}`;
          const abs = path.join(refsDir, name);
          if (d.name.startsWith(TMP_PREFIX)) {
            warn(rel, "stray temporary file (an interrupted write; gc removes it)");
          } else if (d.isDirectory()) {
            walk(name);
          } else if (!d.isSymbolicLink()) {
            err(rel, "not a symlink");
          } else {
            report.refsChecked++;
            const target = fs.readlinkSync(abs);
            const resolved = path.resolve(path.dirname(abs), target);
            if (path.dirname(resolved) !== dir || path.basename(resolved) === "refs") {
              err(rel, `ref target ${target} is not an entry of ${category}/`);
            } else if (!lstatOrNull(resolved)) {
              err(rel, `dangling ref: ${category}/${path.basename(resolved)} does not exist`);
            } else if (!statOrNull(resolved)) {
              err(rel, `dangling ref: ${category}/${path.basename(resolved)} does not resolve to an object`);
            }
          }
        }
      };
      walk("");
    }
    return report;
  }

  /** Every regular entry of objects/ (for fsck and gc). */
  *listObjectFiles(): Generator<{ rel: string; abs: string; dirent: fs.Dirent; digest: string | null }> {
    const objects = path.join(this.path, "objects");
    const want = this.hexLength - 2;
    for (const d of readdirOrEmpty(objects).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (!d.isDirectory() || !/^[0-9a-f]{2}$/.test(d.name)) {
        yield { rel: `objects/${d.name}`, abs: path.join(objects, d.name), dirent: d, digest: null };
        continue;
      }
      for (const f of readdirOrEmpty(path.join(objects, d.name))) {
        const ok = f.name.length === want && /^[0-9a-f]+$/.test(f.name);
        yield {
          rel: `objects/${d.name}/${f.name}`,
          abs: path.join(objects, d.name, f.name),
          dirent: f,
          digest: ok ? d.name + f.name : null,
        };
      }
    }
  }

  // ---- gc ----------------------------------------------------------------

  /**
   * Remove what no ref reaches. Roots: images/refs/** and streams/refs/**.
   * Live: the images and streams they name, the objects holding those, and
   * the objects the images (and streams) refer to. Refs are never removed.
   * Needs the exclusive lock unless dryRun (open with lock: "exclusive").
   */
  gc(opts: { dryRun?: boolean } = {}): GcResult {
    const dryRun = !!opts.dryRun;
    if (!dryRun && this.lock?.mode !== "exclusive") throw new Error("gc needs the repository opened with the exclusive lock");
    const liveObjects = new Set<string>();
    const liveImages = new Set<string>();
    const liveStreams = new Set<string>();

    const rootsOf = (category: "images" | "streams"): Map<string, string> => {
      // entry name -> ref that names it
      const out = new Map<string, string>();
      const refsDir = path.join(this.path, category, "refs");
      const walk = (sub: string) => {
        for (const d of readdirOrEmpty(path.join(refsDir, sub))) {
          const name = sub ? `${sub}/${d.name}` : d.name;
          if (d.isDirectory()) walk(name);
          else if (d.isSymbolicLink()) {
            const abs = path.join(refsDir, name);
            const target = fs.readlinkSync(abs);
            const resolved = path.resolve(path.dirname(abs), target);
            if (path.dirname(resolved) === path.join(this.path, category) && path.basename(resolved) !== "refs") {
              out.set(path.basename(resolved), `${category}/refs/${name}`);
            } else if (!d.name.startsWith(TMP_PREFIX)) {
              // What it means to keep cannot be told (fsck calls it an error): remove nothing.
              throw new CfsError(`gc: ${category}/refs/${name} points at ${target}, not an entry of ${category}/; nothing removed, run \`cfsctl fsck\``);
            }
          }
        }
      };
      walk("");
      return out;
    };

    for (const [hex, ref] of rootsOf("images")) {
      liveImages.add(hex);
      const link = path.join(this.path, "images", hex);
      let digest: string | null = null;
      try {
        digest = this.objectDigestOfTarget(fs.readlinkSync(link));
      } catch {
        /* dangling ref: the object of that name, if any, still lives */
      }
      if (digest === null && hex.length === this.hexLength && /^[0-9a-f]+$/.test(hex)) digest = hex;
      if (digest === null) continue;
      liveObjects.add(digest);
      let bytes: Buffer;
      try {
        bytes = fs.readFileSync(this.objectPath(digest));
      } catch (e) {
        throw new CfsError(`gc: cannot read image ${hex} named by ${ref} (${describeSystemError(e, "read").message}); nothing removed, run \`cfsctl fsck\``);
      }
      let objs: string[];
      try {
        objs = this.imageObjects(bytes);
      } catch (e) {
        throw new CfsError(`gc: image ${hex} named by ${ref} is not readable (${(e as Error).message}); nothing removed, run \`cfsctl fsck\``);
      }
      for (const o of objs) liveObjects.add(o);
    }
    for (const [id] of rootsOf("streams")) {
      liveStreams.add(id);
      let digest: string | null = null;
      try {
        digest = this.hasStream(id);
      } catch {
        /* an invalid stream id */
      }
      if (digest === null) continue;
      liveObjects.add(digest);
      let objs: string[];
      try {
        objs = this.streamObjects(id);
      } catch (e) {
        throw new CfsError(`gc: stream ${id} is not readable (${(e as Error).message}); nothing removed, run \`cfsctl fsck\``);
      }
      for (const o of objs) liveObjects.add(o);
    }

    const removed: GcRemoval[] = [];
    const remove = (kind: GcRemoval["kind"], rel: string, bytes: number) => {
      removed.push({ kind, path: rel, bytes });
      if (!dryRun) {
        try {
          fs.unlinkSync(path.join(this.path, rel));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw describeSystemError(e, `remove ${rel}`);
        }
      }
    };

    // Links first, so no link is left pointing at a removed object.
    for (const [category, live] of [
      ["images", liveImages],
      ["streams", liveStreams],
    ] as const) {
      for (const d of readdirOrEmpty(path.join(this.path, category))) {
        if (d.name === "refs" && d.isDirectory()) continue;
        if (d.name.startsWith(TMP_PREFIX)) {
          remove("temporary", `${category}/${d.name}`, 0);
          continue;
        }
        if (!d.isSymbolicLink() || live.has(d.name)) continue;
        // A stream another live stream names (a layer of a named image) stays.
        if (category === "streams") {
          let target: string | null = null;
          try {
            target = this.hasStream(d.name);
          } catch {
            /* not a valid stream id */
          }
          if (target !== null && liveObjects.has(target)) continue;
        }
        remove(category === "images" ? "image" : "stream", `${category}/${d.name}`, 0);
      }
      // Stray temporaries of interrupted ref updates.
      const refsDir = path.join(this.path, category, "refs");
      const walk = (sub: string) => {
        for (const d of readdirOrEmpty(path.join(refsDir, sub))) {
          const name = sub ? `${sub}/${d.name}` : d.name;
          if (d.name.startsWith(TMP_PREFIX) && !d.isDirectory()) remove("temporary", `${category}/refs/${name}`, 0);
          else if (d.isDirectory()) walk(name);
        }
      };
      walk("");
    }
    for (const o of this.listObjectFiles()) {
      if (o.dirent.isDirectory()) continue;
      const base = path.basename(o.rel);
      if (base.startsWith(TMP_PREFIX)) {
        // The exclusive lock means no writer is running: this is left over.
        remove("temporary", o.rel, lstatOrNull(o.abs)?.size ?? 0);
        continue;
      }
      if (o.digest === null || liveObjects.has(o.digest)) continue;
      remove("object", o.rel, lstatOrNull(o.abs)?.size ?? 0);
    }
    for (const d of readdirOrEmpty(this.path)) {
      if (d.name.startsWith(TMP_PREFIX) && d.isFile()) remove("temporary", d.name, 0);
    }

    let bytesFreed = 0;
    for (const r of removed) bytesFreed += r.bytes;
    return {
      dryRun,
      removed,
      objectsRemoved: removed.filter((r) => r.kind === "object").length,
      imagesRemoved: removed.filter((r) => r.kind === "image").length,
      streamsRemoved: removed.filter((r) => r.kind === "stream").length,
      bytesFreed,
    };
  }
}

/**
 * Resolve an image argument. With a repository: a hex digest is
 * images/<hex>, `refs/NAME` is images/refs/NAME, anything else a path (and,
 * failing that, a bare ref name, as composefs-rs accepts). Without one: a path.
 */
export function resolveImageArg(arg: string, repo: Repository | null): ResolvedImage {
  if (repo) {
    const hexLen = repo.hexLength;
    if (arg.length === hexLen && /^[0-9a-fA-F]+$/.test(arg)) {
      const p = repo.imagePath(arg);
      if (statOrNull(p)) return { path: p, digest: arg.toLowerCase(), source: "digest" };
      if (!statOrNull(arg)) {
        if (lstatOrNull(p)) throw new CfsError(`image ${arg}: its object is missing from repository ${repo.path}`);
        throw new CfsError(`image ${arg} not found in repository ${repo.path}`);
      }
    } else if (arg.startsWith("refs/")) {
      const name = arg.slice("refs/".length);
      validateRefName(name);
      const ref = path.join(repo.path, "images", "refs", name);
      if (statOrNull(ref)) return { path: ref, digest: refDigest(ref), source: "ref" };
      if (!statOrNull(arg)) {
        if (lstatOrNull(ref)) throw new CfsError(`image ${arg}: dangling ref in repository ${repo.path}`);
        throw new CfsError(`image ${arg} not found in repository ${repo.path}`);
      }
    }
  }
  const st = statOrNull(arg);
  if (st?.isFile()) return { path: path.resolve(arg), digest: null, source: "path" };
  if (st) throw new CfsError(`image ${arg}: not a regular file`);
  if (repo && !arg.includes("\0")) {
    try {
      validateRefName(arg);
      const ref = path.join(repo.path, "images", "refs", arg);
      if (statOrNull(ref)) return { path: ref, digest: refDigest(ref), source: "ref" };
    } catch {
      /* not a ref name either */
    }
  }
  throw new CfsError(`image ${arg} not found${repo ? ` (not a digest, ref or file; repository ${repo.path})` : ""}`);
}

function refDigest(ref: string): string | null {
  try {
    return path.basename(fs.readlinkSync(ref));
  } catch {
    return null;
  }
}
