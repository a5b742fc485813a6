/**
 * SELinux file labelling as libselinux 3.4 does it (`selabel_lookup` with the
 * file backend, `label_file.c`/`label_file.h`), from the policy's text files
 * inside the tree being imaged.
 *
 * - The policy: `etc/selinux/config` (`SELINUXTYPE=`), then
 *   `etc/selinux/<type>/contexts/files/file_contexts`, `.homedirs`, `.local`
 *   (that order), and the path equivalences of `.subs` and `.subs_dist`.
 * - The order: libselinux moves the specs without regex meta characters after
 *   all the others (keeping file order within both groups) and scans from the
 *   end: the last matching spec wins, and any matching "exact" spec beats any
 *   regex.
 * - The regexes: PCRE2 syntax, compiled by libselinux as `^` + regex + `$`
 *   with PCRE2_DOTALL on 8-bit subjects (no UTF). They are parsed here and
 *   re-emitted as JavaScript regexes over a latin1 decoding of the path (one
 *   char per byte), with every character class spelled out as a byte set, so
 *   that `.`, `$`, `\s`, `\w`, POSIX classes, caseless matching etc. mean
 *   what PCRE2 means. What cannot be translated faithfully is refused.
 * - The speed: specs are indexed by their literal prefix (a trie walked along
 *   the key) and filtered by the bytes and the plain run they require, so a
 *   lookup runs few regexes; regexes are compiled when first tried; a tree
 *   is relabelled directory by directory from what the children of a
 *   directory share (DirContext). doc/selinux.md says why each shortcut
 *   gives libselinux's answer.
 */
import { CfsError } from "../util/errors.js";
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, type Inode } from "../model/inode.js";

// ---------------------------------------------------------------------------
// Byte sets

/** A set of byte values (0..255) as 8 words of 32 bits. */
type ByteSet = Uint32Array;

function newSet(): ByteSet {
  return new Uint32Array(8);
}
function setAdd(s: ByteSet, c: number): void {
  s[c >>> 5]! |= 1 << (c & 31);
}
function setHas(s: ByteSet, c: number): boolean {
  return (s[c >>> 5]! & (1 << (c & 31))) !== 0;
}
function setAddRange(s: ByteSet, lo: number, hi: number): void {
  for (let c = lo; c <= hi; c++) setAdd(s, c);
}
function setUnion(a: ByteSet, b: ByteSet): void {
  for (let i = 0; i < 8; i++) a[i]! |= b[i]!;
}
function setNot(s: ByteSet): ByteSet {
  const r = newSet();
  for (let i = 0; i < 8; i++) r[i] = ~s[i]! >>> 0;
  return r;
}
function setOf(chars: string): ByteSet {
  const s = newSet();
  for (let i = 0; i < chars.length; i++) setAdd(s, chars.charCodeAt(i));
  return s;
}
function setSize(s: ByteSet): number {
  let n = 0;
  for (let i = 0; i < 8; i++) {
    let w = s[i]!;
    w = w - ((w >>> 1) & 0x55555555);
    w = (w & 0x33333333) + ((w >>> 2) & 0x33333333);
    n += (((w + (w >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
  }
  return n;
}
/** The one byte of a single-byte set, or -1. */
function setSingle(s: ByteSet): number {
  let found = -1;
  for (let i = 0; i < 8; i++) {
    const w = s[i]!;
    if (w === 0) continue;
    if (found >= 0 || (w & (w - 1)) !== 0) return -1;
    found = i * 32 + (31 - Math.clz32(w));
  }
  return found;
}
/** Add the other case of every ASCII letter (PCRE2's default tables fold only ASCII). */
function setFold(s: ByteSet): void {
  for (let c = 0x41; c <= 0x5a; c++) {
    if (setHas(s, c) || setHas(s, c + 32)) {
      setAdd(s, c);
      setAdd(s, c + 32);
    }
  }
}

// PCRE2's default character tables (the "C" locale): ASCII only.
const SET_DIGIT = setOf("0123456789");
const SET_LOWER = (() => {
  const s = newSet();
  setAddRange(s, 0x61, 0x7a);
  return s;
})();
const SET_UPPER = (() => {
  const s = newSet();
  setAddRange(s, 0x41, 0x5a);
  return s;
})();
const SET_ALPHA = (() => {
  const s = newSet();
  setUnion(s, SET_LOWER);
  setUnion(s, SET_UPPER);
  return s;
})();
const SET_ALNUM = (() => {
  const s = newSet();
  setUnion(s, SET_ALPHA);
  setUnion(s, SET_DIGIT);
  return s;
})();
const SET_WORD = (() => {
  const s = newSet();
  setUnion(s, SET_ALNUM);
  setAdd(s, 0x5f);
  return s;
})();
/** \s and [:space:]: HT LF VT FF CR and space. */
const SET_SPACE = setOf("\t\n\v\f\r ");
/** \h in 8-bit non-UTF mode: HT, space, NBSP. */
const SET_HSPACE = setOf("\t \xa0");
/** \v in 8-bit non-UTF mode: LF VT FF CR NEL. */
const SET_VSPACE = setOf("\n\v\f\r\x85");
const SET_XDIGIT = setOf("0123456789abcdefABCDEF");
const SET_BLANK = setOf("\t ");
const SET_CNTRL = (() => {
  const s = newSet();
  setAddRange(s, 0, 0x1f);
  setAdd(s, 0x7f);
  return s;
})();
const SET_GRAPH = (() => {
  const s = newSet();
  setAddRange(s, 0x21, 0x7e);
  return s;
})();
const SET_PRINT = (() => {
  const s = newSet();
  setAddRange(s, 0x20, 0x7e);
  return s;
})();
const SET_PUNCT = (() => {
  const s = newSet();
  for (let c = 0x21; c <= 0x7e; c++) if (!setHas(SET_ALNUM, c)) setAdd(s, c);
  return s;
})();
const SET_ASCII = (() => {
  const s = newSet();
  setAddRange(s, 0, 0x7f);
  return s;
})();
const SET_ALL = setNot(newSet());
const SET_NOT_LF = setNot(setOf("\n"));

/** One set per byte, and the same with ASCII case folded: shared, never modified. */
const CHAR_SETS: ByteSet[] = [];
const FOLDED_CHAR_SETS: ByteSet[] = [];
for (let c = 0; c < 256; c++) {
  const s = newSet();
  setAdd(s, c);
  CHAR_SETS.push(s);
  const f = newSet();
  setAdd(f, c);
  setFold(f);
  FOLDED_CHAR_SETS.push(f);
}

const POSIX_CLASSES: Record<string, ByteSet> = {
  alpha: SET_ALPHA,
  lower: SET_LOWER,
  upper: SET_UPPER,
  alnum: SET_ALNUM,
  ascii: SET_ASCII,
  blank: SET_BLANK,
  cntrl: SET_CNTRL,
  digit: SET_DIGIT,
  graph: SET_GRAPH,
  print: SET_PRINT,
  punct: SET_PUNCT,
  space: SET_SPACE,
  word: SET_WORD,
  xdigit: SET_XDIGIT,
};

function hex2(c: number): string {
  return "\\x" + (c < 16 ? "0" : "") + c.toString(16);
}

function charToJs(c: number): string {
  if ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f || c === 0x2f)
    return String.fromCharCode(c);
  return hex2(c);
}

function setToJs(s: ByteSet): string {
  const n = setSize(s);
  if (n === 256) return "[\\s\\S]";
  if (n === 0) return "[]";
  const negate = n > 128;
  const t = negate ? setNot(s) : s;
  if (!negate && n === 1) return charToJs(setSingle(t));
  let out = negate ? "[^" : "[";
  for (let c = 0; c < 256; c++) {
    if (!setHas(t, c)) continue;
    let e = c;
    while (e < 255 && setHas(t, e + 1)) e++;
    out += hex2(c);
    if (e > c) out += (e > c + 1 ? "-" : "") + hex2(e);
    c = e;
  }
  // A negated set is complemented within 0..255 only: the subject never has more.
  return out + "]";
}

// ---------------------------------------------------------------------------
// PCRE2 pattern -> syntax tree

type Node =
  | { t: "set"; s: ByteSet }
  | { t: "seq"; items: Node[] }
  | { t: "alt"; alts: Node[] }
  | { t: "group"; body: Node }
  | { t: "look"; behind: boolean; neg: boolean; body: Node }
  | { t: "atomic"; body: Node }
  | { t: "rep"; body: Node; min: number; max: number; lazy: boolean; possessive: boolean }
  | { t: "assert"; kind: "start" | "end" | "endz" | "mstart" | "mend" | "wordb" | "nwordb" };

interface Flags {
  i: boolean;
  m: boolean;
  s: boolean;
  x: boolean;
  xx: boolean;
  n: boolean;
  U: boolean;
  J: boolean;
}

/**
 * Set nodes of one byte (and of it with ASCII case folded), and of "." with
 * and without (?s): shared by every tree, as nothing modifies a set node.
 */
const CHAR_NODES: Node[] = CHAR_SETS.map((s) => ({ t: "set", s }));
const FOLDED_CHAR_NODES: Node[] = FOLDED_CHAR_SETS.map((s) => ({ t: "set", s }));
const DOT_NODE: Node = { t: "set", s: SET_ALL };
const DOT_NOT_LF_NODE: Node = { t: "set", s: SET_NOT_LF };

/** The escape result of each byte as a literal char (shared: never modified). */
const CHAR_ESCAPES: Escape[] = Array.from({ length: 256 }, (_, c) => ({ k: "char", c }));

/** A pattern PCRE2 rejects, or one that cannot be matched the same way here. */
class RegexRefused extends Error {}

const MAX_REPEAT = 65535;

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}
function isAlnum(c: number): boolean {
  return setHas(SET_ALNUM, c);
}
function isOctal(c: number): boolean {
  return c >= 0x30 && c <= 0x37;
}
function xdigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

type Escape =
  | { k: "char"; c: number }
  | { k: "set"; s: ByteSet }
  | { k: "assert"; a: "start" | "end" | "endz" | "wordb" | "nwordb" }
  | { k: "N" }
  | { k: "Q" }
  | { k: "E" };

/**
 * Parser for the subset of PCRE2 10.42 syntax (8-bit, no UTF) that has a
 * faithful translation; anything else throws RegexRefused with a reason.
 */
class PcreParser {
  private pos = 0;
  private flags: Flags;
  private inQ = false;
  private captures = 0;
  private names: Set<string> | null = null;
  /** Whether the pattern has an atomic group or a possessive quantifier (the emitter checks those). */
  atomic = false;

  constructor(
    private readonly src: string,
    private readonly offsetBase = 0,
  ) {
    this.flags = { i: false, m: false, s: true, x: false, xx: false, n: false, U: false, J: false };
  }

  private fail(msg: string): never {
    throw new RegexRefused(`${msg} at offset ${Math.max(0, this.pos - this.offsetBase)}`);
  }
  private peek(off = 0): number {
    const p = this.pos + off;
    return p < this.src.length ? this.src.charCodeAt(p) : -1;
  }

  parse(): Node {
    const n = this.parseAlt();
    if (this.pos < this.src.length) this.fail("unmatched closing parenthesis");
    return n;
  }

  private lit(c: number): Node {
    return (this.flags.i ? FOLDED_CHAR_NODES : CHAR_NODES)[c]!;
  }

  private parseAlt(): Node {
    const first = this.parseSeq();
    if (this.peek() !== 0x7c /* | */) return first;
    const alts: Node[] = [first];
    while (this.peek() === 0x7c) {
      this.pos++;
      alts.push(this.parseSeq());
    }
    return { t: "alt", alts };
  }

  /** Skip what PCRE2 skips before looking at the next item: \Q\E, \E, (?#...), /x space and comments. */
  private skipIgnorable(): void {
    for (;;) {
      const c = this.peek();
      if (this.inQ) {
        if (c === 0x5c && this.peek(1) === 0x45 /* \E */) {
          this.inQ = false;
          this.pos += 2;
          continue;
        }
        return;
      }
      if (c === 0x5c && (this.peek(1) === 0x51 || this.peek(1) === 0x45)) {
        this.inQ = this.peek(1) === 0x51;
        this.pos += 2;
        continue;
      }
      if (this.flags.x) {
        if (c >= 0 && setHas(SET_SPACE, c)) {
          this.pos++;
          continue;
        }
        if (c === 0x23 /* # */) {
          while (this.pos < this.src.length && this.src.charCodeAt(this.pos) !== 0x0a) this.pos++;
          if (this.pos < this.src.length) this.pos++;
          continue;
        }
      }
      if (c === 0x28 && this.peek(1) === 0x3f && this.peek(2) === 0x23 /* (?# */) {
        const end = this.src.indexOf(")", this.pos + 3);
        if (end < 0) this.fail("missing ) after (?# comment");
        this.pos = end + 1;
        continue;
      }
      return;
    }
  }

  /** {n}, {n,}, {n,m} at pos (pointing at "{"): the counts, or null if not a quantifier. */
  private readRepeat(): { min: number; max: number; end: number } | null {
    const src = this.src;
    let p = this.pos + 1;
    let comma = false;
    for (;; p++) {
      if (p >= src.length) return null;
      const c = src.charCodeAt(p);
      if (isDigit(c)) continue;
      if (c === 0x7d) break;
      if (c === 0x2c && !comma) {
        comma = true;
        continue;
      }
      return null;
    }
    const body = src.slice(this.pos + 1, p);
    const [a, b] = body.split(",");
    if (a === undefined || a.length === 0) return null;
    const min = Number(a);
    if (min > MAX_REPEAT) this.fail("number too big in {} quantifier");
    let max = min;
    if (b !== undefined) {
      if (b.length === 0) max = Infinity;
      else {
        max = Number(b);
        if (max > MAX_REPEAT) this.fail("number too big in {} quantifier");
        if (max < min) this.fail("numbers out of order in {} quantifier");
      }
    }
    return { min, max, end: p + 1 };
  }

  private parseSeq(): Node {
    const items: Node[] = [];
    // What the last item allows: "atom" may take a quantifier, "quant" a
    // lazy/possessive modifier, "none" neither.
    let last: "none" | "atom" | "quant" = "none";
    for (;;) {
      this.skipIgnorable();
      if (this.pos >= this.src.length) break;
      const c = this.src.charCodeAt(this.pos);
      if (this.inQ) {
        this.pos++;
        items.push(this.lit(c));
        last = "atom";
        continue;
      }
      if (last === "quant" && (c === 0x3f || c === 0x2b)) {
        this.pos++;
        const r = items[items.length - 1] as Extract<Node, { t: "rep" }>;
        if (c === 0x3f) r.lazy = !r.lazy;
        else {
          r.possessive = true;
          r.lazy = false; // possessive is greedy, (?U) or not
          this.atomic = true;
        }
        last = "none";
        continue;
      }
      if (c === 0x7c || c === 0x29) break;
      let q: { min: number; max: number; end: number } | null = null;
      if (c === 0x2a) q = { min: 0, max: Infinity, end: this.pos + 1 };
      else if (c === 0x2b) q = { min: 1, max: Infinity, end: this.pos + 1 };
      else if (c === 0x3f) q = { min: 0, max: 1, end: this.pos + 1 };
      else if (c === 0x7b) q = this.readRepeat();
      if (q) {
        if (last !== "atom") this.fail("quantifier does not follow a repeatable item");
        const body = items.pop()!;
        if (body.t === "look") this.fail("quantified assertion not supported");
        this.pos = q.end;
        items.push({ t: "rep", body, min: q.min, max: q.max, lazy: this.flags.U, possessive: false });
        last = "quant";
        continue;
      }
      this.pos++;
      switch (c) {
        case 0x5e /* ^ */:
          items.push({ t: "assert", kind: this.flags.m ? "mstart" : "start" });
          last = "none";
          break;
        case 0x24 /* $ */:
          items.push({ t: "assert", kind: this.flags.m ? "mend" : "end" });
          last = "none";
          break;
        case 0x2e /* . */:
          items.push(this.flags.s ? DOT_NODE : DOT_NOT_LF_NODE);
          last = "atom";
          break;
        case 0x5b /* [ */: {
          const cls = this.parseClass();
          // [[:<:]] and [[:>:]] are two items, \b and a lookaround: a quantifier takes the latter.
          if (cls.t === "seq") items.push(...cls.items);
          else items.push(cls);
          last = "atom";
          break;
        }
        case 0x28 /* ( */: {
          const g = this.parseGroup();
          if (g === null) {
            last = "none"; // an option setting such as (?i)
          } else {
            items.push(g);
            last = "atom";
          }
          break;
        }
        case 0x5c /* \ */: {
          const e = this.parseEscape(false);
          if (e.k === "char") {
            items.push(this.lit(e.c));
            last = "atom";
          } else if (e.k === "set") {
            items.push({ t: "set", s: e.s });
            last = "atom";
          } else if (e.k === "assert") {
            items.push({ t: "assert", kind: e.a });
            last = "none";
          } else if (e.k === "N") {
            if (this.peek() === 0x7b && !this.readRepeat()) this.fail("\\N{ is not supported");
            items.push({ t: "set", s: SET_NOT_LF });
            last = "atom";
          }
          break;
        }
        default:
          items.push(this.lit(c));
          last = "atom";
      }
    }
    return items.length === 1 ? items[0]! : { t: "seq", items };
  }

  /** After "(": a group node, or null for an option setting like "(?i)". */
  private parseGroup(): Node | null {
    const saved = { ...this.flags };
    let kind: "plain" | "capture" | "atomic" | "ahead" | "nahead" | "behind" | "nbehind" = "plain";
    const c = this.peek();
    if (c === 0x2a /* ( * */) this.fail("(*VERB) and alpha assertions are not supported");
    if (c !== 0x3f) {
      kind = this.flags.n ? "plain" : "capture";
    } else {
      this.pos++;
      const d = this.peek();
      const readName = (term: number): void => {
        const start = this.pos;
        while (this.pos < this.src.length && setHas(SET_WORD, this.src.charCodeAt(this.pos))) this.pos++;
        const name = this.src.slice(start, this.pos);
        if (this.peek() !== term) this.fail("syntax error in subpattern name");
        this.pos++;
        if (name.length === 0 || isDigit(name.charCodeAt(0)) || name.length > 32) this.fail("bad subpattern name");
        this.names ??= new Set();
        if (this.names.has(name) && !this.flags.J) this.fail("two named subpatterns have the same name");
        this.names.add(name);
        kind = "capture";
      };
      if (d === 0x3a /* : */) {
        this.pos++;
      } else if (d === 0x7c /* | */) {
        // Branch reset only renumbers captures, which nothing here refers to.
        this.pos++;
      } else if (d === 0x3e /* > */) {
        this.pos++;
        kind = "atomic";
      } else if (d === 0x3d /* = */) {
        this.pos++;
        kind = "ahead";
      } else if (d === 0x21 /* ! */) {
        this.pos++;
        kind = "nahead";
      } else if (d === 0x3c /* < */ && (this.peek(1) === 0x3d || this.peek(1) === 0x21)) {
        kind = this.peek(1) === 0x3d ? "behind" : "nbehind";
        this.pos += 2;
      } else if (d === 0x3c) {
        this.pos++;
        readName(0x3e);
      } else if (d === 0x27 /* ' */) {
        this.pos++;
        readName(0x27);
      } else if (d === 0x50 /* P */ && this.peek(1) === 0x3c) {
        this.pos += 2;
        readName(0x3e);
      } else if (d >= 0 && "imnsxJU-^".includes(String.fromCharCode(d))) {
        const f = this.flags;
        let on = true;
        let hyphenOk = true;
        if (this.peek() === 0x5e) {
          f.i = f.m = f.n = f.s = f.x = f.xx = false;
          hyphenOk = false;
          this.pos++;
        }
        const set: Partial<Flags> = {};
        for (;;) {
          const o = this.peek();
          if (o < 0) this.fail("missing )");
          if (o === 0x29 || o === 0x3a) break;
          this.pos++;
          const ch = String.fromCharCode(o);
          if (ch === "-") {
            if (!hyphenOk) this.fail("invalid hyphen in option setting");
            on = false;
            hyphenOk = false;
          } else if (ch === "x" && this.peek() === 0x78) {
            this.pos++;
            set.x = on;
            set.xx = on;
          } else if (ch === "x") {
            set.x = on;
            if (on) set.xx = false; // setting x alone clears xx
            else set.xx = false;
          } else if ("imnsJU".includes(ch)) {
            set[ch as "i" | "m" | "n" | "s" | "J" | "U"] = on;
          } else {
            this.fail("unrecognized character after (? or (?-");
          }
        }
        Object.assign(f, set);
        if (this.peek() === 0x29) {
          this.pos++;
          return null; // applies to the rest of the enclosing group
        }
        this.pos++; // ":"
      } else {
        this.fail("this (? construct is not supported (backreferences, recursion, conditionals, callouts)");
      }
    }
    if (kind === "capture") {
      if (this.captures >= 65535) this.fail("too many capturing groups");
      this.captures++;
    }
    const body = this.parseAlt();
    if (this.peek() !== 0x29) this.fail("missing closing parenthesis");
    this.pos++;
    this.flags = saved;
    switch (kind) {
      case "atomic":
        this.atomic = true;
        return { t: "atomic", body };
      case "ahead":
      case "nahead":
        return { t: "look", behind: false, neg: kind === "nahead", body };
      case "behind":
      case "nbehind":
        checkLookbehind(body, this);
        return { t: "look", behind: true, neg: kind === "nbehind", body };
      default:
        return { t: "group", body };
    }
  }

  refuse(msg: string): never {
    this.fail(msg);
  }

  /** After "\": one escape sequence (check_escape of PCRE2 10.42). */
  private parseEscape(inClass: boolean): Escape {
    if (this.pos >= this.src.length) this.fail("\\ at end of pattern");
    const c = this.src.charCodeAt(this.pos++);
    if (!isAlnum(c)) return CHAR_ESCAPES[c]!;
    const ch = String.fromCharCode(c);
    switch (ch) {
      case "a":
        return { k: "char", c: 0x07 };
      case "e":
        return { k: "char", c: 0x1b };
      case "f":
        return { k: "char", c: 0x0c };
      case "n":
        return { k: "char", c: 0x0a };
      case "r":
        return { k: "char", c: 0x0d };
      case "t":
        return { k: "char", c: 0x09 };
      case "d":
        return { k: "set", s: SET_DIGIT };
      case "D":
        return { k: "set", s: setNot(SET_DIGIT) };
      case "w":
        return { k: "set", s: SET_WORD };
      case "W":
        return { k: "set", s: setNot(SET_WORD) };
      case "s":
        return { k: "set", s: SET_SPACE };
      case "S":
        return { k: "set", s: setNot(SET_SPACE) };
      case "h":
      case "v":
        // PCRE2 10.42's auto-possessification takes \h and \v for disjoint
        // from \S (and \R from \s, ., \N) though \xa0 and \x85 are in
        // both in 8-bit mode: it mis-matches, and that cannot be mirrored.
        return this.fail(`\\${ch} is not supported (PCRE2 10.42 mis-optimizes it)`);
      case "H":
        return { k: "set", s: setNot(SET_HSPACE) };
      case "V":
        return { k: "set", s: setNot(SET_VSPACE) };
      case "Q":
        return { k: "Q" };
      case "E":
        return { k: "E" };
      case "b":
        return inClass ? { k: "char", c: 0x08 } : { k: "assert", a: "wordb" };
      case "g":
        if (inClass) return { k: "char", c };
        return this.fail("backreferences and subroutine calls (\\g) are not supported");
      case "B":
      case "A":
      case "z":
      case "Z":
      case "G":
      case "N":
      case "R":
      case "C":
        if (inClass) this.fail(`\\${ch} is not allowed in a character class`);
        if (ch === "B") return { k: "assert", a: "nwordb" };
        if (ch === "A" || ch === "G") return { k: "assert", a: "start" };
        if (ch === "z") return { k: "assert", a: "endz" };
        if (ch === "Z") return { k: "assert", a: "end" };
        if (ch === "N") return { k: "N" };
        if (ch === "R") return this.fail("\\R is not supported (PCRE2 10.42 mis-optimizes it)");
        return { k: "set", s: SET_ALL }; // \C: one code unit
      case "c": {
        if (this.pos >= this.src.length) this.fail("\\c at end of pattern");
        let x = this.src.charCodeAt(this.pos++);
        if (x >= 0x61 && x <= 0x7a) x -= 32;
        if (x < 32 || x > 126) this.fail("\\c must be followed by a printable ASCII character");
        return { k: "char", c: x ^ 0x40 };
      }
      case "x": {
        if (this.peek() === 0x7b) {
          this.pos++;
          if (this.peek() === 0x7d || this.peek() < 0) this.fail("\\x{} is empty");
          let v = 0;
          while (this.pos < this.src.length && xdigit(this.src.charCodeAt(this.pos)) >= 0) {
            v = v * 16 + xdigit(this.src.charCodeAt(this.pos++));
            if (v > 0xff) this.fail("character code point value in \\x{} is too large");
          }
          if (this.peek() !== 0x7d) this.fail("\\x{ is not terminated by }");
          this.pos++;
          return { k: "char", c: v };
        }
        let v = 0;
        for (let i = 0; i < 2 && xdigit(this.peek()) >= 0; i++) v = v * 16 + xdigit(this.src.charCodeAt(this.pos++));
        return { k: "char", c: v };
      }
      case "o": {
        if (this.peek() !== 0x7b) this.fail("\\o must be followed by {");
        this.pos++;
        if (this.peek() === 0x7d || this.peek() < 0) this.fail("\\o{} is empty");
        let v = 0;
        while (isOctal(this.peek())) {
          v = v * 8 + (this.src.charCodeAt(this.pos++) - 0x30);
          if (v > 0xff) this.fail("character code point value in \\o{} is too large");
        }
        if (this.peek() !== 0x7d) this.fail("\\o{ is not terminated by }");
        this.pos++;
        return { k: "char", c: v };
      }
      case "0":
        return { k: "char", c: this.readOctal(0, 2) };
      default:
        break;
    }
    if (isDigit(c)) {
      if (!inClass) {
        // Decimal number: a backreference if < 10, starting with 8/9, or
        // not more than the captures so far; otherwise octal.
        let p = this.pos - 1;
        while (p < this.src.length && isDigit(this.src.charCodeAt(p))) p++;
        const s = Number(this.src.slice(this.pos - 1, p));
        if (s < 10 || c >= 0x38 || s <= this.captures) this.fail("backreferences are not supported");
      }
      if (c >= 0x38) return { k: "char", c }; // \8 \9 in a class: literal
      return { k: "char", c: this.readOctal(c - 0x30, 2) };
    }
    if (ch === "p" || ch === "P" || ch === "X") this.fail(`\\${ch} (Unicode properties) is not supported`);
    if (ch === "k" || ch === "K") this.fail(`\\${ch} is not supported`);
    this.fail(`unrecognized character follows \\: ${ch}`);
  }

  private readOctal(v: number, more: number): number {
    for (let i = 0; i < more && isOctal(this.peek()); i++) v = v * 8 + (this.src.charCodeAt(this.pos++) - 0x30);
    if (v > 0xff) this.fail("octal value greater than \\377 in 8-bit non-UTF mode");
    return v;
  }

  /** PCRE2's check_posix_syntax: pos points after "[" at ":", "." or "=". */
  private posixEnd(p: number): number {
    const src = this.src;
    const term = src.charCodeAt(p++);
    for (; src.length - p >= 2; p++) {
      const a = src.charCodeAt(p);
      const b = src.charCodeAt(p + 1);
      if (a === 0x5c && (b === 0x5d || b === 0x5c)) p++;
      else if ((a === 0x5b && b === term) || a === 0x5d) return -1;
      else if (a === term && b === 0x5d) return p;
    }
    return -1;
  }

  /** After "[": a character class, as a byte set. */
  private parseClass(): Node {
    const src = this.src;
    // [[:<:]] and [[:>:]]: start and end of word.
    if (src.startsWith("[:<:]]", this.pos) || src.startsWith("[:>:]]", this.pos)) {
      const start = src.charCodeAt(this.pos + 2) === 0x3c;
      this.pos += 6;
      const w: Node = { t: "set", s: SET_WORD };
      return {
        t: "seq",
        items: [{ t: "assert", kind: "wordb" }, { t: "look", behind: !start, neg: false, body: w }],
      };
    }
    const p0 = this.peek();
    if ((p0 === 0x3a || p0 === 0x2e || p0 === 0x3d) && this.posixEnd(this.pos) >= 0)
      this.fail("POSIX named classes are supported only within a class");
    let negate = false;
    let c = -1;
    while (this.pos < src.length) {
      c = src.charCodeAt(this.pos++);
      if (c === 0x5c) {
        if (this.peek() === 0x45) this.pos++;
        else if (src.startsWith("Q\\E", this.pos)) this.pos += 3;
        else break;
      } else if (this.flags.xx && (c === 0x20 || c === 0x09)) continue;
      else if (!negate && c === 0x5e) negate = true;
      else break;
      c = -1;
    }
    if (c < 0) this.fail("missing terminating ] for character class");
    const set = newSet();
    const NO = 0,
      STARTED = 1,
      OK = 2;
    let rangeState = NO;
    let rangeStart = -1;
    const addChar = (ch: number): void => {
      if (rangeState === STARTED) {
        if (ch < rangeStart) this.fail("range out of order in character class");
        setAddRange(set, rangeStart, ch);
        rangeState = NO;
      } else {
        setAdd(set, ch);
        rangeStart = ch;
        rangeState = OK;
      }
    };
    for (;;) {
      let handled = false;
      if (this.inQ) {
        if (c === 0x5c && this.peek() === 0x45) {
          this.inQ = false;
          this.pos++;
        } else addChar(c);
        handled = true;
      } else if (this.flags.xx && (c === 0x20 || c === 0x09)) {
        handled = true;
      } else if (
        c === 0x5b &&
        src.length - this.pos >= 3 &&
        (this.peek() === 0x3a || this.peek() === 0x2e || this.peek() === 0x3d) &&
        this.posixEnd(this.pos) >= 0
      ) {
        const end = this.posixEnd(this.pos);
        if (rangeState === STARTED) this.fail("invalid range in character class");
        if (this.peek() !== 0x3a) this.fail("POSIX collating elements are not supported");
        let p = this.pos + 1;
        let pneg = false;
        if (src.charCodeAt(p) === 0x5e) {
          pneg = true;
          p++;
        }
        const name = src.slice(p, end);
        const cls = POSIX_CLASSES[name];
        if (!cls) this.fail(`unknown POSIX class name ${name}`);
        this.pos = end + 2;
        if (this.pos < src.length - 1 && this.peek() === 0x2d && this.peek(1) !== 0x5d)
          this.fail("invalid range in character class");
        setUnion(set, pneg ? setNot(cls) : cls);
        rangeState = NO;
        handled = true;
      } else if (c === 0x2d && rangeState === OK) {
        rangeState = STARTED;
        handled = true;
      } else if (c !== 0x5c) {
        addChar(c);
        handled = true;
      }
      if (!handled) {
        const e = this.parseEscape(true);
        if (e.k === "char") addChar(e.c);
        else if (e.k === "Q") this.inQ = true;
        else if (e.k === "E") {
          /* ignored */
        } else if (e.k === "set") {
          if (rangeState === STARTED) this.fail("invalid range in character class");
          setUnion(set, e.s);
          rangeState = NO;
          if (this.pos < src.length - 1 && this.peek() === 0x2d && this.peek(1) !== 0x5d)
            this.fail("invalid range in character class");
        } else this.fail("escape sequence is invalid in character class");
      }
      if (this.pos >= src.length) this.fail("missing terminating ] for character class");
      c = src.charCodeAt(this.pos++);
      if (c === 0x5d && !this.inQ) break;
    }
    if (rangeState === STARTED) setAdd(set, 0x2d); // "-]": a literal hyphen
    if (this.flags.i) setFold(set);
    return { t: "set", s: negate ? setNot(set) : set };
  }
}

/** Length of what a node always matches, or -1 if it varies (PCRE2's lookbehind rule). */
function fixedLength(n: Node): number {
  switch (n.t) {
    case "set":
      return 1;
    case "assert":
    case "look":
      return 0;
    case "seq": {
      let sum = 0;
      for (const it of n.items) {
        const l = fixedLength(it);
        if (l < 0) return -1;
        sum += l;
      }
      return sum;
    }
    case "alt": {
      const l0 = fixedLength(n.alts[0]!);
      for (const a of n.alts) if (fixedLength(a) !== l0) return -1;
      return l0;
    }
    case "group":
    case "atomic":
      return fixedLength(n.body);
    case "rep": {
      if (n.min !== n.max) return -1;
      const l = fixedLength(n.body);
      return l < 0 ? -1 : l * n.min;
    }
  }
}

function checkLookbehind(body: Node, p: PcreParser): void {
  const branches = body.t === "alt" ? body.alts : [body];
  for (const b of branches) if (fixedLength(b) < 0) p.refuse("lookbehind assertion is not fixed length");
  const noAtomic = (n: Node): void => {
    if (n.t === "atomic") p.refuse("atomic group or \\R inside a lookbehind is not supported");
    if (n.t === "seq") n.items.forEach(noAtomic);
    else if (n.t === "alt") n.alts.forEach(noAtomic);
    else if (n.t === "group" || n.t === "look" || n.t === "rep") noAtomic(n.body);
  };
  noAtomic(body);
}

/** Whether a node can match the empty string. */
function nullable(n: Node): boolean {
  switch (n.t) {
    case "set":
      return false;
    case "assert":
    case "look":
      return true;
    case "seq":
      return n.items.every(nullable);
    case "alt":
      return n.alts.some(nullable);
    case "group":
    case "atomic":
      return nullable(n.body);
    case "rep":
      return n.min === 0 || nullable(n.body);
  }
}

/**
 * Inside an atomic group the first way found is the only one kept, so the
 * engines must try ways in the same order. JavaScript and PCRE2 differ only
 * for a repeated item that can match empty: refuse that.
 */
function checkAtomicBody(n: Node): void {
  switch (n.t) {
    case "rep":
      if (nullable(n.body)) throw new RegexRefused("repeated empty-matching item inside an atomic group or possessive quantifier");
      checkAtomicBody(n.body);
      return;
    case "seq":
      n.items.forEach(checkAtomicBody);
      return;
    case "alt":
      n.alts.forEach(checkAtomicBody);
      return;
    case "group":
    case "atomic":
    case "look":
      checkAtomicBody(n.body);
      return;
    default:
      return;
  }
}

/** Emit JavaScript regex source (no flags) with numbered groups used only for atomic groups. */
class Emitter {
  groups = 0;

  emit(n: Node): string {
    switch (n.t) {
      case "set":
        return setToJs(n.s);
      case "seq":
        return n.items.map((x) => this.emit(x)).join("");
      case "alt":
        return "(?:" + n.alts.map((x) => this.emit(x)).join("|") + ")";
      case "group":
        return "(?:" + this.emit(n.body) + ")";
      case "look":
        return (n.behind ? (n.neg ? "(?<!" : "(?<=") : n.neg ? "(?!" : "(?=") + this.emit(n.body) + ")";
      case "atomic":
        return this.atomic(n.body);
      case "rep": {
        if (n.possessive) return this.atomic({ ...n, possessive: false });
        const body = this.emit(n.body);
        const atom = n.body.t === "set" || n.body.t === "group" || n.body.t === "alt" ? body : "(?:" + body + ")";
        let q: string;
        if (n.min === 0 && n.max === Infinity) q = "*";
        else if (n.min === 1 && n.max === Infinity) q = "+";
        else if (n.min === 0 && n.max === 1) q = "?";
        else if (n.max === Infinity) q = `{${n.min},}`;
        else if (n.min === n.max) q = `{${n.min}}`;
        else q = `{${n.min},${n.max}}`;
        return atom + q + (n.lazy ? "?" : "");
      }
      case "assert":
        switch (n.kind) {
          case "start":
            return "^";
          case "end":
            return "(?=\\n?$)"; // PCRE2 $: at the end or before a final newline
          case "endz":
            return "$";
          case "mstart":
            return "(?:^|(?<=\\n)(?=[\\s\\S]))"; // not after a final newline
          case "mend":
            return "(?=\\n|$)";
          case "wordb":
            return "\\b";
          case "nwordb":
            return "\\B";
        }
    }
  }

  /** An atomic group: a lookahead keeps only its first way; the backreference consumes it. */
  private atomic(body: Node): string {
    checkAtomicBody(body);
    const g = ++this.groups;
    return "(?:(?=(" + this.emit(body) + "))\\" + g + ")";
  }
}

/** Bit of a byte in a 64-bit char mask (two words), by its low 6 bits. */
function maskBit(c: number): number {
  return 1 << (c & 31);
}

/**
 * Bytes every match contains, as a 64-bit mask (bucket = byte & 63): a
 * cheap filter before running a spec's regex on a key.
 */
function requiredChars(n: Node, m: { lo: number; hi: number }): void {
  switch (n.t) {
    case "set": {
      const c = setSingle(n.s);
      if (c >= 0) {
        if (c & 32) m.hi |= maskBit(c);
        else m.lo |= maskBit(c);
      }
      return;
    }
    case "seq":
      for (const it of n.items) requiredChars(it, m);
      return;
    case "group":
    case "atomic":
      requiredChars(n.body, m);
      return;
    case "rep":
      if (n.min > 0) requiredChars(n.body, m);
      return;
    case "alt": {
      let lo = -1;
      let hi = -1;
      for (const a of n.alts) {
        const x = { lo: 0, hi: 0 };
        requiredChars(a, x);
        lo &= x.lo;
        hi &= x.hi;
      }
      m.lo |= lo;
      m.hi |= hi;
      return;
    }
    default:
      return;
  }
}

/** Scratch space of literalPrefix. */
let runBytes = Buffer.alloc(256);

/** Literal chars a match must start with (every match starts at 0), or null when it may start elsewhere. */
function literalPrefix(n: Node): string | null {
  const items = n.t === "seq" ? n.items : [n];
  if (items.length === 0 || items[0]!.t !== "assert" || (items[0] as { kind: string }).kind !== "start") return null;
  let len = 0;
  for (let i = 1; i < items.length; i++) {
    const it = items[i]!;
    const c = it.t === "set" ? setSingle(it.s) : -1;
    if (c < 0) break;
    if (len === runBytes.length) runBytes = Buffer.concat([runBytes, Buffer.alloc(len)]);
    runBytes[len++] = c;
  }
  return runBytes.toString("latin1", 0, len);
}

/**
 * The longest run of single-byte sets among the items of a top-level
 * sequence after its literal prefix, as a string (null if shorter than 2).
 * The items of the sequence all match, in order, within the key, so the key
 * contains the run: a cheap test before the regex.
 */
function requiredRun(n: Node, prefix: string | null): string | null {
  if (n.t !== "seq" || prefix === null) return null;
  const items = n.items;
  let best: string | null = null;
  let start = -1;
  for (let i = 1 + prefix.length; i <= items.length; i++) {
    const it = items[i];
    const single = it !== undefined && it.t === "set" && setSingle(it.s) >= 0;
    if (single && start < 0) start = i;
    if (single || start < 0) continue;
    if (i - start >= 2 && (best === null || i - start > best.length)) {
      let r = "";
      for (let j = start; j < i; j++) r += String.fromCharCode(setSingle((items[j] as { s: ByteSet }).s));
      best = r;
    }
    start = -1;
  }
  return best;
}

/**
 * Whether a pattern is `^`, single chars, and `$` (PCRE2 `$`): then it
 * matches its literalPrefix() (or that + "\n").
 */
function isPureLiteral(n: Node, prefix: string | null): boolean {
  if (prefix === null || n.t !== "seq" || n.items.length < 2) return false;
  const last = n.items[n.items.length - 1]!;
  // The chars run from items[1] up to the final $ exactly.
  return last.t === "assert" && last.kind === "end" && prefix.length === n.items.length - 2;
}

/**
 * Translate a PCRE2 pattern (as libselinux compiles it: 8-bit, no UTF,
 * PCRE2_DOTALL) into an equivalent JavaScript RegExp over latin1 strings.
 * Throws RegexRefused for syntax PCRE2 rejects or that has no faithful
 * translation here.
 */
export function translatePcre(pattern: string, offsetBase = 0): { source: string; node: Node } {
  const { node } = parsePcre(pattern, offsetBase);
  const source = new Emitter().emit(node);
  return { source, node };
}

/**
 * The syntax tree of a pattern, and whether emitting it can still refuse it
 * (only atomic groups and possessive quantifiers are checked by the emitter;
 * any other tree emits without error).
 */
function parsePcre(pattern: string, offsetBase: number): { node: Node; atomic: boolean } {
  for (let i = 0; i < pattern.length; i++)
    if (pattern.charCodeAt(i) > 0x7f || pattern.charCodeAt(i) === 0) throw new RegexRefused("non-ASCII or NUL byte in pattern");
  const parser = new PcreParser(pattern, offsetBase);
  const node = parser.parse();
  return { node, atomic: parser.atomic };
}

/** For tests and tools: a RegExp that behaves like PCRE2 (DOTALL, 8-bit) on latin1 strings. */
export function compilePcre(pattern: string): RegExp {
  try {
    return new RegExp(translatePcre(pattern).source);
  } catch (e) {
    if (e instanceof RegexRefused || e instanceof SyntaxError) throw new CfsError(`cannot use regex ${pattern}: ${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------
// Policy files

const TYPE_FLAGS: Record<string, number> = {
  "--": S_IFREG,
  "-d": S_IFDIR,
  "-l": S_IFLNK,
  "-c": S_IFCHR,
  "-b": S_IFBLK,
  "-p": S_IFIFO,
  "-s": S_IFSOCK,
};

/** C isspace() in the C locale. */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

interface Spec {
  /** Position after libselinux's sort (regexes first, then exact specs); set by SelinuxPolicy. */
  index: number;
  regexStr: string;
  /** st_mode type bits, 0 for any. */
  mode: number;
  /** The context, or null for <<none>>. */
  context: string | null;
  /** Value of security.selinux (context + NUL), made on first use (specValue). */
  value: Buffer | null;
  /** libselinux's "stem": the first path component, when it has no meta characters. */
  stem: string | null;
  hasMeta: boolean;
  /** Literal every match starts with, or null when a match may start anywhere. */
  prefix: string | null;
  /** For a spec that is just a literal: the literal (matches it, or it + "\n"). */
  literal: string | null;
  /**
   * The translated pattern, compiled when the spec is first tried
   * (specRegex: parsed again, emitted, compiled): most specs never are, and
   * their syntax trees are not kept. Literal specs are looked up by their
   * literal and never need one.
   */
  re: RegExp | null;
  /** requiredChars() of the pattern. */
  reqLo: number;
  reqHi: number;
  /** requiredRun(): a string every key it matches contains (beyond the literal prefix), or null. */
  need: string | null;
  /** matchesAfterPrefix(): the pattern matches every key that starts with its prefix. */
  any: boolean;
  file: string;
  line: number;
}

interface Sub {
  src: string;
  dst: string;
}

/** libselinux's spec_hasMetaChars. */
function hasMetaChars(re: string): boolean {
  for (let i = 0; i < re.length; i++) {
    const c = re.charCodeAt(i);
    if (c < 0x80 && META[c] === 1) return true;
    if (c === 0x5c /* \\ */) i++;
  }
  return false;
}

/** 1 for libselinux's meta characters . ^ $ ? * + | [ ( { */
const META = new Uint8Array(128);
for (const c of ".^$?*+|[({") META[c.charCodeAt(0)] = 1;

/** libselinux's get_stem_from_spec: the first path component ("/usr" of "/usr/lib/x.*"), if it has no meta characters. */
function stemOfSpec(re: string): string | null {
  const i = re.indexOf("/", 1);
  if (i < 0) return null;
  for (let j = 0; j < i; j++) {
    const c = re.charCodeAt(j);
    if (c < 0x80 && META[c] === 1) return null;
  }
  return re.slice(0, i);
}

/** libselinux's get_stem_from_file_name. */
function stemOfKey(key: string): string | null {
  const i = key.indexOf("/", 1);
  return i < 0 ? null : key.slice(0, i);
}

/** Bytes of a string as the 64-bit mask of requiredChars (bucket = byte & 63). */
function charMask(str: string, m: { lo: number; hi: number }): void {
  let lo = m.lo;
  let hi = m.hi;
  for (let j = 0; j < str.length; j++) {
    const d = str.charCodeAt(j);
    if (d & 32) hi |= 1 << (d & 31);
    else lo |= 1 << (d & 31);
  }
  m.lo = lo;
  m.hi = hi;
}

/** Runs of C isspace() chars; bytes above 0x7f. */
const SPACES = /[\t\n\v\f\r ]+/;
const NON_ASCII = /[\x80-\xff]/;

/**
 * 1 for the chars the parser reads as one single-byte set whatever comes
 * before them (outside \\Q, without (?x) or (?i)): all but \\ | ) * + ? { ^ $ . [ (
 */
const PLAIN = new Uint8Array(128);
for (let c = 0x21; c < 0x7f; c++) if (!"\\|)*+?{^$.[(".includes(String.fromCharCode(c))) PLAIN[c] = 1;

/** What loading keeps of a parsed pattern ("^" + regex + "$"). */
export interface PatternFacts {
  /** literalPrefix(). */
  prefix: string | null;
  /** The prefix when isPureLiteral(), else null. */
  literal: string | null;
  /** requiredChars(). */
  reqLo: number;
  reqHi: number;
  /** requiredRun(). */
  need: string | null;
  /** matchesAfterPrefix(). */
  any: boolean;
  /** An atomic group or possessive quantifier: emit at load. */
  atomic: boolean;
}

function factsOf(node: Node, atomic: boolean): PatternFacts {
  const prefix = literalPrefix(node);
  const req = { lo: 0, hi: 0 };
  requiredChars(node, req);
  return {
    prefix,
    literal: isPureLiteral(node, prefix) ? prefix : null,
    reqLo: req.lo | 0,
    reqHi: req.hi | 0,
    need: requiredRun(node, prefix),
    any: matchesAfterPrefix(node, prefix),
    atomic,
  };
}

/**
 * Whether a pattern is its literal prefix, then ".*" (any byte, DOTALL: a
 * repeat of the set of all 256 bytes from 0 to no limit), then PCRE2's $:
 * it matches every key that starts with the prefix (the repeat can take the
 * rest, $ matches at the end), as "/usr/lib/.*" or "/.*" do.
 */
function matchesAfterPrefix(n: Node, prefix: string | null): boolean {
  if (n.t !== "seq" || prefix === null || n.items.length !== prefix.length + 3) return false;
  const r = n.items[prefix.length + 1]!;
  const end = n.items[prefix.length + 2]!;
  return (
    r.t === "rep" && r.min === 0 && r.max === Infinity && r.body.t === "set" && setSize(r.body.s) === 256 && end.t === "assert" && end.kind === "end"
  );
}

/** The facts of the tree of "^" + regexStr + "$" (throws RegexRefused). */
export function patternFacts(regexStr: string): PatternFacts {
  const { node, atomic } = parsePcre("^" + regexStr + "$", 1); // offsets in messages: in regexStr
  return factsOf(node, atomic);
}

/**
 * patternFacts(regexStr), with the work shared between patterns that differ
 * only in a plain head: regexStr = head + rest, head made of PLAIN chars,
 * rest starting with "(" (not "(?#"), ".", "[" or a backslash and a char
 * that is not a letter or digit (an escaped literal). The parser reads the head
 * as one set node per char and leaves its state as at the start (no flags,
 * captures, names or \\Q), and the rest's first item does not look back
 * at what precedes it (only a quantifier or a comment followed by one
 * would). So the tree is the start assertion, the head's sets, then the
 * items of "^" + rest + "$" after its start assertion, when that parses as
 * a sequence (no top-level "|"), and its facts follow from the rest's:
 * prefix = head + the rest's prefix; a literal if the rest's is; required
 * chars = the head's and the rest's; the same required run, found at the
 * same items. `rests` keeps the rests' facts; anything else, errors
 * included, is parsed whole.
 */
export function specPatternFacts(regexStr: string, rests: Map<string, PatternFacts | null>): PatternFacts {
  let h = 0;
  while (h < regexStr.length && regexStr.charCodeAt(h) < 0x80 && PLAIN[regexStr.charCodeAt(h)] === 1) h++;
  const r0 = regexStr.charCodeAt(h);
  const r1 = regexStr.charCodeAt(h + 1); // NaN past the end
  if (h > 0 && (r0 === 0x2e || r0 === 0x5b || (r0 === 0x28 && !regexStr.startsWith("(?#", h)) || (r0 === 0x5c && r1 < 0x80 && !isAlnum(r1)))) {
    const rest = regexStr.slice(h);
    let rf = rests.get(rest);
    if (rf === undefined) {
      rf = null;
      try {
        const iso = parsePcre("^" + rest + "$", 1);
        const n = iso.node;
        if (n.t === "seq" && n.items[0]!.t === "assert" && n.items[0]!.kind === "start") rf = factsOf(n, iso.atomic);
      } catch {
        /* parsed whole below, for the error */
      }
      rests.set(rest, rf);
    }
    if (rf !== null) {
      const head = regexStr.slice(0, h);
      const m = { lo: rf.reqLo, hi: rf.reqHi };
      charMask(head, m);
      const prefix = head + rf.prefix!;
      return { prefix, literal: rf.literal === null ? null : prefix, reqLo: m.lo | 0, reqHi: m.hi | 0, need: rf.need, any: rf.any, atomic: rf.atomic };
    }
  }
  return patternFacts(regexStr);
}

function parseSpecFile(data: Buffer, file: string, out: Spec[], rests: Map<string, PatternFacts | null>): void {
  const text = data.toString("latin1");
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  for (let ln = 0; ln < lines.length; ln++) {
    // read_spec_entries: the line ends at its first NUL byte; three fields
    // are read (non-ASCII bytes refused in them), the rest is ignored.
    const nul = lines[ln]!.indexOf("\0");
    const line = nul >= 0 ? lines[ln]!.slice(0, nul) : lines[ln]!;
    const lineno = ln + 1;
    let p = 0;
    while (p < line.length && isSpace(line.charCodeAt(p))) p++;
    if (p >= line.length || line[p] === "#") continue;
    const fields = line.slice(p).split(SPACES).slice(0, 3);
    if (fields[fields.length - 1] === "") fields.pop();
    if (fields.length < 2) throw new CfsError(`${file}:${lineno}: line is missing fields`);
    // Non-ASCII bytes are never spaces: any of them is in a field.
    if (fields.some((f) => NON_ASCII.test(f))) throw new CfsError(`${file}:${lineno}: non-ASCII characters found`);
    const regexStr = fields[0]!;
    const typeStr = fields.length === 3 ? fields[1]! : null;
    const context = fields[fields.length - 1]!;
    let mode = 0;
    if (typeStr !== null) {
      const m = TYPE_FLAGS[typeStr];
      if (m === undefined) throw new CfsError(`${file}:${lineno}: invalid file type ${typeStr}`);
      mode = m;
    }
    const hasMeta = hasMetaChars(regexStr);
    const req = { lo: 0, hi: 0 };
    let literal: string | null;
    let prefix: string | null;
    let re: RegExp | null = null;
    let need: string | null = null;
    let any = false;
    if (!hasMeta && !regexStr.includes("\\") && !regexStr.includes(")")) {
      // Plain text (half of a real policy): without meta characters, a
      // backslash or a ")", the parser would read "^" + regexStr + "$" as
      // the start assertion, one single-byte set per char and PCRE2's $,
      // whatever the chars are (ASCII, no NUL: checked above). So these are
      // literalPrefix(), isPureLiteral() and requiredChars() of that tree.
      literal = regexStr;
      prefix = regexStr;
      charMask(regexStr, req);
    } else {
      try {
        const f = specPatternFacts(regexStr, rests);
        // The emitter refuses some atomic groups and possessive quantifiers:
        // emit and compile those now so that the error is reported here.
        // Every other tree emits without error.
        if (f.atomic) re = new RegExp(new Emitter().emit(parsePcre("^" + regexStr + "$", 1).node));
        ({ prefix, literal, need, any } = f);
        req.lo = f.reqLo;
        req.hi = f.reqHi;
      } catch (e) {
        if (e instanceof RegexRefused || e instanceof SyntaxError)
          throw new CfsError(`${file}:${lineno}: cannot use regex ${regexStr}: ${e.message}`);
        throw e;
      }
    }
    out.push({
      index: -1,
      regexStr,
      mode,
      context: context === "<<none>>" ? null : context,
      value: null,
      stem: stemOfSpec(regexStr),
      hasMeta,
      prefix,
      literal,
      re,
      reqLo: req.lo | 0,
      reqHi: req.hi | 0,
      need,
      any,
      file,
      line: lineno,
    });
  }
}

/** The security.selinux value of a spec (context + NUL), or null for <<none>>. */
function specValue(s: Spec): Buffer | null {
  if (s.value === null && s.context !== null) s.value = Buffer.from(s.context + "\0", "latin1");
  return s.value;
}

/** The compiled regex of a spec (not a literal one), compiled on first use. */
function specRegex(s: Spec): RegExp {
  if (s.re !== null) return s.re;
  try {
    // The same parse as at load, which accepted it.
    s.re = new RegExp(new Emitter().emit(parsePcre("^" + s.regexStr + "$", 1).node));
  } catch (e) {
    if (e instanceof RegexRefused || e instanceof SyntaxError)
      throw new CfsError(`${s.file}:${s.line}: cannot use regex ${s.regexStr}: ${e.message}`);
    throw e;
  }
  return s.re;
}

/**
 * selabel_subs_init: "SRC DST" lines; kept last line first, as libselinux
 * prepends. Read as libselinux reads them: fgets of at most 1022 bytes (a
 * longer line is read as several), each up to its first NUL; a line with
 * one field is skipped, fields after the second are ignored.
 */
function parseSubsFile(data: Buffer): Sub[] {
  const subs: Sub[] = [];
  const text = data.toString("latin1");
  for (let pos = 0; pos < text.length; ) {
    const nl = text.indexOf("\n", pos);
    const end = Math.min(nl < 0 ? text.length : nl + 1, pos + SUBS_LINE_MAX);
    let line = text.slice(pos, end);
    pos = end;
    const nul = line.indexOf("\0");
    if (nul >= 0) line = line.slice(0, nul);
    let p = 0;
    while (p < line.length && isSpace(line.charCodeAt(p))) p++;
    if (p >= line.length || line[p] === "#") continue;
    const fields = line
      .slice(p)
      .split(SPACES)
      .filter((f) => f.length > 0);
    if (fields.length < 2) continue;
    subs.unshift({ src: fields[0]!, dst: fields[1]! });
  }
  return subs;
}

/** What one fgets(buf, sizeof(buf) - 1) of libselinux's 1024-byte buffer reads. */
const SUBS_LINE_MAX = 1022;

/**
 * libselinux's selabel_sub over a list (in list order): the first entry
 * whose src is the key or a prefix of it followed by "/" rewrites the key.
 * Indexed by src: only the key's prefixes that end at a "/" can match.
 */
class SubTable {
  private readonly bySrc = new Map<string, { pos: number; dst: string }>();
  private readonly lengths = new Set<number>();
  /** The srcs split after their last "/": what precedes it (with the "/") -> the names after it. */
  private readonly byParent = new Map<string, Set<string>>();
  readonly size: number;

  constructor(subs: Sub[]) {
    subs.forEach((s, pos) => {
      if (!this.bySrc.has(s.src)) this.bySrc.set(s.src, { pos, dst: s.dst });
      this.lengths.add(s.src.length);
      const i = s.src.lastIndexOf("/");
      if (i < 0) return; // never a whole key: keys have a "/"
      const parent = s.src.slice(0, i + 1);
      let names = this.byParent.get(parent);
      if (!names) this.byParent.set(parent, (names = new Set()));
      names.add(s.src.slice(i + 1));
    });
    this.size = subs.length;
  }

  /** The names N for which dir + N is a src (dir ends with "/"). */
  namesUnder(dir: string): Set<string> | undefined {
    return this.size === 0 ? undefined : this.byParent.get(dir);
  }

  apply(key: string): string | null {
    if (this.size === 0) return null;
    let best: { pos: number; dst: string } | undefined;
    let bestLen = 0;
    const len = key.length;
    for (let b = 1; b <= len; b++) {
      if (b < len && key.charCodeAt(b) !== 0x2f) continue;
      if (!this.lengths.has(b)) continue;
      const e = this.bySrc.get(key.slice(0, b));
      if (e !== undefined && (best === undefined || e.pos < best.pos)) {
        best = e;
        bestLen = b;
      }
    }
    if (best === undefined) return null;
    return best.dst + (bestLen < len && best.dst === "/" ? key.slice(bestLen + 1) : key.slice(bestLen));
  }
}

/** SELINUXTYPE= of etc/selinux/config as libselinux reads it (last one wins). */
function parseConfig(data: Buffer): string | null {
  let type: string | null = null;
  for (let line of data.toString("latin1").split("\n")) {
    let p = 0;
    while (p < line.length && isSpace(line.charCodeAt(p))) p++;
    line = line.slice(p);
    if (line.length === 0 || line[0] === "#") continue;
    if (line.slice(0, 12).toUpperCase() !== "SELINUXTYPE=") continue;
    let v = line.slice(12);
    let q = 0;
    while (q < v.length && isSpace(v.charCodeAt(q))) q++;
    v = v.slice(q);
    let e = v.length;
    while (e > 1 && (isSpace(v.charCodeAt(e - 1)) || v.charCodeAt(e - 1) < 0x20 || v.charCodeAt(e - 1) === 0x7f)) e--;
    type = v.slice(0, e);
  }
  return type;
}

// ---------------------------------------------------------------------------
// The policy

/** A node of the trie over the specs' literal prefixes. */
interface TrieNode {
  next: Map<number, TrieNode>;
  /** Chars from the parent node to this one (after compression: a run without branches). */
  label: string;
  /** Indexes of the specs whose literal prefix ends here. */
  specs: number[];
  /** Nearest ancestor with specs. */
  parent: TrieNode | null;
  /** The specs of this node and its ancestors, highest index first (built on first use). */
  chain: Int32Array | null;
}

/**
 * What the lookups of a directory's children share (SelinuxPolicy.dirContext).
 * A child named N (not empty, no "/") of the directory at raw path D has the
 * key D + "/" + N. Cleaning leaves such a key alone, and the .subs/.subs_dist
 * lines that can rewrite it are those whose src is a prefix of D + "/" ending
 * before a "/" (the same for every N) or the whole key (the names in
 * `special`). So, outside `special`, the key after the substitutions is
 * `prefix + N` for a `prefix` found once by substituting D + "/" + a
 * placeholder char that no policy line contains; its stem is the same for
 * every N, and the trie walk, the char mask and the literal specs can start
 * from what `prefix` gives.
 */
export interface DirContext {
  /** The raw path of the directory ("" for the root). */
  readonly dir: string;
  /** The key of a child N, after the substitutions, is prefix + N. */
  readonly prefix: string;
  /** prefix as bytes (latin1). */
  readonly prefixBytes: Buffer;
  readonly stem: string | null;
  /** Names whose key is a .subs or .subs_dist src as a whole: looked up the general way. */
  readonly special: Set<string> | null;
  /** Pure-literal specs of the form prefix + N, by N. */
  readonly literals: Map<string, Spec[]> | undefined;
  /** Trie walk along prefix: the node reached, or null when the walk stopped inside prefix. */
  readonly node: TrieNode | null;
  /** Position in the key of the node's end, or of its label's start when `pending`. */
  readonly pos: number;
  /** The node's label runs past prefix: the child must still match the rest of it. */
  readonly pending: boolean;
  /** Deepest node with specs on the walk so far. */
  readonly deepest: TrieNode | null;
  /** charMask of prefix. */
  readonly lo: number;
  readonly hi: number;
}

/** Children of a trie node without any (shared, never added to: trieInsert replaces it). */
const NO_CHILDREN: Map<number, TrieNode> = new Map();

/**
 * Add a spec's literal prefix to the trie, kept compressed: every edge is a
 * run of chars, and a node without specs has at least two children.
 */
function trieInsert(root: TrieNode, prefix: string, index: number): void {
  let node = root;
  let i = 0;
  for (;;) {
    if (i === prefix.length) {
      node.specs.push(index);
      return;
    }
    const c = prefix.charCodeAt(i);
    const child = node.next.get(c);
    if (child === undefined) {
      if (node.next === NO_CHILDREN) node.next = new Map();
      node.next.set(c, { next: NO_CHILDREN, label: prefix.slice(i), specs: [index], parent: null, chain: null });
      return;
    }
    const label = child.label;
    let k = 1;
    while (k < label.length && i + k < prefix.length && label.charCodeAt(k) === prefix.charCodeAt(i + k)) k++;
    if (k < label.length) {
      // Split the edge where the prefix leaves it.
      const mid: TrieNode = { next: new Map([[label.charCodeAt(k), child]]), label: label.slice(0, k), specs: [], parent: null, chain: null };
      child.label = label.slice(k);
      node.next.set(c, mid);
      node = mid;
    } else node = child;
    i += k;
  }
}

/** Stands for "any child name" in dirContext: above 0xff, so in no key and no policy line. */
const PLACEHOLDER = "\u0100";

export class SelinuxPolicy {
  /** In libselinux's order after sort_specs. */
  private readonly specs: Spec[];
  private readonly subs: SubTable;
  private readonly distSubs: SubTable;
  /** Pure-literal specs by literal, ascending index. */
  private readonly literals = new Map<string, Spec[]>();
  /** The same split after the literal's last "/": the part up to it (with the "/") -> rest -> specs. */
  private readonly literalsByDir = new Map<string, Map<string, Spec[]>>();
  /** Specs that may match starting anywhere (a branch without a leading ^): tried one by one. */
  private readonly floating: Spec[] = [];
  private readonly trie: TrieNode = { next: NO_CHILDREN, label: "", specs: [], parent: null, chain: null };
  /** Per spec index: type bits (0: any) and required-char masks, for the scan loop. */
  private readonly modeOf: Int32Array;
  private readonly reqLo: Int32Array;
  private readonly reqHi: Int32Array;
  /** lookupChild's scratch space: the key prefix of `keyOwner`, then a name. */
  private keyBytes = Buffer.alloc(4096);
  private keyOwner: DirContext | null = null;

  /** @internal use loadPolicy */
  constructor(specs: Spec[], subs: Sub[], distSubs: Sub[]) {
    // sort_specs: specs with meta characters first, then the others, keeping order.
    const sorted: Spec[] = new Array(specs.length);
    let k = 0;
    for (let i = 0; i < specs.length; i++) if (specs[i]!.hasMeta) sorted[k++] = specs[i]!;
    for (let i = 0; i < specs.length; i++) if (!specs[i]!.hasMeta) sorted[k++] = specs[i]!;
    for (let i = 0; i < sorted.length; i++) sorted[i]!.index = i;
    this.specs = sorted;
    this.subs = new SubTable(subs);
    this.distSubs = new SubTable(distSubs);
    const n = this.specs.length;
    this.modeOf = new Int32Array(n);
    this.reqLo = new Int32Array(n);
    this.reqHi = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const s = this.specs[i]!;
      this.modeOf[s.index] = s.mode;
      this.reqLo[s.index] = s.reqLo;
      this.reqHi[s.index] = s.reqHi;
      if (s.literal !== null) {
        let l = this.literals.get(s.literal);
        if (!l) {
          this.literals.set(s.literal, (l = []));
          const slash = s.literal.lastIndexOf("/");
          if (slash >= 0) {
            const dir = s.literal.slice(0, slash + 1);
            let m = this.literalsByDir.get(dir);
            if (!m) this.literalsByDir.set(dir, (m = new Map()));
            m.set(s.literal.slice(slash + 1), l);
          }
        }
        l.push(s);
        continue;
      }
      if (s.prefix === null) this.floating.push(s);
      else trieInsert(this.trie, s.prefix, s.index);
    }
    const link = (t: TrieNode, up: TrieNode | null): void => {
      t.parent = up;
      const below = t.specs.length > 0 ? t : up;
      for (const x of t.next.values()) link(x, below);
    };
    link(this.trie, null);
  }

  /** Number of specs (after loading all files). */
  get size(): number {
    return this.specs.length;
  }

  /**
   * The security.selinux value (context + NUL) libselinux gives an absolute
   * path of this file type (st_mode), or null for <<none>> or no match.
   */
  lookup(path: Buffer, mode: number): Buffer | null {
    const v = this.lookupKey(path.toString("latin1"), mode);
    return v === null ? null : Buffer.from(v);
  }

  /** lookup() on a latin1 string; the returned Buffer is shared: do not modify it. */
  lookupKey(path: string, mode: number): Buffer | null {
    const spec = this.match(path, mode & S_IFMT);
    return spec === null ? null : specValue(spec);
  }

  /**
   * What the lookups of the children of the directory at raw path `dir` (""
   * for the root, else "/a/b") share, or null when there is nothing to share
   * (then lookupChild looks each child up by its whole path).
   */
  dirContext(dir: string): DirContext | null {
    const probe = dir + "/" + PLACEHOLDER;
    // A key with "//" would be cleaned first: look such children up one by one.
    if (probe.includes("//")) return null;
    // The same steps as match(), on the placeholder key.
    const s1 = this.subs.apply(probe);
    const k1 = s1 ?? probe;
    const key = this.distSubs.apply(k1) ?? k1;
    if (!k1.endsWith("/" + PLACEHOLDER) || !key.endsWith("/" + PLACEHOLDER)) return null; // cannot happen
    const prefix = key.slice(0, -1);
    const a = this.subs.namesUnder(dir + "/");
    const b = this.distSubs.namesUnder(k1.slice(0, -1));
    const special = a && b ? new Set([...a, ...b]) : (a ?? b ?? null);
    // The trie walk of match() along prefix, stopped where prefix ends.
    let node: TrieNode | null = this.trie;
    let deepest: TrieNode | null = null;
    let pos = 0;
    let pending = false;
    const len = prefix.length;
    for (;;) {
      if (node.specs.length > 0) deepest = node;
      if (pos >= len) break;
      const nx: TrieNode | undefined = node.next.get(prefix.charCodeAt(pos));
      if (nx === undefined) {
        node = null;
        break;
      }
      if (pos + nx.label.length <= len) {
        if (!prefix.startsWith(nx.label, pos)) {
          node = null;
          break;
        }
        node = nx;
        pos += nx.label.length;
      } else {
        // The edge runs past prefix: whether it matches depends on the name.
        node = nx.label.startsWith(prefix.slice(pos)) ? nx : null;
        pending = true;
        break;
      }
    }
    const m = { lo: 0, hi: 0 };
    charMask(prefix, m);
    return {
      dir,
      prefix,
      prefixBytes: Buffer.from(prefix, "latin1"),
      stem: stemOfKey(key),
      special,
      literals: this.literalsByDir.get(prefix),
      node,
      pos,
      pending,
      deepest,
      lo: m.lo,
      hi: m.hi,
    };
  }

  /**
   * lookupKey(dir + "/" + name, mode) for a child of the directory of
   * `ctx` (name: its raw bytes), starting from what the directory's
   * children share. The same answer, by the reasoning of DirContext.
   */
  lookupChild(ctx: DirContext | null, dir: string, name: Uint8Array, mode: number): Buffer | null {
    mode &= S_IFMT;
    const n = name.length;
    if (ctx === null || n === 0) return this.valueAt(dir, name, mode);
    // The key is prefix + name, decoded in one go from keyBytes (a flat
    // string, as the regexes want); the name's bytes are copied there while
    // adding them to the byte mask.
    const plen = ctx.prefixBytes.length;
    if (this.keyOwner !== ctx || plen + n > this.keyBytes.length) {
      if (plen + n > this.keyBytes.length) this.keyBytes = Buffer.alloc(2 * (plen + n));
      this.keyBytes.set(ctx.prefixBytes);
      this.keyOwner = ctx;
    }
    const kb = this.keyBytes;
    let lo = ctx.lo;
    let hi = ctx.hi;
    for (let j = 0; j < n; j++) {
      const d = name[j]!;
      if (d === 0x2f) return this.valueAt(dir, name, mode); // not a name
      if (d & 32) hi |= 1 << (d & 31);
      else lo |= 1 << (d & 31);
      kb[plen + j] = d;
    }
    const key = kb.toString("latin1", 0, plen + n);
    const stem = ctx.stem;

    let best: Spec | null = null;
    const lits = ctx.literals;
    if (ctx.special !== null || lits !== undefined) {
      const nameStr = key.slice(plen);
      if (ctx.special !== null && ctx.special.has(nameStr)) return this.valueAt(dir, name, mode);
      if (lits !== undefined) {
        best = this.lastLiteral(lits.get(nameStr), mode, stem, null);
        if (name[n - 1] === 0x0a) best = this.lastLiteral(lits.get(nameStr.slice(0, -1)), mode, stem, best);
      }
    }

    // match()'s trie walk, resumed where the directory's stopped.
    let deepest = ctx.deepest;
    let node: TrieNode | null | undefined = ctx.node;
    let i = ctx.pos;
    if (node !== null && ctx.pending) {
      if (key.startsWith(node.label, i)) i += node.label.length;
      else node = null;
    }
    if (node !== null) {
      const len = key.length;
      for (;;) {
        if (node.specs.length > 0) deepest = node;
        if (i >= len) break;
        node = node.next.get(key.charCodeAt(i));
        if (node === undefined || !key.startsWith(node.label, i)) break;
        i += node.label.length;
      }
    }
    const spec = this.scan(key, mode, stem, best, deepest, lo, hi);
    return spec === null ? null : specValue(spec);
  }

  /** lookupKey of dir + "/" + name, the general way. */
  private valueAt(dir: string, name: Uint8Array, mode: number): Buffer | null {
    const spec = this.match(dir + "/" + Buffer.from(name.buffer, name.byteOffset, name.length).toString("latin1"), mode);
    return spec === null ? null : specValue(spec);
  }

  private applies(s: Spec, mode: number, stem: string | null): boolean {
    return (s.mode === 0 || mode === 0 || s.mode === mode) && (s.stem === null || s.stem === stem);
  }

  /** The last applicable spec of a literal list, if it comes after `best`; else `best`. */
  private lastLiteral(lit: Spec[] | undefined, mode: number, stem: string | null, best: Spec | null): Spec | null {
    if (lit)
      for (let i = lit.length - 1; i >= 0; i--)
        if (this.applies(lit[i]!, mode, stem)) {
          if (best === null || lit[i]!.index > best.index) return lit[i]!;
          break;
        }
    return best;
  }

  /** Cleans the key as lookup_all does, applies the equivalences, and finds the winning spec. */
  private match(path: string, mode: number): Spec | null {
    let key = path;
    if (key.includes("//")) key = key.replace(/\/{2,}/g, "/");
    if (key.length === 0) return null;
    if (key.length > 1 && key.charCodeAt(key.length - 1) === 0x2f) key = key.slice(0, -1);
    const s1 = this.subs.apply(key);
    if (s1 !== null) key = this.distSubs.apply(s1) ?? s1;
    else key = this.distSubs.apply(key) ?? key;
    const stem = stemOfKey(key);

    // Exact literals: the last applicable one (PCRE2's $ also matches before a final newline).
    let best = this.lastLiteral(this.literals.get(key), mode, stem, null);
    if (key.charCodeAt(key.length - 1) === 0x0a) best = this.lastLiteral(this.literals.get(key.slice(0, -1)), mode, stem, best);

    // The regex specs whose literal prefix the key starts with: those of the
    // deepest trie node with specs on the key's path and of its ancestors.
    let node: TrieNode | undefined = this.trie;
    let deepest: TrieNode | null = null;
    const len = key.length;
    for (let i = 0; ; ) {
      if (node.specs.length > 0) deepest = node;
      if (i >= len) break;
      node = node.next.get(key.charCodeAt(i));
      if (node === undefined || !key.startsWith(node.label, i)) break;
      i += node.label.length;
    }
    const m = { lo: 0, hi: 0 };
    charMask(key, m);
    return this.scan(key, mode, stem, best, deepest, m.lo, m.hi);
  }

  /**
   * The winner among `best` (the literal spec found, or null) and the regex
   * specs of `deepest`'s chain and the floating ones: the highest index that
   * applies and matches. lo/hi: charMask of the key.
   */
  private scan(key: string, mode: number, stem: string | null, best: Spec | null, deepest: TrieNode | null, lo: number, hi: number): Spec | null {
    if (deepest !== null) {
      const chain = deepest.chain ?? this.buildChain(deepest);
      const floor = best === null ? -1 : best.index;
      const modeOf = this.modeOf;
      const reqLo = this.reqLo;
      const reqHi = this.reqHi;
      for (let j = 0; j < chain.length; j++) {
        const i = chain[j]!;
        if (i <= floor) break;
        // Try the regex only if the key has every char it needs and the type fits.
        if ((reqLo[i]! & ~lo) | (reqHi[i]! & ~hi)) continue;
        const m = modeOf[i]!;
        if (m !== 0 && mode !== 0 && m !== mode) continue;
        const s = this.specs[i]!;
        if (s.stem !== null && s.stem !== stem) continue;
        if (s.need !== null && !key.includes(s.need)) continue;
        // A chain's specs have a literal prefix the key starts with.
        if (s.any || (s.re ?? specRegex(s)).test(key)) {
          best = s;
          break;
        }
      }
    }

    for (let i = this.floating.length - 1; i >= 0; i--) {
      const s = this.floating[i]!;
      if (best !== null && s.index < best.index) break;
      if (this.applies(s, mode, stem) && (s.re ?? specRegex(s)).test(key)) {
        best = s;
        break;
      }
    }
    return best;
  }

  private buildChain(node: TrieNode): Int32Array {
    const idx: number[] = [];
    for (let n: TrieNode | null = node; n !== null; n = n.parent) idx.push(...n.specs);
    idx.sort((a, b) => b - a);
    return (node.chain = Int32Array.from(idx));
  }
}

/**
 * Load the file-context policy of a tree: readFile gets paths relative to the
 * tree root ("etc/selinux/config") and returns the bytes or null. Returns
 * null when the tree has no config with SELINUXTYPE= or no file_contexts.
 */
export function loadPolicy(readFile: (relPath: string) => Buffer | null): SelinuxPolicy | null {
  const config = readFile("etc/selinux/config");
  if (config === null) return null;
  const type = parseConfig(config);
  if (type === null || type.length === 0) return null;
  if (type.includes("/") || type === "." || type === ".." || type.includes("\0"))
    throw new CfsError(`etc/selinux/config: invalid SELINUXTYPE ${JSON.stringify(type)}`);
  const base = `etc/selinux/${type}/contexts/files/file_contexts`;
  const main = readFile(base);
  if (main === null) {
    if (readFile(base + ".bin") !== null)
      throw new CfsError(`${base}: only the compiled ${base}.bin is present; cfsctl reads the text file_contexts`);
    return null;
  }
  const specs: Spec[] = [];
  const rests = new Map<string, PatternFacts | null>();
  parseSpecFile(main, base, specs, rests);
  for (const suffix of [".homedirs", ".local"]) {
    const d = readFile(base + suffix);
    if (d !== null) parseSpecFile(d, base + suffix, specs, rests);
  }
  const subsData = readFile(base + ".subs");
  const distData = readFile(base + ".subs_dist");
  const subs = subsData === null ? [] : parseSubsFile(subsData);
  const dist = distData === null ? [] : parseSubsFile(distData);
  return new SelinuxPolicy(specs, subs, dist);
}

// ---------------------------------------------------------------------------
// Relabelling an inode tree

const XATTR_KEY = "security.selinux";

/**
 * Set security.selinux on every inode of the tree (root included) from the
 * policy, or remove it where the policy gives <<none>> or nothing. A
 * hardlinked inode is labelled once, by its primary entry's path. Inodes
 * with the same label share one copy of its value.
 */
export function relabelTree(root: Inode, policy: SelinuxPolicy): void {
  const key = Buffer.from(XATTR_KEY, "latin1");
  /** The policy's value -> the copy set on inodes; and the copies. */
  const copies = new Map<Buffer, Buffer>();
  const copySet = new Set<Buffer>();
  /** Inodes labelled with no label. */
  const unlabelled = new Set<Inode>();
  /**
   * Whether an inode is labelled already: it holds one of this call's
   * copies (made here, so no inode had them before), or it is in
   * `unlabelled`. Cheaper than a set of every inode.
   */
  const done = (inode: Inode): boolean => {
    const xs = inode.xattrs;
    for (let i = 0; i < xs.length; i++) if (copySet.has(xs[i]!.value)) return true;
    return unlabelled.size > 0 && unlabelled.has(inode);
  };
  const onlyLinked = new Map<Inode, string>();
  /** Label an inode; its path is dir + "/" + name (dir null: name is the path). */
  const set = (inode: Inode, v: Buffer | null, dir: string | null, name: string | Buffer): void => {
    if (v === null) {
      inode.removeXattr(key);
      unlabelled.add(inode);
      return;
    }
    let copy = copies.get(v);
    if (copy === undefined) {
      copies.set(v, (copy = Buffer.from(v)));
      copySet.add(copy);
    }
    // setXattr replaces an existing label itself.
    if (!inode.setXattr(key, copy)) {
      const path = dir === null ? String(name) : dir + "/" + name.toString("latin1");
      throw new CfsError(`${JSON.stringify(path)}: no room for the ${XATTR_KEY} xattr (inode xattr budget exceeded)`);
    }
  };
  set(root, policy.lookupKey("/", root.mode), null, "/");
  const walk = (dir: Inode, dirPath: string): void => {
    const ctx = policy.dirContext(dirPath);
    for (const ent of dir.entries!) {
      const inode = ent.inode;
      if (ent.hardlink) {
        if (!done(inode) && !onlyLinked.has(inode)) onlyLinked.set(inode, dirPath + "/" + ent.name.toString("latin1"));
        continue;
      }
      if (!done(inode)) set(inode, policy.lookupChild(ctx, dirPath, ent.name, inode.mode), dirPath, ent.name);
      if (inode.entries) walk(inode, dirPath + "/" + ent.name.toString("latin1"));
    }
  };
  walk(root, "");
  // Inodes reached only through hardlink entries: by the first such path.
  for (const [inode, path] of onlyLinked) if (!done(inode)) set(inode, policy.lookupKey(path, inode.mode), null, path);
}
