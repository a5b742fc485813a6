/**
 * composefs-dump(5) parser with the acceptance rules of upstream
 * `mkcomposefs --from-file` (tools/mkcomposefs.c tree_from_dump_line),
 * including its strict mode (CFS_PARSE_STRICT).
 *
 * Deliberate difference: a DIGEST field must be exactly 64 hex digits (or `-`,
 * or empty); upstream silently uses uninitialised bytes for anything shorter.
 */
import fs from "node:fs";
import { CfsError, describeSystemError } from "../util/errors.js";
import { readSyncWaiting } from "../util/read-sync.js";
import {
  Inode,
  isValidFileType,
  EXTERNAL_XATTR_BUDGET,
  MAX_NAME_LENGTH,
  NO_XATTRS,
  XattrKeys,
  type Xattr,
  PATH_MAX,
  S_IFBLK,
  S_IFCHR,
  S_IFLNK,
  S_IFMT,
  type Dirent,
} from "../model/inode.js";
import { DumpSyntaxError, hasEscape, unescape } from "./escape.js";

/** Size of the reads of parseFd. */
const READ_CHUNK = 1 << 20;

/**
 * Longest line parseFd reads. Nothing else bounds a path (each name is at
 * most 255 bytes, four times that escaped, but not their number); beyond
 * this a line is refused rather than held in an ever larger buffer.
 */
export const MAX_LINE = 64 << 20;

/** Size of the chunks the tree's bytes are copied into. */
const ARENA_CHUNK = 256 * 1024;

/** Largest inline content a dumpfile may carry (LCFS_INLINE_CONTENT_MAX). */
export const DUMP_INLINE_CONTENT_MAX = 5000;

export interface ParseOptions {
  /** Upstream's CFS_PARSE_STRICT. */
  strict?: boolean;
  /** Name used in error messages. */
  source?: string;
}

const U64_MASK = (1n << 64n) - 1n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * strtoull(3) on buf[start,end): optional leading white space and sign, then
 * digits of the base. The value is returned as a number when it is below
 * 2^53, else as NOT_SMALL with the value in `bigValue`; `parsedAll` tells
 * whether the whole field was a number (upstream's "Invalid integer" test).
 */
const NOT_SMALL = -1;
let bigValue = 0n;
let parsedAll = true;

function strtoull(buf: Buffer, start: number, end: number, base: 8 | 10): number {
  const len = end - start;
  if (len > 0 && len <= 15) {
    let v = 0;
    let j = start;
    for (; j < end; j++) {
      const d = buf[j]! - 0x30;
      if (d < 0 || d >= base) break;
      v = v * base + d;
    }
    if (j === end) {
      parsedAll = true;
      return v;
    }
  }
  let i = start;
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
  if (i === digitsStart) {
    parsedAll = false; // no conversion: endptr = start
    return 0;
  }
  if (overflow) v = U64_MASK;
  else if (neg) v = (-v) & U64_MASK;
  parsedAll = i === end;
  // parse_int_field: anything after the digits makes the field an error worth 0.
  if (!parsedAll) return 0;
  if (v <= MAX_SAFE) return Number(v);
  bigValue = v;
  return NOT_SMALL;
}

/** BigInts of small sizes, made once (every inode has one). */
const SMALL_BIGINTS: bigint[] = new Array<bigint>(8192);
function smallBigInt(n: number): bigint {
  if (n >= 8192) return BigInt(n);
  let v = SMALL_BIGINTS[n];
  if (v === undefined) v = SMALL_BIGINTS[n] = BigInt(n);
  return v;
}

/** The low 32 bits of a strtoull result. */
function low32(n: number): number {
  // ToUint32 is the value modulo 2^32, and keeps small values small integers
  // (a `%` result is a double, which would box every field it is stored in).
  return n === NOT_SMALL ? Number(bigValue & 0xffffffffn) >>> 0 : n >>> 0;
}

interface HardlinkFixup {
  ent: Dirent;
  path: Buffer;
  target: Buffer | null;
  line: number;
  /** Set while resolving: the entry the link points at (may be a link itself). */
  linkTo?: Dirent;
  /** Set once resolved: the inode that owns the data at the end of the chain. */
  owner?: Inode;
}

/** A C string: everything up to the first NUL. */
function cstr(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

/** Start and end of the eleven fixed fields of the line being parsed. */
const FIELDS = new Int32Array(22);

/** An optional field: `-` is unset (null), anything else is unescaped. */
function optionalField(buf: Buffer, f: number): Buffer | null {
  const s = FIELDS[2 * f]!;
  const e = FIELDS[2 * f + 1]!;
  if (e - s === 1 && buf[s] === 0x2d) return null;
  return unescape(buf, s, e);
}

function intError(buf: Buffer, s: number, e: number): string {
  return `Invalid integer ${buf.toString("latin1", s, e)}`;
}

/** Value of each byte as a hex digit, either case; -1 for any other byte. */
const HEX_VALUE = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[0x30 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[0x41 + i] = HEX_VALUE[0x61 + i] = 10 + i;

/** Exactly 64 hex digits, either case, to 32 bytes; null otherwise. */
function parseDigest(f: Buffer, s = 0, e = f.length): Buffer | null {
  if (e - s !== 64) return null;
  const out = Buffer.allocUnsafe(32);
  for (let i = 0; i < 32; i++) {
    const hi = HEX_VALUE[f[s + 2 * i]!]!;
    const lo = HEX_VALUE[f[s + 2 * i + 1]!]!;
    if (hi < 0 || lo < 0) return null;
    out[i] = (hi << 4) | lo;
  }
  return out;
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
    this.nextNul = data.indexOf(0);
    this.nextEsc = data.indexOf(0x5c);
    this.input = data;
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
    const root = this.finish();
    this.input = null;
    return root;
  }

  /**
   * Parse a dumpfile read from a file descriptor a chunk at a time: the
   * input is never whole in memory. `what` names the file in read errors.
   */
  parseFd(fd: number, what: string): Inode {
    let buf = Buffer.alloc(READ_CHUNK);
    let have = 0;
    for (;;) {
      if (have === buf.length) {
        // One line longer than the buffer: make room for it, unless it is
        // already refused (a NUL byte in it, or too long).
        const nul = buf.indexOf(0);
        if (nul >= 0 && nul < have) this.fail(`Invalid embedded NUL character at position ${nul}`, this.lineNo + 1);
        if (buf.length >= MAX_LINE) this.fail(`Line longer than ${MAX_LINE} bytes`, this.lineNo + 1);
        const bigger = Buffer.alloc(buf.length * 2);
        buf.copy(bigger, 0, 0, have);
        buf = bigger;
      }
      let n: number;
      try {
        n = readSyncWaiting(fd, buf, have, buf.length - have);
      } catch (e) {
        throw describeSystemError(e, what);
      }
      if (n === 0) break;
      const end = have + n;
      this.input = buf;
      this.nextNul = buf.subarray(0, end).indexOf(0);
      this.nextEsc = buf.subarray(0, end).indexOf(0x5c);
      // Every complete line in buf[0, end); the rest moves to the front.
      let pos = 0;
      for (;;) {
        let nl = buf.indexOf(0x0a, pos);
        if (nl >= end) nl = -1;
        if (nl < 0) break;
        this.lineNo++;
        this.parseLineChecked(buf, pos, nl);
        pos = nl + 1;
      }
      buf.copy(buf, 0, pos, end);
      have = end - pos;
    }
    if (have > 0) {
      this.lineNo++;
      if (this.strict) this.fail("Missing trailing newline");
      this.input = buf;
      this.nextNul = buf.subarray(0, have).indexOf(0);
      this.nextEsc = buf.subarray(0, have).indexOf(0x5c);
      this.parseLineChecked(buf, 0, have);
    }
    const root = this.finish();
    this.input = null;
    return root;
  }

  /** Where the next NUL byte of the input is (-1: none), so lines need no scan of their own. */
  private nextNul = -1;
  /** The same for the next backslash, and whether the line at hand has one (else no field needs unescaping). */
  private nextEsc = -1;
  private esc = false;

  private parseLineChecked(data: Buffer, start: number, end: number): void {
    try {
      if (this.nextNul >= 0 && this.nextNul < start) this.nextNul = data.indexOf(0, start);
      if (this.nextEsc >= 0 && this.nextEsc < start) this.nextEsc = data.indexOf(0x5c, start);
      this.esc = this.nextEsc >= 0 && this.nextEsc < end;
      this.parseLine(data, start, end);
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
    const nul = this.nextNul;
    if (nul >= 0 && nul < end) {
      this.fail(`Invalid embedded NUL character at position ${nul - start}`);
    }
    // Eleven fixed fields, each cut at the next single space.
    const F = FIELDS;
    let p = start;
    // A loop, not indexOf: fields are short, and a native call each costs more.
    for (let f = 0; f < 22; f += 2) {
      F[f] = p;
      let q = p;
      while (q < end && buf[q] !== 0x20) q++;
      F[f + 1] = q;
      p = q < end ? q + 1 : end;
    }

    // The path: a range of the input, or of its unescaped copy.
    let pb = buf;
    let ps = F[0]!;
    let pe = F[1]!;
    const esc = this.esc;
    if (esc && hasEscape(buf, ps, pe)) {
      pb = cstr(unescape(buf, ps, pe));
      ps = 0;
      pe = pb.length;
    }
    if (pe === ps) this.fail("Invalid empty path");

    let modeStart = F[4]!;
    let isHardlink = false;
    if (F[5]! > modeStart && buf[modeStart] === 0x40) {
      isHardlink = true;
      modeStart++;
    }
    // Upstream reports a failed integer only when the value parsed as 0 and
    // keeps the message around until it is cleared: reproduce that.
    let err: string | null = null;
    const modeV = strtoull(buf, modeStart, F[5]!, 8);
    if (!parsedAll) err = intError(buf, modeStart, F[5]!);
    if (modeV === 0 && err) this.fail(err);
    const mode = low32(modeV);
    if (!isValidFileType(mode)) this.fail(`Invalid mode ${mode.toString(8)}`);
    const type = mode & S_IFMT;
    const inode = new Inode(mode, NO_XATTRS);

    const ent = this.addNode(pb, ps, pe, inode, isHardlink);
    err = null;

    if (isHardlink) {
      if (inode.isDir()) this.fail("Directories can't be hardlinked");
      const target = optionalField(buf, 8);
      this.fixups.push({ ent: ent!, path: this.own(pb.subarray(ps, pe)), target: target === null ? null : this.own(cstr(target)), line: this.lineNo });
      return;
    }

    const sizeN = strtoull(buf, F[2]!, F[3]!, 10);
    const size = sizeN === NOT_SMALL ? bigValue : smallBigInt(sizeN);
    if (!parsedAll) err = intError(buf, F[2]!, F[3]!);
    if (sizeN === 0 && err) this.fail(err);
    const nlink = strtoull(buf, F[6]!, F[7]!, 10);
    if (!parsedAll) err = intError(buf, F[6]!, F[7]!);
    const nlink32 = low32(nlink);
    if (nlink === 0 && err) this.fail(err);
    const uid = strtoull(buf, F[8]!, F[9]!, 10);
    if (!parsedAll) err = intError(buf, F[8]!, F[9]!);
    const uid32 = low32(uid);
    if (uid === 0 && err) this.fail(err);
    const gid32 = low32(strtoull(buf, F[10]!, F[11]!, 10));
    if (!parsedAll) err = intError(buf, F[10]!, F[11]!);
    if (uid === 0 && err) this.fail(err);
    const rdevN = strtoull(buf, F[12]!, F[13]!, 10);
    const rdevNonZero = rdevN !== 0;
    const rdev32 = low32(rdevN);
    if (!parsedAll) err = intError(buf, F[12]!, F[13]!);
    if (uid === 0 && err) this.fail(err);

    // MTIME: SEC.NSEC, both parsed as unsigned 64-bit and then narrowed.
    {
      const s = F[14]!;
      const e = F[15]!;
      let dot = s;
      while (dot < e && buf[dot] !== 0x2e) dot++;
      let merr: string | null = null;
      const sec = strtoull(buf, s, dot, 10);
      const secBig = sec === NOT_SMALL ? bigValue : this.secondsOf(sec);
      if (!parsedAll) merr = intError(buf, s, dot);
      if (sec === 0 && merr) this.fail(merr);
      const ns = dot < e ? dot + 1 : e;
      const nsec = strtoull(buf, ns, e, 10);
      if (!parsedAll) merr = intError(buf, ns, e);
      if (nsec === 0 && merr) this.fail(merr);
      inode.mtimeSec = sec === NOT_SMALL || sec > 0x7fffffffffff ? BigInt.asIntN(64, secBig) : secBig;
      inode.mtimeNsec = low32(nsec);
    }

    const payload = this.ownedField(buf, 8);
    const content = this.ownedField(buf, 9);
    if (content !== null && BigInt(content.length) !== size) {
      this.fail(`Invalid content size ${content.length}, must match size ${BigInt.asIntN(64, size)}`);
    }
    // DIGEST: parsed in place unless it is escaped.
    let digestBuf: Buffer | null = buf;
    let ds = F[20]!;
    let de = F[21]!;
    if (de - ds === 1 && buf[ds] === 0x2d) digestBuf = null;
    else if (esc && hasEscape(buf, ds, de)) {
      digestBuf = unescape(buf, ds, de);
      ds = 0;
      de = digestBuf.length;
    }

    if (type !== S_IFLNK) inode.size = size;
    inode.nlink = nlink32;
    inode.uid = uid32;
    inode.gid = gid32;
    if (type === S_IFCHR || type === S_IFBLK) {
      inode.rdev = rdev32;
    } else if (this.strict && rdevNonZero) {
      this.fail("Non-zero devnum on non-device");
    }

    if (type === S_IFLNK) {
      const target = payload === null ? null : cstr(payload);
      if (target === null || target.length === 0 || target.length >= PATH_MAX) this.fail("Invalid symlink");
      inode.payload = target;
      inode.size = smallBigInt(target.length);
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

    if (digestBuf !== null && de > ds) {
      const d = parseDigest(digestBuf, ds, de);
      if (!d) this.fail(`Invalid digest ${digestBuf.toString("latin1", ds, de)}: must be 64 hex digits`);
      inode.digest = d;
    }

    // The rest of the line is the xattrs; upstream caps its length.
    if (end - p > 0xffff) this.fail("Too many xattrs");
    if (p >= end) return;
    // Gathered in a list kept from line to line (Inode.setXattr's rules),
    // then copied to an exact-size list of the inode's own.
    const xs = this.scratch;
    xs.length = 0;
    const keys = this.xattrKeys;
    keys.reset();
    let used = 0;
    while (p < end) {
      let sp = buf.indexOf(0x20, p);
      if (sp < 0 || sp > end) sp = end;
      const eq = buf.indexOf(0x3d, p);
      if (eq < 0 || eq >= sp) this.fail("Missing = in xattr");
      const key = esc && hasEscape(buf, p, eq) ? this.intern(cstr(unescape(buf, p, eq))) : this.internRange(buf, p, eq);
      const value = esc && hasEscape(buf, eq + 1, sp) ? this.intern(unescape(buf, eq + 1, sp)) : this.internRange(buf, eq + 1, sp);
      used = keys.set(xs, used, key, value, EXTERNAL_XATTR_BUDGET);
      if (used < 0) this.fail("Can't set xattr");
      p = sp + 1;
      if (sp === end) break;
    }
    inode.xattrs = xs.slice();
    inode.xattrBudgetUsed = used;
  }

  private readonly scratch: Xattr[] = [];
  private readonly xattrKeys = new XattrKeys();

  /**
   * tree_add_node: attach the path pb[ps, pe) (never empty); returns the new
   * entry (none for the root).
   */
  private addNode(pb: Buffer, ps: number, pe: number, inode: Inode, isHardlink: boolean): Dirent | null {
    if (pe - ps === 1 && pb[ps] === 0x2f) {
      if (!inode.isDir()) this.fail("Root must be a directory");
      if (this.root) this.fail("Can't have multiple roots");
      this.root = inode;
      return null;
    }
    if (!this.root) this.fail("Root node not present");
    // Dumpfiles list a directory's entries together: resolve each parent
    // path once (the same bytes always resolve to the same directory).
    let slash = pe - 1;
    while (slash >= ps && pb[slash] !== 0x2f) slash--;
    const parentEnd = slash < ps ? ps : slash;
    const lp = this.lastParentBytes;
    if (lp !== null && lp.length === parentEnd - ps) {
      let i = 0;
      const n = lp.length;
      while (i < n && lp[i] === pb[ps + i]) i++;
      if (i === n) return this.attach(this.lastParentDir!, pb, ps, pe, slash + 1, inode, isHardlink);
    }
    // lookup_parent_path: each component followed by a slash, one at a
    // time (a path of millions of components is refused at the first
    // missing one, not split first).
    let dir: Inode = this.root;
    let i = ps;
    for (;;) {
      while (i < pe && pb[i] === 0x2f) i++;
      const start = i;
      while (i < pe && pb[i] !== 0x2f) i++;
      if (i >= pe) break; // the name
      const ent: Dirent | undefined = dir.lookup(pb.subarray(start, i));
      if (!ent) this.fail(`Parent directory missing for ${printable(pb.subarray(ps, pe))}`);
      if (ent.hardlink || !ent.inode.isDir()) {
        // Upstream would find no children here (a non-directory), unless
        // this is the last component before the name (no slash after it):
        // then the parent is not a directory.
        let j = i;
        while (j < pe && pb[j] === 0x2f) j++;
        if (j <= slash) this.fail(`Parent directory missing for ${printable(pb.subarray(ps, pe))}`);
        this.fail(`Parent must be a directory for ${printable(pb.subarray(ps, pe))}`);
      }
      dir = ent.inode;
    }
    this.lastParentBytes = pb === this.input ? this.copyOut(pb, ps, parentEnd) : pb.subarray(ps, parentEnd);
    this.lastParentDir = dir;
    return this.attach(dir, pb, ps, pe, slash + 1, inode, isHardlink);
  }

  private lastParentBytes: Buffer | null = null;
  private lastParentDir: Inode | null = null;

  /**
   * One Buffer for each distinct short xattr key or value: trees repeat the
   * same few (SELinux labels, capabilities), and each Buffer costs far more
   * than its bytes.
   */
  private readonly interned = new Map<string, Buffer>();
  private intern(b: Buffer): Buffer {
    if (b.length > 128) return this.own(b);
    const k = b.toString("latin1");
    const hit = this.interned.get(k);
    if (hit) return hit;
    b = this.own(b);
    if (this.interned.size < 65536) this.interned.set(k, b);
    return b;
  }

  /** intern(buf[s, e)) without a Buffer for the range when the bytes are known already. */
  private internRange(buf: Buffer, s: number, e: number): Buffer {
    if (e - s > 128) return this.own(buf.subarray(s, e));
    const k = buf.toString("latin1", s, e);
    const hit = this.interned.get(k);
    if (hit) return hit;
    const b = buf === this.input ? this.copyOut(buf, s, e) : buf.subarray(s, e);
    if (this.interned.size < 65536) this.interned.set(k, b);
    return b;
  }

  /** An optional field the tree keeps: `-` is unset, anything else its own (unescaped) bytes. */
  private ownedField(buf: Buffer, f: number): Buffer | null {
    const s = FIELDS[2 * f]!;
    const e = FIELDS[2 * f + 1]!;
    if (e - s === 1 && buf[s] === 0x2d) return null;
    if (this.esc && hasEscape(buf, s, e)) return unescape(buf, s, e);
    return buf === this.input ? this.copyOut(buf, s, e) : buf.subarray(s, e);
  }

  /**
   * What the tree keeps (names, payloads, contents, xattrs) is copied out of
   * the input into chunks of its own: the input, mostly numbers and digests
   * in text, can go once it is parsed.
   */
  private input: Buffer | null = null;
  private arena = Buffer.alloc(0);
  private arenaPos = 0;

  private copyOut(src: Buffer, s: number, e: number): Buffer {
    const len = e - s;
    if (this.arenaPos + len > this.arena.length) {
      this.arena = Buffer.allocUnsafeSlow(Math.max(ARENA_CHUNK, len));
      this.arenaPos = 0;
    }
    const a = this.arena;
    const at = this.arenaPos;
    if (len > 64) a.set(src.subarray(s, e), at);
    else for (let i = 0; i < len; i++) a[at + i] = src[s + i]!;
    this.arenaPos = at + len;
    return a.subarray(at, at + len);
  }

  /** b itself, or its copy when it is a view of the input. */
  private own(b: Buffer): Buffer {
    const input = this.input;
    if (input === null || b.buffer !== input.buffer) return b;
    return this.copyOut(b, 0, b.length);
  }

  /** Shared BigInts for repeated mtimes. */
  private readonly seconds = new Map<number, bigint>();
  secondsOf(n: number): bigint {
    let v = this.seconds.get(n);
    if (v === undefined) {
      v = BigInt(n);
      if (this.seconds.size < 65536) this.seconds.set(n, v);
    }
    return v;
  }

  /** Add pb[nameStart, pe) to dir; pb[ps, pe) is the whole path (for messages). */
  private attach(dir: Inode, pb: Buffer, ps: number, pe: number, nameStart: number, inode: Inode, isHardlink: boolean): Dirent {
    const nameLen = pe - nameStart;
    if (nameLen === 0 || nameLen > MAX_NAME_LENGTH) this.fail("Can't add child");
    if (pb[nameStart] === 0x2e && (nameLen === 1 || (nameLen === 2 && pb[nameStart + 1] === 0x2e))) {
      this.fail(`Invalid . or .. in path: ${printable(pb.subarray(ps, pe))}`);
    }
    const name = pb === this.input ? this.copyOut(pb, nameStart, pe) : pb.subarray(nameStart, pe);
    const ent = dir.addEntry(name, inode, isHardlink);
    if (!ent) this.fail(`Path ${printable(pb.subarray(ps, pe))} already exist`);
    return ent;
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
    // Follow chains to the inode that owns the data. Every link of a chain
    // walked is resolved with it: a chain of n links is walked once, not
    // once from each of them (n^2 steps).
    const byEnt = new Map<Dirent, HardlinkFixup>();
    for (const fx of this.fixups) byEnt.set(fx.ent, fx);
    const chain: HardlinkFixup[] = [];
    for (const fx of this.fixups) {
      if (fx.owner) continue;
      chain.length = 0;
      chain.push(fx);
      let cur: Dirent = fx.linkTo!;
      let owner: Inode | undefined;
      while (cur.hardlink) {
        const next = byEnt.get(cur);
        if (!next || chain.length > this.fixups.length) this.fail("cannot write file: hardlink loop", fx.line);
        owner = next.owner;
        if (owner) break;
        chain.push(next);
        cur = next.linkTo!;
      }
      owner ??= cur.inode;
      // (A walk reads the inode only of the entry it ends at, never a link's.)
      for (const c of chain) c.owner = c.ent.inode = owner;
    }
    return this.root;
  }
}

/** Paths in messages: bytes as they would be escaped in a dumpfile. */
function printable(b: Buffer): string {
  // Runs of plain bytes are taken whole: a path may be megabytes long.
  const parts: string[] = [];
  let run = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c >= 0x20 && c < 0x7f) continue;
    if (i > run) parts.push(b.toString("latin1", run, i));
    parts.push(`\\x${c.toString(16).padStart(2, "0")}`);
    run = i + 1;
  }
  if (b.length > run) parts.push(b.toString("latin1", run, b.length));
  return parts.join("");
}

export function parseDumpfile(data: Buffer, opts: ParseOptions = {}): Inode {
  return new DumpfileParser(opts).parse(data);
}

/** Parse the dumpfile an open descriptor reads (standard input), a chunk at a time; `what` names it in read errors. */
export function parseDumpfileFd(fd: number, what: string, opts: ParseOptions = {}): Inode {
  return new DumpfileParser(opts).parseFd(fd, what);
}

/** Parse the dumpfile at `path`, read a chunk at a time (see parseFd). */
export function parseDumpfileFile(path: string, opts: ParseOptions = {}): Inode {
  let fd: number;
  try {
    fd = fs.openSync(path, "r");
  } catch (e) {
    throw describeSystemError(e, `open ${path}`);
  }
  try {
    return new DumpfileParser(opts).parseFd(fd, `open ${path}`);
  } finally {
    fs.closeSync(fd);
  }
}
