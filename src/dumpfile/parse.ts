/**
 * composefs-dump(5) parser with the acceptance rules of upstream
 * `mkcomposefs --from-file` (tools/mkcomposefs.c tree_from_dump_line),
 * including its strict mode (CFS_PARSE_STRICT).
 *
 * Deliberate difference: a DIGEST field must be exactly 64 hex digits (or `-`,
 * or empty); upstream silently uses uninitialised bytes for anything shorter.
 */
import { CfsError } from "../util/errors.js";
import {
  Inode,
  isValidFileType,
  MAX_NAME_LENGTH,
  PATH_MAX,
  S_IFBLK,
  S_IFCHR,
  S_IFLNK,
  S_IFMT,
  type Dirent,
} from "../model/inode.js";
import { DumpSyntaxError, unescape } from "./escape.js";

/** Largest inline content a dumpfile may carry (LCFS_INLINE_CONTENT_MAX). */
export const DUMP_INLINE_CONTENT_MAX = 5000;

export interface ParseOptions {
  /** Upstream's CFS_PARSE_STRICT. */
  strict?: boolean;
  /** Name used in error messages. */
  source?: string;
}

const U64_MASK = (1n << 64n) - 1n;

/**
 * strtoull(3) on buf[start,end): optional leading white space and sign, then
 * digits of the base. Returns [value, ok]; ok is false when nothing was
 * parsed or characters remain (the value then is what strtoull returned).
 */
function strtoull(buf: Buffer, start: number, end: number, base: 8 | 10): [bigint, boolean] {
  let i = start;
  // Fast path: plain decimal digits.
  if (base === 10 && end - start > 0 && end - start <= 15) {
    let v = 0;
    let j = start;
    for (; j < end; j++) {
      const d = buf[j]! - 0x30;
      if (d < 0 || d > 9) break;
      v = v * 10 + d;
    }
    if (j === end) return [BigInt(v), true];
  }
  while (i < end && (buf[i] === 0x20 || (buf[i]! >= 0x09 && buf[i]! <= 0x0d))) i++;
  let neg = false;
  if (i < end && (buf[i] === 0x2b || buf[i] === 0x2d)) {
    neg = buf[i] === 0x2d;
    i++;
  }
  const digitsStart = i;
  let v = 0n;
  let overflow = false;
  const b = BigInt(base);
  for (; i < end; i++) {
    const d = buf[i]! - 0x30;
    if (d < 0 || d >= base) break;
    v = v * b + BigInt(d);
    if (v > U64_MASK) overflow = true;
  }
  if (i === digitsStart) return [0n, false]; // no conversion: endptr = start
  if (overflow) v = U64_MASK;
  else if (neg) v = (-v) & U64_MASK;
  return [v, i === end];
}

interface HardlinkFixup {
  ent: Dirent;
  path: Buffer;
  target: Buffer | null;
  line: number;
  /** Set while resolving: the entry the link points at (may be a link itself). */
  linkTo?: Dirent;
}

/** A C string: everything up to the first NUL. */
function cstr(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

/** Start and end of the eleven fixed fields of the line being parsed. */
const FIELDS = new Int32Array(22);

function isDot(name: Buffer): boolean {
  return (name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e);
}

/** Split a path into components as lookup_parent_path walks it. */
function splitPath(path: Buffer): { parents: Buffer[]; name: Buffer } {
  const parents: Buffer[] = [];
  let i = 0;
  for (;;) {
    while (i < path.length && path[i] === 0x2f) i++;
    const start = i;
    while (i < path.length && path[i] !== 0x2f) i++;
    if (i >= path.length) return { parents, name: path.subarray(start) };
    parents.push(path.subarray(start, i));
  }
}

/** A node as the C parser sees it: hardlink entries have no children. */
function childDir(ent: Dirent | undefined): Inode | undefined {
  if (!ent || ent.hardlink) return undefined;
  return ent.inode;
}

export class DumpfileParser {
  root: Inode | null = null;
  private readonly fixups: HardlinkFixup[] = [];
  private readonly strict: boolean;
  private readonly source: string;
  private lineNo = 0;

  constructor(opts: ParseOptions = {}) {
    this.strict = opts.strict ?? false;
    this.source = opts.source ?? "<dumpfile>";
  }

  private fail(msg: string, line = this.lineNo): never {
    throw new CfsError(`${this.source}:${line}: ${msg}`);
  }

  /** Parse a whole dumpfile held in memory. */
  parse(data: Buffer): Inode {
    let pos = 0;
    const len = data.length;
    while (pos < len) {
      const nl = data.indexOf(0x0a, pos);
      this.lineNo++;
      if (nl < 0) {
        if (this.strict) this.fail("Missing trailing newline");
        this.parseLineChecked(data, pos, len);
        break;
      }
      this.parseLineChecked(data, pos, nl);
      pos = nl + 1;
    }
    return this.finish();
  }

  private parseLineChecked(data: Buffer, start: number, end: number): void {
    try {
      // Work on the line alone: every search below stays within it.
      const line = data.subarray(start, end);
      this.parseLine(line, 0, line.length);
    } catch (e) {
      if (e instanceof DumpSyntaxError) this.fail(e.message);
      throw e;
    }
  }

  private lookupPath(path: Buffer): Dirent | Inode | undefined {
    // lookup_path: skip slashes, walk components; the empty path is the root.
    let node: Inode | undefined = this.root!;
    let cur: Dirent | Inode = node;
    let i = 0;
    for (;;) {
      while (i < path.length && path[i] === 0x2f) i++;
      if (i >= path.length) return cur;
      const start = i;
      while (i < path.length && path[i] !== 0x2f) i++;
      if (!node) return undefined;
      const ent = node.lookup(path.subarray(start, i));
      if (!ent) return undefined;
      cur = ent;
      node = childDir(ent);
    }
  }

  private parseLine(buf: Buffer, start: number, end: number): void {
    const nul = buf.indexOf(0, start);
    if (nul >= 0 && nul < end) {
      this.fail(`Invalid embedded NUL character at position ${nul - start}`);
    }
    // Eleven fixed fields, each cut at the next single space.
    const fs = FIELDS;
    let p = start;
    for (let f = 0; f < 11; f++) {
      const sp = p < end ? buf.indexOf(0x20, p) : -1;
      if (sp < 0 || sp >= end) {
        fs[2 * f] = p;
        fs[2 * f + 1] = end;
        p = end;
      } else {
        fs[2 * f] = p;
        fs[2 * f + 1] = sp;
        p = sp + 1;
      }
    }
    const fStart = (f: number) => fs[2 * f]!;
    const fEnd = (f: number) => fs[2 * f + 1]!;
    const isDash = (f: number) => fEnd(f) - fStart(f) === 1 && buf[fStart(f)] === 0x2d;
    const optional = (f: number): Buffer | null => (isDash(f) ? null : unescape(buf, fStart(f), fEnd(f)));

    const path = cstr(unescape(buf, fStart(0), fEnd(0)));
    if (path.length === 0) this.fail("Invalid empty path");

    let modeStart = fStart(2);
    let isHardlink = false;
    if (fEnd(2) > modeStart && buf[modeStart] === 0x40) {
      isHardlink = true;
      modeStart++;
    }
    // Upstream reports a failed integer only when the value parsed as 0 and
    // keeps the message around until it is cleared: reproduce that.
    let err: string | null = null;
    const int = (f: number, s: number, base: 8 | 10): bigint => {
      const [v, ok] = strtoull(buf, s, fEnd(f), base);
      if (!ok) err = `Invalid integer ${buf.toString("latin1", s, fEnd(f))}`;
      return v;
    };
    const modeV = int(2, modeStart, 8);
    if (modeV === 0n && err) this.fail(err);
    const mode = Number(modeV & 0xffffffffn);
    if (!isValidFileType(mode)) this.fail(`Invalid mode ${mode.toString(8)}`);
    const type = mode & S_IFMT;
    const inode = new Inode(mode);

    const ent = this.addNode(path, inode, isHardlink);
    err = null;

    if (isHardlink) {
      if (inode.isDir()) this.fail("Directories can't be hardlinked");
      const target = optional(8);
      this.fixups.push({ ent: ent!, path, target: target === null ? null : cstr(target), line: this.lineNo });
      return;
    }

    const size = int(1, fStart(1), 10);
    if (size === 0n && err) this.fail(err);
    const nlink = int(3, fStart(3), 10);
    if (nlink === 0n && err) this.fail(err);
    const uid = int(4, fStart(4), 10);
    if (uid === 0n && err) this.fail(err);
    const gid = int(5, fStart(5), 10);
    if (uid === 0n && err) this.fail(err);
    const rdev = int(6, fStart(6), 10);
    if (uid === 0n && err) this.fail(err);

    // MTIME: SEC.NSEC, both parsed as unsigned 64-bit and then narrowed.
    {
      const s = fStart(7);
      const e = fEnd(7);
      let dot = buf.indexOf(0x2e, s);
      if (dot < 0 || dot >= e) dot = e;
      let merr: string | null = null;
      const [sec, okS] = strtoull(buf, s, dot, 10);
      if (!okS) merr = `Invalid integer ${buf.toString("latin1", s, dot)}`;
      if (sec === 0n && merr) this.fail(merr);
      const ns = dot < e ? dot + 1 : e;
      const [nsec, okN] = strtoull(buf, ns, e, 10);
      if (!okN) merr = `Invalid integer ${buf.toString("latin1", ns, e)}`;
      if (nsec === 0n && merr) this.fail(merr);
      inode.mtimeSec = BigInt.asIntN(64, sec);
      inode.mtimeNsec = Number(nsec & 0xffffffffn);
    }

    const payload = optional(8);
    const content = optional(9);
    if (content !== null && BigInt(content.length) !== size) {
      this.fail(`Invalid content size ${content.length}, must match size ${BigInt.asIntN(64, size)}`);
    }
    const digestField = optional(10);

    if (type !== S_IFLNK) inode.size = size;
    inode.nlink = Number(nlink & 0xffffffffn);
    inode.uid = Number(uid & 0xffffffffn);
    inode.gid = Number(gid & 0xffffffffn);
    if (type === S_IFCHR || type === S_IFBLK) {
      inode.rdev = Number(rdev & 0xffffffffn);
    } else if (this.strict && rdev !== 0n) {
      this.fail("Non-zero devnum on non-device");
    }

    if (type === S_IFLNK) {
      const target = payload === null ? null : cstr(payload);
      if (target === null || target.length === 0 || target.length >= PATH_MAX) this.fail("Invalid symlink");
      inode.payload = target;
      inode.size = BigInt(target.length);
      if (this.strict) {
        if (size !== BigInt(target.length)) {
          this.fail(`Invalid symlink size ${target.length}, must match size ${BigInt.asIntN(64, size)}`);
        }
        if (content !== null && content.length > 0) this.fail("Symlink cannot have content");
      }
    } else {
      if (payload !== null) {
        const pl = cstr(payload);
        if (pl.length >= PATH_MAX) this.fail("Invalid payload");
        inode.payload = pl;
      }
      if (content !== null) {
        if (content.length > DUMP_INLINE_CONTENT_MAX) {
          this.fail(`Inline content size ${content.length} exceeds maximum ${DUMP_INLINE_CONTENT_MAX}`);
        }
        inode.content = content;
      }
    }

    if (digestField !== null && digestField.length > 0) {
      const hex = digestField.toString("latin1");
      if (!/^[0-9a-fA-F]{64}$/.test(hex)) this.fail(`Invalid digest ${hex}: must be 64 hex digits`);
      inode.digest = Buffer.from(hex, "hex");
    }

    // The rest of the line is the xattrs; upstream caps its length.
    if (end - p > 0xffff) this.fail("Too many xattrs");
    while (p < end) {
      let sp = buf.indexOf(0x20, p);
      if (sp < 0 || sp > end) sp = end;
      const eq = buf.indexOf(0x3d, p);
      if (eq < 0 || eq >= sp) this.fail("Missing = in xattr");
      const key = cstr(unescape(buf, p, eq));
      const value = unescape(buf, eq + 1, sp);
      if (!inode.setXattr(key, value)) this.fail("Can't set xattr");
      p = sp + 1;
      if (sp === end) break;
    }
  }

  /** tree_add_node: attach at its path; returns the new entry (none for the root). */
  private addNode(path: Buffer, inode: Inode, isHardlink: boolean): Dirent | null {
    if (path.length === 1 && path[0] === 0x2f) {
      if (!inode.isDir()) this.fail("Root must be a directory");
      if (this.root) this.fail("Can't have multiple roots");
      this.root = inode;
      return null;
    }
    if (!this.root) this.fail("Root node not present");
    const { parents, name } = splitPath(path);
    let dir: Inode | undefined = this.root;
    let parentIsDir = true;
    for (const comp of parents) {
      const ent: Dirent | undefined = dir.lookup(comp);
      if (!ent) this.fail(`Parent directory missing for ${printable(path)}`);
      if (ent.hardlink || !ent.inode.isDir()) {
        // Upstream would find no children here (a non-directory), unless
        // this is the last component: then the parent is not a directory.
        if (comp !== parents[parents.length - 1]) this.fail(`Parent directory missing for ${printable(path)}`);
        parentIsDir = false;
        break;
      }
      dir = ent.inode;
    }
    if (!parentIsDir) this.fail(`Parent must be a directory for ${printable(path)}`);
    if (isDot(name)) this.fail(`Invalid . or .. in path: ${printable(path)}`);
    if (name.length === 0 || name.length > MAX_NAME_LENGTH) this.fail("Can't add child");
    const nameCopy = name;
    if (!dir!.addEntry(nameCopy, inode, isHardlink)) this.fail(`Path ${printable(path)} already exist`);
    return dir!.lookup(nameCopy)!;
  }

  /** Resolve hardlinks once every line is read (forward references work). */
  finish(): Inode {
    if (!this.root) throw new CfsError(`${this.source}: No files in dump file`);
    // Upstream resolves its fixups last line first.
    for (let i = this.fixups.length - 1; i >= 0; i--) {
      const fx = this.fixups[i]!;
      if (fx.target === null) this.fail("No target path for the hardlink", fx.line);
      const found = this.lookupPath(fx.target);
      if (!found) this.fail(`No target at ${printable(fx.target)} for hardlink`, fx.line);
      if (found === fx.ent) this.fail(`Self-referential hardlink ${printable(fx.target)}`, fx.line);
      fx.linkTo = found instanceof Inode ? { name: Buffer.alloc(0), inode: found, hardlink: false } : found;
    }
    // Follow chains to the inode that owns the data.
    const byEnt = new Map<Dirent, HardlinkFixup>();
    for (const fx of this.fixups) byEnt.set(fx.ent, fx);
    for (const fx of this.fixups) {
      let cur: Dirent = fx.linkTo!;
      let steps = 0;
      while (cur.hardlink) {
        const next = byEnt.get(cur);
        if (!next || ++steps > this.fixups.length) this.fail("cannot write file: hardlink loop", fx.line);
        cur = next.linkTo!;
      }
      fx.ent.inode = cur.inode;
    }
    return this.root;
  }
}

/** Paths in messages: bytes as they would be escaped in a dumpfile. */
function printable(b: Buffer): string {
  let s = "";
  for (const c of b) s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, "0")}`;
  return s;
}

export function parseDumpfile(data: Buffer, opts: ParseOptions = {}): Inode {
  return new DumpfileParser(opts).parse(data);
}
