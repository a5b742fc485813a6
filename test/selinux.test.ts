/**
 * SELinux labelling against the answers of real libselinux 3.4
 * (fixtures/selinux/oracle.tsv and probe/oracle.tsv, see their README).
 */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { Inode, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK } from "../src/model/inode.js";
import { compilePcre, loadPolicy, patternFacts, relabelTree, specPatternFacts, type SelinuxPolicy } from "../src/tree/selinux.js";
import { CfsError } from "../src/util/errors.js";

const SEL = path.resolve(import.meta.dirname, "..", "fixtures", "selinux");

const MODES: Record<string, number> = {
  "-": S_IFREG,
  d: S_IFDIR,
  l: S_IFLNK,
  c: S_IFCHR,
  b: S_IFBLK,
  p: S_IFIFO,
  s: S_IFSOCK,
};

/** Undo the oracle's escaping: \xHH for bytes outside 0x21..0x7e, \\ for a backslash. */
function unescape(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "\\") {
      if (s[i + 1] === "\\") {
        out.push(0x5c);
        i++;
      } else if (s[i + 1] === "x") {
        out.push(parseInt(s.slice(i + 2, i + 4), 16));
        i += 3;
      } else throw new Error(`bad escape in ${s}`);
    } else out.push(s.charCodeAt(i));
  }
  return Buffer.from(out);
}

function readOracle(file: string): { path: Buffer; type: string; label: string; raw: string }[] {
  const lines = fs.readFileSync(file, "latin1").split("\n").filter((l) => l.length > 0);
  expect(lines[0]).toBe("path\ttype\tlabel");
  return lines.slice(1).map((l) => {
    const [p, type, label] = l.split("\t");
    return { path: unescape(p!), type: type!, label: label!, raw: p! };
  });
}

function policyFrom(dir: string): SelinuxPolicy {
  const p = loadPolicy((rel) => {
    const f = path.join(dir, rel);
    return fs.existsSync(f) ? fs.readFileSync(f) : null;
  });
  if (!p) throw new Error(`no policy in ${dir}`);
  return p;
}

function memPolicy(files: Record<string, string>): SelinuxPolicy | null {
  return loadPolicy((rel) => (rel in files ? Buffer.from(files[rel]!, "latin1") : null));
}

function checkOracle(policy: SelinuxPolicy, oracle: string): void {
  const rows = readOracle(oracle);
  const bad: string[] = [];
  for (const r of rows) {
    const got = policy.lookup(r.path, MODES[r.type]! | 0o644);
    const want = r.label === "<<none>>" ? null : r.label + "\0";
    const gotS = got === null ? null : got.toString("latin1");
    if (gotS !== want) bad.push(`${r.raw} ${r.type}: got ${gotS}, want ${want}`);
  }
  expect(bad).toEqual([]);
  expect(rows.length).toBeGreaterThan(30);
}

describe("selinux oracle (libselinux 3.4)", () => {
  it("labels every path of oracle.tsv as libselinux does (Debian mls policy)", () => {
    const policy = policyFrom(path.join(SEL, "policy"));
    expect(readOracle(path.join(SEL, "oracle.tsv")).length).toBe(505);
    checkOracle(policy, path.join(SEL, "oracle.tsv"));
  });

  it("labels every path of probe/oracle.tsv as libselinux does (probe policy)", () => {
    const policy = policyFrom(path.join(SEL, "probe", "policy"));
    checkOracle(policy, path.join(SEL, "probe", "oracle.tsv"));
  });
});

describe("policy loading", () => {
  const fc = "etc/selinux/t/contexts/files/file_contexts";

  it("returns null without config, SELINUXTYPE or file_contexts", () => {
    expect(memPolicy({})).toBeNull();
    expect(memPolicy({ "etc/selinux/config": "SELINUX=enforcing\n" })).toBeNull();
    expect(memPolicy({ "etc/selinux/config": "SELINUXTYPE=t\n" })).toBeNull();
  });

  it("reads SELINUXTYPE as libselinux does (case, spaces, last wins)", () => {
    const p = memPolicy({
      "etc/selinux/config": "# c\nSELINUXTYPE=x\n  selinuxtype= t \r\n",
      [fc]: "/.*\tu:r:t:s0\n",
    });
    expect(p!.lookup(Buffer.from("/a"), S_IFREG)!.toString()).toBe("u:r:t:s0\0");
  });

  it("refuses a SELINUXTYPE that leaves etc/selinux", () => {
    expect(() => memPolicy({ "etc/selinux/config": "SELINUXTYPE=../x\n" })).toThrow(CfsError);
  });

  it("names file and line of a malformed line", () => {
    const cfg = { "etc/selinux/config": "SELINUXTYPE=t\n" };
    const cases: [string, RegExp][] = [
      ["/a u:r:t:s0\n/b\n", /file_contexts:2: line is missing fields/],
      ["/a -x u:r:t:s0\n", /file_contexts:1: invalid file type -x/],
      ["# ok\n/a(b u:r:t:s0\n", /file_contexts:2: cannot use regex \/a\(b/],
      ["/a\\1 u:r:t:s0\n", /file_contexts:1: cannot use regex .*backreference/],
      ["/\xe9 u:r:t:s0\n", /file_contexts:1: non-ASCII/],
      ["/a\\p{L} u:r:t:s0\n", /file_contexts:1: cannot use regex/],
      ["/a(*COMMIT) u:r:t:s0\n", /file_contexts:1: cannot use regex/],
      ["/a\\q u:r:t:s0\n", /file_contexts:1: cannot use regex .*unrecognized/],
      ["/a** u:r:t:s0\n", /file_contexts:1: cannot use regex/],
      ["/a(?<=a+) u:r:t:s0\n", /file_contexts:1: cannot use regex .*lookbehind/],
    ];
    for (const [text, re] of cases) {
      let err: unknown;
      try {
        memPolicy({ ...cfg, [fc]: text });
      } catch (e) {
        err = e;
      }
      expect(err, text).toBeInstanceOf(CfsError);
      expect((err as Error).message, text).toMatch(re);
    }
  });

  it("reads lines as libselinux does: to the first NUL, three fields, the rest ignored; .subs lines of one field skipped", () => {
    const cfg = { "etc/selinux/config": "SELINUXTYPE=t\n" };
    const lab = (p: SelinuxPolicy | null, path: string) => p!.lookup(Buffer.from(path, "latin1"), S_IFREG)?.toString("latin1").slice(0, -1) ?? null;
    const p = memPolicy({
      ...cfg,
      [fc]: "/.* u:r:any_t:s0\n/a/f -- u:r:a_t:s0 junk \xe9 # comment\n/b/f u:r:b_t:s0\0garbage \xe9\n \0/c/f u:r:c_t:s0\n/d/f\t-- u:r:d_t:s0\n",
      [fc + ".subs"]: "/one\n/x /d extra fields\n",
    });
    expect(lab(p, "/a/f")).toBe("u:r:a_t:s0");
    expect(lab(p, "/b/f")).toBe("u:r:b_t:s0");
    expect(lab(p, "/c/f")).toBe("u:r:any_t:s0"); // the line ended before its first field
    expect(lab(p, "/x/f")).toBe("u:r:d_t:s0");
    // A .subs line longer than libselinux's 1022-byte read is read as several lines.
    const long = `/${"l".repeat(1015)} /ignored\n`; // 1022 bytes with the space, then "/ignored\n" on its own: one field, skipped
    const q = memPolicy({ ...cfg, [fc]: "/.* u:r:any_t:s0\n/d/f u:r:d_t:s0\n", [fc + ".subs"]: `${long}/y /d\n` });
    expect(lab(q, "/y/f")).toBe("u:r:d_t:s0");
    expect(lab(q, `/${"l".repeat(1015)}/f`)).toBe("u:r:any_t:s0");
  });

  it("refuses a tree that only has the compiled file_contexts.bin", () => {
    expect(() => memPolicy({ "etc/selinux/config": "SELINUXTYPE=t\n", [fc + ".bin"]: "x" })).toThrow(/\.bin/);
  });
});

describe("PCRE2 semantics", () => {
  const cases: [string, string, boolean][] = [
    ["^a.b$", "a\nb", true], // DOTALL
    ["^ab$", "ab\n", true], // $ before a final newline
    ["^ab$", "ab\n\n", false],
    ["^ab\\z", "ab\n", false],
    ["^ab\\Z", "ab\n", true],
    ["^a\\sb$", "a\xa0b", false], // \s is ASCII only
    ["^a\\Hb$", "a\xa0b", false], // \H: not horizontal space, which has NBSP in 8-bit mode
    ["^a\\Vb$", "a\x85b", false], // \V: not vertical space, which has NEL
    ["^a\\Vb$", "a\x0bb", false],
    ["^[]a]+$", "]a]", true], // ] first in a class is literal
    ["^[^]a]$", "b", true],
    ["^[^]a]$", "]", false],
    ["^[[:alpha:]_]+$", "ab_C", true],
    ["^[[:^digit:]]$", "5", false],
    ["^a{,2}$", "a{,2}", true], // not a quantifier in PCRE2 10.42
    ["^a{2}$", "aa", true],
    ["^x{a}$", "x{a}", true],
    ["^(?i)abc$", "AbC", true],
    ["^a(?i)b|c$", "C", true],
    ["^(a(?i)b)c$", "aBC", false],
    ["^(?i:[a-c])d$", "Bd", true],
    ["^\\Qa.b\\E$", "axb", false],
    ["^\\Qa.b\\E$", "a.b", true],
    ["^a\\Q\\E+$", "aaa", true],
    ["^(?x) a b # c\n$", "ab", true],
    ["^(?>a+)a$", "aaa", false], // atomic
    ["^a++a$", "aaa", false], // possessive
    ["^a+?$", "aaa", true],
    ["^\\x41\\101\\o{101}\\x{41}$", "AAAA", true],
    ["^\\cA$", "\x01", true],
    ["^(?-s).$", "\n", false],
    ["^\\N$", "\n", false],
    ["^(?m)a$\\nb$", "a\nb", true],
    ["^a|b$", "xb", true], // the anchors bind to the branches, as libselinux builds them
    ["^a|b$", "ax", true],
    ["^\\d+$", "\xb2", false],
  ];
  for (const [re, subject, want] of cases) {
    it(`${JSON.stringify(re)} on ${JSON.stringify(subject)}`, () => {
      expect(compilePcre(re).test(subject)).toBe(want);
    });
  }
  it("refuses what PCRE2 rejects or cannot be mirrored", () => {
    for (const re of ["a\\1", "(a)\\1", "\\k<n>", "(?(1)a)", "(?R)", "\\p{L}", "[\\d-z]", "[z-a]", "(?<=a*)", "a{3,2}", "(*FAIL)", "[[:foo:]]", "(?<=a)*", "(?>(a?)*)", "a{70000}", "\\h", "\\v", "\\R"]) {
      expect(() => compilePcre(re), re).toThrow(CfsError);
    }
  });
});

describe("rules shown by the probe policy", () => {
  const cfg = { "etc/selinux/config": "SELINUXTYPE=t\n" };
  const fc = "etc/selinux/t/contexts/files/file_contexts";
  const lab = (p: SelinuxPolicy, path: string, mode = S_IFREG): string | null => p.lookup(Buffer.from(path, "latin1"), mode)?.toString("latin1").slice(0, -1) ?? null;

  it("exact specs beat regexes; the last match wins within each group", () => {
    const p = memPolicy({ ...cfg, [fc]: "/x/a\tu:r:exact:s0\n/x/a.*\tu:r:rx:s0\n/x\\.y\tu:r:lit:s0\n/x.y\tu:r:any:s0\n" })!;
    expect(lab(p, "/x/a")).toBe("u:r:exact:s0");
    expect(lab(p, "/x/ab")).toBe("u:r:rx:s0");
    expect(lab(p, "/x.y")).toBe("u:r:lit:s0");
    expect(lab(p, "/xzy")).toBe("u:r:any:s0");
  });

  it("stems: a spec is only tried on keys with the same first component", () => {
    // "/a\-b" is the stem of the spec (backslash included); the key's is "/a-b".
    const p = memPolicy({ ...cfg, [fc]: "/.*\tu:r:d:s0\n/a\\-b/c\tu:r:never:s0\n/a\\.b/c\tu:r:dot:s0\n" })!;
    expect(lab(p, "/a-b/c")).toBe("u:r:d:s0");
    // A "." in the first component means no stem at all: the spec is tried.
    expect(lab(p, "/a.b/c")).toBe("u:r:dot:s0");
  });

  it("cleans keys and applies one .subs then one .subs_dist line", () => {
    const p = memPolicy({
      ...cfg,
      [fc]: "/.*\tu:r:d:s0\n/t(/.*)?\tu:r:t:s0\n/r(/.*)?\tu:r:r:s0\n",
      [fc + ".subs"]: "/a /b\n",
      [fc + ".subs_dist"]: "/b /t\n/x /\n",
    })!;
    expect(lab(p, "/a//y/")).toBe("u:r:t:s0");
    expect(lab(p, "/ab")).toBe("u:r:d:s0");
    expect(lab(p, "/x/r/z")).toBe("u:r:r:s0");
  });
});

describe("relabelTree", () => {
  it("labels every inode once, hardlinks by their primary path, root as /", () => {
    const p = memPolicy({
      "etc/selinux/config": "SELINUXTYPE=t\n",
      "etc/selinux/t/contexts/files/file_contexts":
        "/.*\tu:r:default:s0\n/\t-d\tu:r:root:s0\n/a(/.*)?\tu:r:a:s0\n/b(/.*)?\tu:r:b:s0\n/none(/.*)?\t<<none>>\n",
    })!;
    const root = new Inode(S_IFDIR | 0o755);
    const a = new Inode(S_IFDIR | 0o755);
    const b = new Inode(S_IFDIR | 0o755);
    const none = new Inode(S_IFREG | 0o644);
    const shared = new Inode(S_IFREG | 0o644);
    const other = new Inode(S_IFREG | 0o644);
    const key = Buffer.from("security.selinux");
    none.setXattr(key, Buffer.from("stale\0"));
    other.setXattr(Buffer.from("user.x"), Buffer.from("1"));
    other.setXattr(key, Buffer.from("stale\0"));
    root.addEntry(Buffer.from("a"), a);
    root.addEntry(Buffer.from("b"), b);
    root.addEntry(Buffer.from("none"), none);
    root.addEntry(Buffer.from("z"), other);
    // "/a/link" comes first in depth-first order but is the hardlink entry.
    a.addEntry(Buffer.from("link"), shared, true);
    b.addEntry(Buffer.from("file"), shared);
    relabelTree(root, p);
    const get = (n: Inode): string | undefined => n.getXattr(key)?.toString("latin1");
    expect(get(root)).toBe("u:r:root:s0\0");
    expect(get(a)).toBe("u:r:a:s0\0");
    expect(get(b)).toBe("u:r:b:s0\0");
    expect(get(shared)).toBe("u:r:b:s0\0");
    expect(shared.xattrs.length).toBe(1);
    expect(get(none)).toBeUndefined();
    expect(none.xattrs.length).toBe(0);
    expect(get(other)).toBe("u:r:default:s0\0");
    expect(other.xattrs.map((x) => x.key.toString())).toEqual(["user.x", "security.selinux"]);
  });

  it("throws CfsError when the label does not fit the xattr budget", () => {
    const p = memPolicy({
      "etc/selinux/config": "SELINUXTYPE=t\n",
      "etc/selinux/t/contexts/files/file_contexts": "/.*\tu:r:default:s0\n",
    })!;
    const root = new Inode(S_IFDIR | 0o755);
    const f = new Inode(S_IFREG | 0o644);
    f.setXattr(Buffer.from("user.big"), Buffer.alloc(0x7fff - 40));
    root.addEntry(Buffer.from("f"), f);
    expect(() => relabelTree(root, p)).toThrow(CfsError);
  });
});

/**
 * relabelTree looks children up from what their directory shares
 * (SelinuxPolicy.dirContext): it must give every inode exactly what a lookup
 * of its whole path gives.
 */
/**
 * libselinux's lookup written plainly (for small policies): clean the key,
 * one .subs and one .subs_dist rewrite (the last matching line of each),
 * specs with meta characters first, and the last spec that applies and
 * matches wins. No index, no filter.
 */
function referenceLabel(specs: string[][], subs: string[][], dist: string[][], path: string, mode: number): string | null {
  let key = path.replace(/\/{2,}/g, "/");
  if (key.length > 1 && key.endsWith("/")) key = key.slice(0, -1);
  const sub = (list: string[][]): boolean => {
    for (let i = list.length - 1; i >= 0; i--) {
      const [src, dst] = list[i]!;
      if (key === src || key.startsWith(src + "/")) {
        key = dst! + (key.length > src!.length && dst === "/" ? key.slice(src!.length + 1) : key.slice(src!.length));
        return true;
      }
    }
    return false;
  };
  sub(subs);
  sub(dist);
  const meta = (re: string): boolean => {
    for (let i = 0; i < re.length; i++) {
      if (".^$?*+|[({".includes(re[i]!)) return true;
      if (re[i] === "\\") i++;
    }
    return false;
  };
  const stemOf = (re: string): string | null => {
    const i = re.indexOf("/", 1);
    return i < 0 || /[.^$?*+|[({]/.test(re.slice(0, i)) ? null : re.slice(0, i);
  };
  const keyStem = key.indexOf("/", 1) < 0 ? null : key.slice(0, key.indexOf("/", 1));
  const sorted = [...specs.filter((l) => meta(l[0]!)), ...specs.filter((l) => !meta(l[0]!))];
  const typeOf: Record<string, number> = { "--": S_IFREG, "-d": S_IFDIR, "-l": S_IFLNK, "-c": S_IFCHR, "-b": S_IFBLK, "-p": S_IFIFO, "-s": S_IFSOCK };
  for (let i = sorted.length - 1; i >= 0; i--) {
    const l = sorted[i]!;
    const type = l.length === 3 ? typeOf[l[1]!]! : 0;
    if (type !== 0 && type !== (mode & 0o170000)) continue;
    const st = stemOf(l[0]!);
    if (st !== null && st !== keyStem) continue;
    if (!compilePcre("^" + l[0] + "$").test(key)) continue;
    const ctx = l[l.length - 1]!;
    return ctx === "<<none>>" ? null : ctx + "\0";
  }
  return null;
}

describe("relabelTree gives what lookups of whole paths give", () => {
  const key = Buffer.from("security.selinux");
  const TYPES = [S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK];

  /** Every inode with the path it is labelled by: its first non-hardlink path, else its first path. */
  function expected(root: Inode): Map<Inode, string> {
    const primary = new Map<Inode, string>([[root, "/"]]);
    const linked = new Map<Inode, string>();
    const walk = (dir: Inode, prefix: string): void => {
      for (const e of dir.entries!) {
        const p = prefix + "/" + e.name.toString("latin1");
        if (e.hardlink) {
          if (!linked.has(e.inode)) linked.set(e.inode, p);
          continue;
        }
        if (!primary.has(e.inode)) primary.set(e.inode, p);
        if (e.inode.entries) walk(e.inode, p);
      }
    };
    walk(root, "");
    for (const [n, p] of linked) if (!primary.has(n)) primary.set(n, p);
    return primary;
  }

  function check(p: SelinuxPolicy, root: Inode, reference?: (path: string, mode: number) => string | null): number {
    const want = expected(root);
    relabelTree(root, p);
    const bad: string[] = [];
    for (const [n, path] of want) {
      const w = p.lookupKey(path, n.mode)?.toString("latin1");
      if (reference) {
        const r = reference(path, n.mode) ?? undefined;
        if (r !== w) bad.push(`${JSON.stringify(path)} ${n.mode.toString(8)}: lookup ${w}, reference ${r}`);
      }
      const got = n.getXattr(key)?.toString("latin1");
      if (got !== w) bad.push(`${JSON.stringify(path)} ${n.mode.toString(8)}: got ${got}, want ${w}`);
    }
    expect(bad).toEqual([]);
    return want.size;
  }

  it("on the oracle's paths with the Debian mls policy (devices included)", () => {
    const policy = policyFrom(path.join(SEL, "policy"));
    const rows = readOracle(path.join(SEL, "oracle.tsv"));
    // One tree per type letter: the same path may be listed with several types.
    for (const type of Object.keys(MODES)) {
      const root = new Inode(S_IFDIR | 0o755);
      for (const r of rows) {
        const comps = r.path.toString("latin1").split("/").filter((c) => c.length > 0);
        let dir = root;
        for (let i = 0; i < comps.length; i++) {
          const name = Buffer.from(comps[i]!, "latin1");
          const last = i === comps.length - 1;
          const have = dir.lookup(name)?.inode;
          if (have) {
            if (!have.entries) break; // a file here already
            dir = have;
            continue;
          }
          const n = new Inode((last ? MODES[type]! : S_IFDIR) | 0o644);
          dir.addEntry(name, n);
          if (!n.entries) break;
          dir = n;
        }
      }
      expect(check(policy, root)).toBeGreaterThan(300);
    }
  });

  it("on random trees and policies (.subs, .subs_dist, literals, types, newlines)", () => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed ^= seed << 13;
      seed >>>= 0;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      seed >>>= 0;
      return seed % n;
    };
    const pick = <T>(a: T[]): T => a[rnd(a.length)]!;
    const names = ["a", "b", "c", "ab", "b.c", "aab.c", "xlock", "a.b", "c\n", "\n", "x y", "\xe9", "a+", "lib", "usr", "run", "var", "lock", "ba", "b\\"];
    const rxNames = ["a", "b", "c", "ab", "a\\.b", "c\\n", "lib", "usr", "run", "var", "lock", "ba", "a\\+", "b\\\\"];
    const tails = ["", "", "/", "(/.*)?", "/.*", ".*", "[^/]*", "/[ab]+", "?", "b?", "(/a)?", "\\n?", "/(lib|usr)(/.*)?", "(|/.*)", ".*ab", "/[^/]*lock", "(/a)?/ba", "/a*b\\.c", ".+", "/.+", ".?", ".{2}", ".*?", ".*\\z"];
    const types = ["", "", "", "--", "-d", "-l", "-c", "-s"];
    const rxPath = (depth: number): string => {
      let s = "";
      for (let i = 0; i < depth; i++) s += "/" + pick(rxNames);
      return s;
    };
    const plainPath = (depth: number): string => {
      let s = "";
      for (let i = 0; i < depth; i++) s += "/" + pick(["a", "b", "ab", "lib", "usr", "run", "var", "lock", "ba"]);
      return s;
    };
    let checked = 0;
    for (let round = 0; round < 300; round++) {
      const specs: string[][] = [["/.*", "u:r:default:s0"]];
      const nSpecs = 3 + rnd(25);
      for (let i = 0; i < nSpecs; i++) {
        const tail = pick(tails);
        const re = (rnd(8) === 0 && /^[/(]/.test(tail) ? "" : rxPath(1 + rnd(3))) + tail;
        const ctx = rnd(5) === 0 ? "<<none>>" : `u:r:t${i}:s0`;
        specs.push([re, pick(types), ctx].filter((f) => f.length > 0));
      }
      const subs: string[][] = [];
      const dist: string[][] = [];
      for (let i = rnd(4); i > 0; i--) subs.push([plainPath(1 + rnd(3)), rnd(5) === 0 ? "/" : plainPath(1 + rnd(2))]);
      for (let i = rnd(4); i > 0; i--) dist.push([plainPath(1 + rnd(3)), rnd(5) === 0 ? "/" : plainPath(1 + rnd(2))]);
      const text = (rows: string[][], sep: string): string => rows.map((r) => r.join(sep) + "\n").join("");
      const fc = "etc/selinux/t/contexts/files/file_contexts";
      const p = memPolicy({
        "etc/selinux/config": "SELINUXTYPE=t\n",
        [fc]: text(specs, "\t"),
        ...(subs.length ? { [fc + ".subs"]: text(subs, " ") } : {}),
        ...(dist.length ? { [fc + ".subs_dist"]: text(dist, " ") } : {}),
      })!;
      const root = new Inode(S_IFDIR | 0o755);
      const all: Inode[] = [];
      const fill = (dir: Inode, depth: number): void => {
        for (let i = 1 + rnd(6); i > 0; i--) {
          const name = Buffer.from(pick(names), "latin1");
          if (all.length > 0 && rnd(6) === 0) {
            // A hardlink; rarely a second primary entry (a producer's bug, labelled by its first path).
            const target = pick(all);
            if (!target.entries) dir.addEntry(name, target, rnd(8) !== 0);
            continue;
          }
          const mode = depth < 4 && rnd(3) === 0 ? S_IFDIR : pick(TYPES);
          const n = new Inode(mode | 0o644);
          if (rnd(4) === 0) n.setXattr(key, Buffer.from("stale\0"));
          if (dir.addEntry(name, n) === null) continue;
          all.push(n);
          if (n.entries) fill(n, depth + 1);
        }
      };
      fill(root, 0);
      checked += check(p, root, (path, mode) => referenceLabel(specs, subs, dist, path, mode));
    }
    expect(checked).toBeGreaterThan(1500);
  });
});

describe("specPatternFacts", () => {
  /** The facts (or error) of the whole pattern's tree, and of specPatternFacts with a shared cache. */
  function both(re: string, rests: Parameters<typeof specPatternFacts>[1]): [string, string] {
    const run = (f: () => unknown): string => {
      try {
        return JSON.stringify(f());
      } catch (e) {
        return `error: ${(e as Error).message}`;
      }
    };
    return [run(() => patternFacts(re)), run(() => specPatternFacts(re, rests))];
  }

  it("gives the facts of the whole pattern for every regex of the Debian policy", () => {
    const dir = path.join(SEL, "policy", "etc", "selinux", "mls", "contexts", "files");
    const rests = new Map();
    let n = 0;
    for (const f of ["file_contexts", "file_contexts.homedirs"])
      for (const line of fs.readFileSync(path.join(dir, f), "latin1").split("\n")) {
        const re = line.trim().split(/\s+/)[0]!;
        if (re.length === 0 || re.startsWith("#")) continue;
        const [whole, shared] = both(re, rests);
        expect(shared, re).toBe(whole);
        n++;
      }
    expect(n).toBeGreaterThan(5000);
    expect(rests.size).toBeLessThan(2000); // heads shared
  });

  it("gives the facts or the error of the whole pattern for tricky ones", () => {
    const heads = ["/a", "/b", "x", "/a-b", "/]}", "#", "/a*", "/a+", "/a?", "/a{2}", "/a\\.", "/a|b", "/a)", "/a^", "/a$", "/a\\Q", "/a(?i)"];
    const rests = ["(/.*)?", ".*", "[^/]*", "(?#c)*", "(?#c)", "(?i)a", "(?i)*", "(*FAIL)", "(a|b)", ".|b", "(", ")", "[z-a]", ".**", ".*+", "(?<n>a)(?<n>b)", "(a)\\1", "[[:<:]]a", "(?=a)*", "(?>a*)+", "(?>a)b", ".\\Qa*\\E*", "(?x) a #c", ".{2,1}", "(?|a)", "[]a]", "(x)abc(y)de", "[a]bc", "(x)\\.so", ".$x", "\\.pid", "\\.log.*", "\\.(a|b)", "\\Qa", "\\Ea", "\\d", "\\1", "\\", "\\*", "\\.*+"];
    const cache = new Map();
    for (const h of heads)
      for (const r of rests) {
        const [whole, shared] = both(h + r, cache);
        expect(shared, h + r).toBe(whole);
      }
  });
});
