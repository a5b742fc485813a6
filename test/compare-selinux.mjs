// Differential check of SELinux labelling against real libselinux, for
// maintainers: random file_contexts (with .homedirs, .local, .subs and
// .subs_dist now and then) and random paths of every file type are labelled
// by `matchpathcon` (selinux-utils, libselinux with PCRE2) and by cfsctl,
// both as single lookups (SelinuxPolicy.lookup) and through relabelTree on a
// tree of those paths (the path create-image takes). Any difference is
// printed with the policy's directory, which is kept.
//
// Usage: npm run compare-selinux -- [--seed N] [--policies N]
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Inode, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK } from "../dist/model/inode.js";
import { loadPolicy, relabelTree } from "../dist/tree/selinux.js";
import { CfsError } from "../dist/util/errors.js";
import { rng } from "./prng.mjs";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? dflt : Number(process.argv[i + 1]);
};
const seed = arg("--seed", Date.now() % 1e9) >>> 0;
const policies = arg("--policies", 200);
if (spawnSync("matchpathcon", ["-V"], { stdio: "ignore" }).error) {
  console.error("compare-selinux: matchpathcon not found (Debian: apt-get install selinux-utils)");
  process.exit(2);
}
console.log(`seed ${seed}`);

const { int, pick, chance } = rng(seed);

// matchpathcon's -m names, file_contexts' type fields and the mode bits of each type.
const TYPES = [
  { m: "file", f: "--", mode: S_IFREG },
  { m: "dir", f: "-d", mode: S_IFDIR },
  { m: "lnk_file", f: "-l", mode: S_IFLNK },
  { m: "chr_file", f: "-c", mode: S_IFCHR },
  { m: "blk_file", f: "-b", mode: S_IFBLK },
  { m: "pipe", f: "-p", mode: S_IFIFO },
  { m: "sock_file", f: "-s", mode: S_IFSOCK },
];

// Names of the trees: words the regexes use, and bytes that need care.
const WORDS = ["a", "b", "c", "ab", "ba", "bin", "lib", "lib64", "usr", "var", "run", "lock", "home", "root", "etc", "x.y", "a.b", "a+", "1", "42", "-", "_"];
const ODD = ["a b", "\t", "\n", "b\\", "\xe9", "\xff", "[a]", "(x)", "a|b", "^", "$", "*", "?", "{1}", ".", "..x", "A", "B"];
const name = () => (chance(0.8) ? pick(WORDS) : chance(0.5) ? pick(ODD) : pick(WORDS) + pick(ODD));

// Pieces of regexes, as policies write them.
const LITERALS = ["a", "b", "c", "ab", "ba", "bin", "lib", "lib64", "usr", "var", "run", "lock", "home", "root", "etc", "x\\.y", "a\\.b", "a\\+", "x.y", "A"];
const ATOMS = [
  () => pick(LITERALS),
  () => "[^/]*",
  () => "[^/]+",
  () => ".*",
  () => ".+",
  () => "(a|b|bin)",
  () => "(lib|lib64)",
  () => "[abc]+",
  () => "[a-c]*",
  () => "[0-9]+",
  () => "\\d+",
  () => "[[:digit:]]+",
  () => "[[:alpha:]]*",
  () => pick(LITERALS) + "?",
  () => pick(LITERALS) + ".*",
  () => pick(LITERALS) + "[^/]*",
  () => "a{1,2}",
  () => "b{2}",
  () => ".",
  () => "..?",
  () => "(a)?b",
  () => "[^a/]+",
  () => "\\w+",
  () => "[.]",
  () => "(?i)a",
  () => "(?:a|b)+",
  () => pick(LITERALS) + "*?",
  () => "[\\w.-]+",
  () => "\\s*",
  () => "[]a]",
  () => "[^]a/]*",
  () => "a{0,}",
  () => "a{,2}",
  () => "(?>a+)",
  () => "a++",
  () => "\\Qa.b\\E",
  () => "(a|)",
  () => "[[:upper:]]+",
  () => "[^[:digit:]/]+",
  () => "(/[^/]+)*",
  () => "[a-z0-9_]+",
  () => "a(?#note)b",
  () => "\\x41",
  () => "\\101",
  () => "[\\x00-\\x7f]+",
  () => "\\N+",
  () => "[^\\n]*",
  () => "(?=a)a",
  () => "(?!b)[^/]",
  () => "(?<=a)b",
  () => "[[:space:]]",
  () => "\\$",
  () => "\\|",
  () => "x\\z",
  () => "(?s).",
  () => "(?m)a$",
];
const TAILS = ["", "", "", "(/.*)?", "/.*", "(/[^/]*)?", "/", "(|/.*)", "/[^/]+", "(/.+)?", ".*", "$", "/?"];

function regex() {
  let s = "";
  const depth = int(4);
  if (depth === 0) return pick(["/", "/.*", "/[^/]+", "/(.*)?", "/a(/.*)?", "/.+", "(/.*)?"]);
  for (let i = 0; i < depth; i++) s += "/" + pick(ATOMS)();
  return s + pick(TAILS);
}

function specLine(i) {
  const ctx = chance(0.12) ? "<<none>>" : `system_u:object_r:t${i}_t:s0`;
  const type = chance(0.6) ? null : pick(TYPES).f;
  return [regex(), ...(type ? [type] : []), ctx].join(chance(0.5) ? "\t" : " ");
}

function plainPath() {
  let s = "";
  for (let i = 1 + int(2); i > 0; i--) s += "/" + pick(["a", "b", "ab", "lib", "usr", "run", "var", "lock", "home"]);
  return s;
}

function makePolicy(dir) {
  const fcDir = path.join(dir, "etc/selinux/t/contexts/files");
  fs.mkdirSync(fcDir, { recursive: true });
  fs.writeFileSync(path.join(dir, "etc/selinux/config"), "SELINUXTYPE=t\n");
  const lines = [];
  if (chance(0.7)) lines.push("/.*\tsystem_u:object_r:default_t:s0");
  for (let i = 2 + int(30); i > 0; i--) lines.push(specLine(lines.length));
  if (chance(0.2)) lines.splice(int(lines.length), 0, "# a comment", "");
  const fc = path.join(fcDir, "file_contexts");
  fs.writeFileSync(fc, lines.join("\n") + "\n");
  for (const suffix of [".homedirs", ".local"]) {
    if (!chance(0.25)) continue;
    const more = [];
    for (let i = 1 + int(5); i > 0; i--) more.push(specLine(100 + lines.length + more.length));
    fs.writeFileSync(fc + suffix, more.join("\n") + "\n");
  }
  for (const suffix of [".subs", ".subs_dist"]) {
    if (!chance(0.35)) continue;
    const subs = [];
    for (let i = 1 + int(3); i > 0; i--) subs.push(`${plainPath()} ${chance(0.15) ? "/" : plainPath()}`);
    fs.writeFileSync(fc + suffix, subs.join("\n") + "\n");
  }
  return fc;
}

/** A random tree: every node's path (latin1 string) and type, the root first. */
function makeTree() {
  const nodes = [{ path: "/", type: TYPES[1] }];
  const fill = (dir, depth) => {
    const seen = new Set();
    for (let i = 1 + int(6); i > 0; i--) {
      const n = name();
      if (seen.has(n) || n === "." || n === "..") continue;
      seen.add(n);
      const p = (dir === "/" ? "" : dir) + "/" + n;
      const type = depth < 4 && chance(0.4) ? TYPES[1] : pick(TYPES);
      nodes.push({ path: p, type });
      if (type === TYPES[1]) fill(p, depth + 1);
    }
  };
  fill("/", 0);
  return nodes;
}

/** Keys no tree holds: doubled and trailing slashes, relative and empty components. */
function oddKeys() {
  const keys = [];
  for (let i = 0; i < 20; i++) {
    let s = "";
    for (let j = 1 + int(3); j > 0; j--) s += pick(["/", "//", "/./"]) + name();
    if (chance(0.3)) s += "/";
    keys.push({ path: s, type: pick(TYPES) });
  }
  return keys;
}

/** libselinux's answers, in the order of `items` (a label, or null for <<none>> and no match). */
function oracle(fc, items) {
  const out = new Array(items.length);
  for (const t of TYPES) {
    const idx = [];
    items.forEach((it, i) => it.type === t && idx.push(i));
    if (idx.length === 0) continue;
    // NUL-separated through xargs: names with any byte reach matchpathcon as they are.
    const input = Buffer.concat(idx.map((i) => Buffer.concat([Buffer.from(items[i].path, "latin1"), Buffer.from([0])])));
    const r = spawnSync("xargs", ["-0", "matchpathcon", "-N", "-n", "-f", fc, "-m", t.m, "--"], { input, maxBuffer: 1 << 26 });
    const lines = r.stdout.toString("latin1").split("\n").slice(0, -1);
    if (r.status !== 0 || lines.length !== idx.length) return { error: `matchpathcon failed (${r.status}): ${r.stderr.toString().slice(0, 300)}` };
    idx.forEach((i, k) => (out[i] = lines[k] === "<<none>>" ? null : lines[k]));
  }
  return { labels: out };
}

function labelOf(inode) {
  const x = inode.xattrs.find((e) => e.key.toString() === "security.selinux");
  return x ? x.value.toString("latin1").replace(/\0$/, "") : null;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "cfsctl-compare-selinux-"));
let compared = 0;
let different = 0;
let refusedByUs = 0;
for (let n = 0; n < policies; n++) {
  const dir = path.join(work, `p${n}`);
  const fc = makePolicy(dir);
  let policy;
  try {
    policy = loadPolicy((rel) => {
      const f = path.join(dir, rel);
      return fs.existsSync(f) ? fs.readFileSync(f) : null;
    });
  } catch (e) {
    if (!(e instanceof CfsError)) throw e;
    // A regex cfsctl refuses: libselinux must refuse some lookup too (it compiles lazily).
    refusedByUs++;
    const r = oracle(fc, makeTree());
    if (!r.error) {
      different++;
      console.log(`DIFFERENT ${dir}: cfsctl refuses the policy (${e.message}), libselinux labels with it`);
    } else fs.rmSync(dir, { recursive: true });
    continue;
  }
  const nodes = makeTree();
  const items = [...nodes, ...oddKeys()];
  const want = oracle(fc, items);
  if (want.error) {
    different++;
    console.log(`DIFFERENT ${dir}: libselinux fails (${want.error}), cfsctl accepts the policy`);
    continue;
  }
  // Single lookups.
  const bad = [];
  items.forEach((it, i) => {
    const got = policy.lookup(Buffer.from(it.path, "latin1"), it.type.mode | 0o644);
    const g = got === null ? null : got.toString("latin1").replace(/\0$/, "");
    if (g !== want.labels[i]) bad.push(`lookup ${JSON.stringify(it.path)} ${it.type.m}: cfsctl ${g}, libselinux ${want.labels[i]}`);
  });
  // The same tree through relabelTree.
  const inodes = new Map([["/", new Inode(S_IFDIR | 0o755)]]);
  for (const node of nodes.slice(1)) {
    const slash = node.path.lastIndexOf("/");
    const parent = inodes.get(slash === 0 ? "/" : node.path.slice(0, slash));
    const inode = new Inode(node.type.mode | 0o644);
    parent.addEntry(Buffer.from(node.path.slice(slash + 1), "latin1"), inode);
    inodes.set(node.path, inode);
  }
  relabelTree(inodes.get("/"), policy);
  nodes.forEach((node, i) => {
    const g = labelOf(inodes.get(node.path));
    if (g !== want.labels[i]) bad.push(`relabelTree ${JSON.stringify(node.path)} ${node.type.m}: cfsctl ${g}, libselinux ${want.labels[i]}`);
  });
  compared += items.length + nodes.length;
  if (bad.length > 0) {
    different++;
    console.log(`DIFFERENT ${dir}:\n  ${bad.slice(0, 8).join("\n  ")}${bad.length > 8 ? `\n  … ${bad.length - 8} more` : ""}`);
  } else fs.rmSync(dir, { recursive: true });
}
console.log(`${policies} policies (${refusedByUs} refused by cfsctl), ${compared} labels compared, ${different} policies different`);
if (different === 0) fs.rmSync(work, { recursive: true });
process.exit(different === 0 ? 0 : 1);
