/**
 * OCI layers → one inode tree, with the image-spec whiteout rules:
 * `.wh.NAME` hides NAME of lower layers; `.wh..wh..opq` hides every lower
 * entry of its directory. A whiteout acts only on lower layers, wherever it
 * stands in its own layer (before or after that layer's entries, which a
 * name-sorted tar puts in any order): a layer's whiteouts are applied as
 * they come, to the tree of the layers below, and its other entries once
 * the layer has ended. A whiteout below a non-directory of the lower tree
 * hides nothing. A later entry replaces an earlier one (file ↔ directory
 * both ways); a directory listed again keeps its children and takes the
 * newer metadata and xattrs. Parents no layer lists are made as `umoci
 * unpack` and containers/storage make them, with mkdir: mode 0755,
 * root-owned, no xattrs; in a set-group-ID directory also that bit and the
 * directory's group (mtime 0, so the result does not depend on when it was
 * made).
 */
import {
  EXTERNAL_XATTR_BUDGET,
  Inode,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  XattrKeys,
} from "../model/inode.js";
import { MAX_DIR_DEPTH } from "../erofs/format.js";
import { digestToObjectPath } from "../fsverity/digest.js";
import { CfsError } from "../util/errors.js";
import type { EntryData } from "./layer.js";
import type { TarEntry } from "./tar.js";

const WH = Buffer.from(".wh.");
const OPAQUE = Buffer.from(".wh..wh..opq");
const S_ISGID = 0o2000;

/**
 * Path components below the image root; `.` and empty ones dropped (so a
 * leading `/` too: an absolute name is read from the root, as composefs-rs,
 * GNU tar, umoci and containers/storage read it), `..` refused.
 */
function components(p: Buffer, where: () => string): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i <= p.length) {
    let j = p.indexOf(0x2f, i);
    if (j < 0) j = p.length;
    const c = p.subarray(i, j);
    i = j + 1;
    if (c.length === 0 || (c.length === 1 && c[0] === 0x2e)) continue;
    if (c.length === 2 && c[0] === 0x2e && c[1] === 0x2e) throw new CfsError(`${where()}: path with '..' refused`);
    if (c.length > 255) throw new CfsError(`${where()}: name longer than 255 bytes`);
    out.push(c);
  }
  return out;
}

function show(p: Buffer): string {
  return JSON.stringify(p.toString("utf8")).slice(1, -1);
}

/** glibc makedev, narrowed to the 32 bits composefs stores. */
function makedev(major: number, minor: number): number {
  return (((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12)) >>> 0;
}

/** An entry of the layer being read, kept (with copies of its bytes) until the layer ends. */
interface Pending {
  e: TarEntry;
  data: EntryData | null;
  label: string;
}

const NO_BYTES = Buffer.alloc(0);

export class LayerMerger {
  readonly root = new Inode(S_IFDIR | 0o755);
  private label = "";
  private pending: Pending[] = [];

  /** Start the next layer (lowest first). */
  beginLayer(label: string): void {
    this.endLayer();
    this.label = label;
  }

  /** Apply the entries of the layer read (its whiteouts have acted already). */
  endLayer(): void {
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) this.apply(p);
  }

  /** Walk to the parent of `comps`; missing directories are made when `create`. */
  private parentOf(comps: Buffer[], where: () => string, create: boolean): Inode | null {
    let dir = this.root;
    for (let i = 0; i < comps.length - 1; i++) {
      const e = dir.lookup(comps[i]!);
      if (!e) {
        if (!create) return null;
        const d = new Inode(S_IFDIR | 0o755);
        d.mtimeSec = 0n;
        if (dir.mode & S_ISGID) {
          // mkdir(2) in a set-group-ID directory: its group and the bit are inherited.
          d.mode |= S_ISGID;
          d.gid = dir.gid;
        }
        dir.addEntry(Buffer.from(comps[i]!), d);
        dir = d;
        continue;
      }
      if (!e.inode.isDir()) {
        if (!create) return null;
        const what = e.inode.type === S_IFLNK ? "a symlink" : "not a directory";
        throw new CfsError(`${where()}: ${show(Buffer.from(comps.slice(0, i + 1).join("/")))} is ${what} (a path through it is refused)`);
      }
      dir = e.inode;
    }
    return dir;
  }

  private lookupPath(comps: Buffer[]): Inode | null {
    let n: Inode = this.root;
    for (const c of comps) {
      const e = n.lookup(c); // none in a non-directory (reading entries could sort them)
      if (!e) return null;
      n = e.inode;
    }
    return n;
  }

  add(e: TarEntry, data: EntryData | null): void {
    // Named only in an error: most entries never need the string.
    const where = () => `${this.label}: ${show(e.path)}`;
    const comps = components(e.path, where);
    if (comps.length === 0) {
      // The root's own entry never counts (the root rule decides), but it must be a directory.
      if (e.type !== "5") throw new CfsError(`${where()}: the root entry is not a directory`);
      return;
    }
    const name = comps[comps.length - 1]!;
    if (name.length >= WH.length && name.subarray(0, WH.length).equals(WH)) {
      // The tree holds the lower layers only: none of this layer's entries is in it yet.
      const parent = this.parentOf(comps, where, false);
      if (!parent) return;
      if (name.equals(OPAQUE)) {
        parent.entries = [];
      } else {
        const target = name.subarray(WH.length);
        if (target.length > 0) parent.removeEntry(target);
      }
      return;
    }
    // Kept past this entry's turn: copies, not views of the reader's buffers
    // (the path is split again when the entry is applied).
    const kept: TarEntry = {
      ...e,
      path: Buffer.from(e.path),
      linkname: e.linkname.length === 0 ? NO_BYTES : Buffer.from(e.linkname),
      xattrs: e.xattrs.length === 0 ? [] : e.xattrs.map((x) => ({ key: Buffer.from(x.key), value: Buffer.from(x.value) })),
    };
    this.pending.push({ e: kept, data, label: this.label });
  }

  private apply(p: Pending): void {
    const { e, data } = p;
    const where = `${p.label}: ${show(e.path)}`;
    const named = () => where;
    const comps = components(e.path, named);
    // Refused here, before any walk of the tree goes that deep.
    if ((e.type === "5" ? comps.length : comps.length - 1) >= MAX_DIR_DEPTH) {
      throw new CfsError(`${where}: directories nest deeper than ${MAX_DIR_DEPTH} levels (the most a composefs image holds here)`);
    }
    const name = comps[comps.length - 1]!;
    const parent = this.parentOf(comps, named, true)!;
    const existing = parent.lookup(name);
    if (e.type === "5" && existing && existing.inode.isDir()) {
      // Listed again: newer metadata and xattrs, children kept.
      this.setMeta(existing.inode, e);
      existing.inode.xattrs = [];
      existing.inode.xattrBudgetUsed = 0;
      this.setXattrs(existing.inode, e, where);
      return;
    }
    let inode: Inode;
    let hardlink = false;
    switch (e.type) {
      case "5":
        inode = new Inode(S_IFDIR);
        break;
      case "0":
      case "7":
        inode = new Inode(S_IFREG);
        inode.size = BigInt(e.size);
        if (data && "digest" in data) {
          inode.digest = data.digest;
          inode.payload = Buffer.from(digestToObjectPath(data.digest));
        } else if (data && data.inline.length > 0) inode.content = data.inline;
        break;
      case "1": {
        const tcomps = components(e.linkname, named);
        const target = this.lookupPath(tcomps);
        if (!target) throw new CfsError(`${where}: hardlink to a missing entry ${show(e.linkname)}`);
        if (target.isDir()) throw new CfsError(`${where}: hardlink to a directory ${show(e.linkname)}`);
        if (tcomps.length === comps.length && tcomps.every((c, i) => c.equals(comps[i]!))) return; // a link to itself changes nothing
        inode = target;
        hardlink = true;
        break;
      }
      case "2":
        if (e.linkname.length === 0) throw new CfsError(`${where}: symlink with an empty target`);
        if (e.linkname.length > 4095) throw new CfsError(`${where}: symlink target longer than 4095 bytes`);
        inode = new Inode(S_IFLNK);
        inode.payload = Buffer.from(e.linkname);
        inode.size = BigInt(e.linkname.length);
        break;
      case "3":
      case "4":
        inode = new Inode(e.type === "3" ? S_IFCHR : S_IFBLK);
        inode.rdev = makedev(e.devmajor, e.devminor);
        break;
      case "6":
        inode = new Inode(S_IFIFO);
        break;
      default:
        throw new CfsError(`${where}: unsupported tar entry type '${e.type}'`);
    }
    if (!hardlink) {
      this.setMeta(inode, e);
      this.setXattrs(inode, e, where);
    }
    if (existing) {
      // Replaced where it stands (no move of the entries after it).
      existing.inode = inode;
      existing.hardlink = hardlink;
    } else {
      parent.addEntry(name, inode, hardlink);
    }
  }

  private setMeta(inode: Inode, e: TarEntry): void {
    inode.mode = (inode.mode & 0o170000) | (inode.type === S_IFLNK ? 0o777 : e.mode & 0o7777);
    inode.uid = e.uid >>> 0;
    inode.gid = e.gid >>> 0;
    inode.mtimeSec = e.mtime;
    inode.mtimeNsec = 0;
  }

  /** The entry's xattrs on an inode that has none. */
  private setXattrs(inode: Inode, e: TarEntry, where: string): void {
    // A key can come twice (SCHILY.xattr and LIBARCHIVE.xattr records): the
    // later replaces the earlier (XattrKeys: without a search per xattr).
    const keys = new XattrKeys();
    for (const x of e.xattrs) {
      if (x.key.length === 0 || x.key.length > 255) throw new CfsError(`${where}: bad xattr name`);
      if (!inode.setXattr(Buffer.from(x.key), Buffer.from(x.value), EXTERNAL_XATTR_BUDGET, keys)) {
        throw new CfsError(`${where}: xattrs too large for a composefs image`);
      }
    }
  }

  /**
   * After all layers: the first name of each inode in depth-first name order
   * is its primary entry, the others are hardlinks; nlink = names found.
   */
  finish(): Inode {
    this.endLayer();
    const seen = new Map<Inode, number>();
    const rec = (dir: Inode) => {
      for (const e of dir.entries!) {
        if (e.inode.isDir()) {
          e.hardlink = false;
          rec(e.inode);
          continue;
        }
        const n = seen.get(e.inode);
        e.hardlink = n !== undefined;
        seen.set(e.inode, (n ?? 0) + 1);
      }
    };
    rec(this.root);
    for (const [inode, n] of seen) inode.nlink = n;
    return this.root;
  }
}
