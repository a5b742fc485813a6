// Differential check against upstream's C tools, for maintainers: random
// dumpfiles (valid and mutated) through cfsctl's parser and writer and
// through `mkcomposefs --from-file` must be accepted or refused alike and,
// when accepted, give the same image bytes; with composefs-info, that image
// must dump (and list: ls, objects, missing-objects) the same text. With --dirs, random directory trees (as root:
// devices, trusted.* xattrs, owners) through `cfsctl mkcomposefs DIR` and
// upstream's, with each scan option; with --digest-store, the two stores
// must hold the same files with the same modes.
//
// Usage: npm run compare-upstream -- [--seed N] [--cases N] [--dirs N]
// Upstream's tools are looked up in CFSCTL_PEERS (a directory), then PATH.
//
// Left out, as doc/mkcomposefs.md and doc/reading.md explain: digest fields
// that are not 64 hex digits or are missing (upstream reads uninitialised
// bytes), external sizes near 2^64 (upstream's chunk count wraps), and the
// composefs-info output for 4-byte xattr entries and for a redirect of a
// length that is a multiple of 4 (upstream over-reads).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseDumpfile } from "../dist/dumpfile/parse.js";
import { writeImage } from "../dist/erofs/writer.js";
import { dumpImage } from "../dist/erofs/reader.js";
import { CfsError } from "../dist/util/errors.js";
import { rng } from "./prng.mjs";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? dflt : Number(process.argv[i + 1]);
};
const seed = arg("--seed", Date.now() % 1e9) >>> 0;
const cases = arg("--cases", 2000);
const dirCases = arg("--dirs", 0);

function peer(name) {
  const dirs = [...(process.env.CFSCTL_PEERS ? [process.env.CFSCTL_PEERS] : []), ...(process.env.PATH ?? "").split(":")];
  for (const d of dirs) if (d && fs.existsSync(path.join(d, name))) return path.join(d, name);
  return null;
}
const CLI = path.join(import.meta.dirname, "..", "bin", "cfsctl");
const MKCOMPOSEFS = peer("mkcomposefs");
const COMPOSEFS_INFO = peer("composefs-info");
if (!MKCOMPOSEFS) {
  console.error("compare-upstream: no mkcomposefs in CFSCTL_PEERS or PATH");
  process.exit(2);
}
console.log(`seed ${seed}; ${MKCOMPOSEFS}${COMPOSEFS_INFO ? `, ${COMPOSEFS_INFO}` : " (no composefs-info: dumps not compared)"}`);

const { int, pick, chance, state } = rng(seed);

const HEX = "0123456789abcdef";
function esc(b, eq = false) {
  let s = "";
  for (const c of b) {
    if (c === 0x5c) s += "\\\\";
    else if (c <= 0x20 || c >= 0x7f || (eq && c === 0x3d)) s += "\\x" + HEX[c >> 4] + HEX[c & 15];
    else s += String.fromCharCode(c);
  }
  return s;
}
function randomName(maxLong = 260) {
  for (;;) {
    const n = 1 + int(chance(0.05) ? maxLong : 8);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = chance(0.85) ? pick([...Buffer.from("abcxyz019._-")]) : 1 + int(255);
    const s = b.toString("latin1");
    if (s !== "." && s !== "..") return b;
  }
}
const XATTR_KEYS = [
  "security.selinux", "security.capability", "security.ima", "trusted.x", "user.a", "user.b", "user.",
  "trusted.overlay.opaque", "trusted.overlay.redirect", "trusted.overlay.metacopy", "trusted.overlay.whiteout",
  "trusted.overlay.whiteouts", "trusted.overlay.overlay.x", "user.overlay.x", "system.posix_acl_access",
  "system.posix_acl_default", "foo.bar",
];

// ---- dumpfiles ------------------------------------------------------------

function dumpXattrs() {
  const out = [];
  const n = chance(0.6) ? 0 : int(chance(0.1) ? 30 : 5);
  for (let i = 0; i < n; i++) {
    const k = chance(0.7) ? pick(XATTR_KEYS) : "user." + esc(randomName(), true);
    const v = Buffer.alloc(chance(0.1) ? int(3000) : int(20));
    for (let j = 0; j < v.length; j++) v[j] = chance(0.7) ? 97 + int(3) : int(256);
    let value = chance(0.3) ? pick(["", "y", "x", "\\x00"]) : esc(v, true);
    // A 4-byte entry (empty suffix, empty value) is one composefs-info skips.
    if (value === "" && (k === "user." || k.startsWith("system."))) value = "q";
    out.push(`${esc(Buffer.from(k, "latin1"), true)}=${value}`);
  }
  return out;
}

function randomDumpfile() {
  const num = (v) => (chance(0.003) ? pick(["+5", "0x10", "007", "", "4294967296", "-0", " 1", "1e3"]) : String(v));
  const mtime = () =>
    chance(0.005) ? pick(["1.", ".5", "-1.5", "1.-5", "1.1000000000", "9223372036854775807.0", "1", "a.b", "1.0.0"]) : `${int(2 ** 33) - 2 ** 32}.${int(1e9)}`;
  const mode = (t) => (t | (chance(0.9) ? pick([0o755, 0o644, 0o4755, 0o1777, 0o2755, 0o000, 0o7777]) : int(0o10000))).toString(8);
  const owner = () => `${num(chance(0.8) ? 0 : int(70000))} ${num(chance(0.8) ? 0 : int(2 ** 32))}`;
  const digest = () => {
    const b = Buffer.alloc(32);
    for (let i = 0; i < 32; i++) b[i] = int(256);
    return b.toString("hex");
  };
  const lines = [["/", "0", chance(0.99) ? mode(0o40000) : mode(0o100000), num(2), owner(), "0", mtime(), "-", "-", "-", ...dumpXattrs()]];
  const dirs = ["/"];
  const files = [];
  const seen = new Set();
  const n = int(chance(0.1) ? 300 : 30);
  for (let i = 0; i < n; i++) {
    const parent = pick(dirs);
    const nm = randomName();
    const key = parent + "/" + nm.toString("latin1");
    if (seen.has(key) && chance(0.9)) continue;
    seen.add(key);
    const p = (parent === "/" ? "" : parent) + "/" + esc(nm);
    const t = pick(["d", "d", "f", "f", "f", "l", "c", "b", "p", "s", "h", "w"]);
    let l;
    if (t === "d") {
      dirs.push(p);
      l = [p, num(chance(0.9) ? 0 : int(100)), mode(0o40000), num(2), owner(), "0", mtime(), "-", "-", "-"];
    } else if (t === "f") {
      const size = pick([0, 1, 64, 65, 100, 4095, 4096, 4097, 5000, 5001, 1 << 20, 2 ** 33, int(1e6)]);
      files.push(p);
      let payload = "-", content = "-", dig = "-";
      if (size > 0 && size <= 5000 && chance(0.5)) {
        const b = Buffer.alloc(chance(0.05) ? size + pick([-1, 1]) : size);
        for (let j = 0; j < b.length; j++) b[j] = int(256);
        content = esc(b);
      } else if (size > 0) {
        payload = chance(0.8) ? digest().replace(/^(..)/, "$1/") : pick(["-", "abcd", "/abs/path", "../x"]);
        if (chance(0.7)) dig = digest();
      }
      l = [p, num(size), mode(0o100000), num(1), owner(), "0", mtime(), payload, content, dig];
    } else if (t === "l") {
      const target = chance(0.02) ? Buffer.alloc(chance(0.5) ? 4095 : 4097, 97) : randomName();
      l = [p, num(target.length), mode(0o120000), "1", owner(), "0", mtime(), chance(0.02) ? "-" : esc(target), "-", "-"];
    } else if (t === "c" || t === "b" || t === "w") {
      l = [p, "0", mode(t === "b" ? 0o60000 : 0o20000), "1", owner(), t === "w" ? "0" : num(int(2 ** 32)), mtime(), "-", "-", "-"];
    } else if (t === "p" || t === "s") {
      l = [p, "0", mode(t === "p" ? 0o10000 : 0o140000), "1", owner(), "0", mtime(), "-", "-", "-"];
    } else {
      if (files.length === 0) continue;
      l = [p, "0", chance(0.3) ? "@" + mode(0o100000) : "@120000", "1", "0 0", "0", mtime(), pick(files), "-", "-"];
    }
    if (t !== "h") l.push(...dumpXattrs());
    lines.push(l);
  }
  if (chance(0.1)) {
    const i = 1 + int(lines.length), j = 1 + int(lines.length);
    if (lines[i] && lines[j]) [lines[i], lines[j]] = [lines[j], lines[i]];
  }
  if (chance(0.05) && lines.length > 2) lines.push(lines[1 + int(lines.length - 1)].slice());
  let text = lines.map((l) => l.join(chance(0.001) ? "  " : " ")).join("\n") + (chance(0.9) ? "\n" : "");
  if (chance(0.15)) {
    // A few bytes changed anywhere.
    const b = Buffer.from(text, "latin1");
    for (let m = 1 + int(3); m > 0; m--) {
      const at = int(b.length);
      b[at] = pick([int(256), 0x20, 0x0a, 0x5c, 0x3d, 0x2f, 0x2d, 0x40, 0x30]);
    }
    text = b.toString("latin1");
  }
  if (chance(0.1)) {
    // One field of one line replaced by something odd.
    const all = text.split("\n");
    const i = int(all.length);
    const f = all[i].split(" ");
    const slot = pick([0, 1, 2, 7, -1]);
    const odd = {
      0: ["", "x", "./x", "//", "/\\x2f", "/./x", "/x/../y", f[0] + "/", f[0] + "/.", f[0] + "\\x00"],
      1: ["0", "1", "65", "4096", "5000", "5001"],
      2: ["100644", "0100644", "40755", "@0", "@", "@40755", "120777", "170000", "777", "200644", "1100644"],
      7: ["-", "", "\\x00", "a/b", "/", "ab/" + "c".repeat(62), "\\"],
      [-1]: ["x", "=", "user.q", "user.q=", "=v", "user.zz=1"],
    }[slot];
    if (slot === -1) f.push(pick(odd));
    else f[slot] = pick(odd);
    all[i] = f.join(" ");
    text = all.join("\n");
  }
  return Buffer.from(text, "latin1");
}

/** Differences the docs name as deliberate: skip the case. */
function deliberate(text, ours) {
  if (ours && /Invalid digest|File too large/.test(ours)) return true;
  // A regular file line with fewer than 11 fields has no DIGEST field: upstream reads uninitialised bytes.
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    if (f.length > 2 && f.length < 11 && /^@?10/.test(f[2] ?? "")) return true;
  }
  return false;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "cfsctl-compare-"));
let failures = 0;
const keep = (what, data) => {
  failures++;
  const file = path.join(work, `case-${failures}.dump`);
  fs.writeFileSync(file, data);
  console.log(`DIFFERENT ${what}: ${file}`);
};

let same = 0, refusedBoth = 0, skipped = 0, dumps = 0;
for (let c = 0; c < cases; c++) {
  const data = randomDumpfile();
  const text = data.toString("latin1");
  const strict = chance(0.2);
  const vmin = pick([undefined, 0, 1]), vmax = pick([undefined, 0, 1]);
  // As mkcomposefs: naming either version makes the other default to 0.
  const named = vmin !== undefined || vmax !== undefined;
  const minVersion = named ? (vmin ?? 0) : 0, maxVersion = named ? (vmax ?? 0) : 1;
  let ours = null, oursError = null;
  try {
    ours = writeImage(parseDumpfile(data, { strict }), { minVersion, maxVersion }).image;
  } catch (e) {
    oursError = String(e.message).split("\n")[0];
    // Anything but a CfsError is a bug, whatever upstream makes of the input.
    if (!(e instanceof CfsError)) {
      keep(`internal error ${e?.name}: ${oursError}`, data);
      continue;
    }
  }
  const input = path.join(work, "in.dump"), image = path.join(work, "up.img");
  fs.writeFileSync(input, data);
  fs.rmSync(image, { force: true });
  const args = [...(vmin !== undefined ? [`--min-version=${vmin}`] : []), ...(vmax !== undefined ? [`--max-version=${vmax}`] : []), "--from-file", input, image];
  const env = { ...process.env };
  if (strict) env.CFS_PARSE_STRICT = "1";
  else delete env.CFS_PARSE_STRICT;
  const up = spawnSync(MKCOMPOSEFS, args, { env, encoding: "latin1", timeout: 30_000 });
  if (deliberate(text, oursError)) {
    skipped++;
    continue;
  }
  if ((up.status === 0) !== (oursError === null)) {
    keep(`acceptance (strict ${strict}, versions ${vmin},${vmax}): upstream ${up.status} ${up.stderr.trim()} / cfsctl ${oursError}`, data);
    continue;
  }
  if (up.status !== 0) {
    refusedBoth++;
    continue;
  }
  const theirs = fs.readFileSync(image);
  if (!theirs.equals(ours)) {
    keep(`image bytes (strict ${strict}, versions ${vmin},${vmax})`, data);
    continue;
  }
  same++;
  if (COMPOSEFS_INFO && chance(0.3)) {
    dumps++;
    const info = spawnSync(COMPOSEFS_INFO, ["dump", image], { encoding: "latin1", maxBuffer: 1 << 28 });
    const parts = [];
    dumpImage(theirs, (chunk) => parts.push(Buffer.from(chunk)));
    const mine = Buffer.concat(parts).toString("latin1");
    // A redirect of 4n bytes (payload of 4n - 1) is over-read by composefs-info.
    const overRead = text.split("\n").some((l) => {
      const p = l.split(" ")[7];
      return p !== undefined && p !== "-" && /^10/.test(l.split(" ")[2] ?? "") && (Buffer.from(p, "latin1").length + 1) % 4 === 0;
    });
    if (!overRead && (info.status !== 0 || info.stdout !== mine)) keep("composefs-info dump", data);
    // Now and then the other listings too, through the CLI.
    if (!overRead && chance(0.2)) {
      for (const cmd of ["ls", "objects", "missing-objects"]) {
        const opts = [];
        if (cmd === "missing-objects") {
          // A basedir holding about half of the image's objects (only names of hex digits are made).
          const base = path.join(work, "basedir");
          fs.rmSync(base, { recursive: true, force: true });
          fs.mkdirSync(base);
          const listed = spawnSync(COMPOSEFS_INFO, ["objects", image], { encoding: "latin1", maxBuffer: 1 << 28 }).stdout.split("\n");
          for (const o of listed) {
            if (!/^[0-9a-f]{2}\/[0-9a-f]+$/.test(o) || chance(0.5)) continue;
            fs.mkdirSync(path.join(base, o.slice(0, 2)), { recursive: true });
            fs.writeFileSync(path.join(base, o), "");
          }
          opts.push(`--basedir=${base}`);
        }
        const a = spawnSync(COMPOSEFS_INFO, [...opts, cmd, image], { encoding: "latin1", maxBuffer: 1 << 28 });
        const b = spawnSync(process.execPath, [CLI, "info", ...opts, cmd, image], { encoding: "latin1", maxBuffer: 1 << 28 });
        if (a.status !== b.status || a.stdout !== b.stdout) keep(`composefs-info ${cmd}`, data);
      }
    }
  }
}
console.log(`dumpfiles: ${same} same image, ${refusedBoth} refused by both, ${skipped} skipped (deliberate differences), ${dumps} dumps compared, ${failures} different`);

// ---- directory trees ------------------------------------------------------

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "latin1" });
  return r.status === 0;
}
function setXattrs(p) {
  for (let i = chance(0.5) ? 0 : int(chance(0.1) ? 20 : 4); i > 0; i--) {
    const k = chance(0.8) ? pick(XATTR_KEYS.filter((x) => !x.startsWith("system.") && x !== "foo.bar")) : "user." + randomName(8).toString("hex");
    const v = Buffer.alloc(chance(0.05) ? int(3000) : 1 + int(12));
    for (let j = 0; j < v.length; j++) v[j] = chance(0.6) ? 97 + int(3) : int(256);
    run("setfattr", ["-h", "-n", k, "-v", "0x" + v.toString("hex"), p]);
  }
}
function randomTree(root) {
  fs.rmSync(root, { recursive: true, force: true });
  fs.mkdirSync(root);
  // Each entry is made under an ASCII name (the tools take names as UTF-8
  // strings), then renamed to its own name, which may be any bytes.
  const tmp = path.join(root, ".new");
  const dirs = [Buffer.from(root)], files = [];
  for (let i = int(chance(0.2) ? 400 : 40); i > 0; i--) {
    const nm = randomName(200);
    for (let j = 0; j < nm.length; j++) if (nm[j] === 0x2f) nm[j] = 0x5f;
    const p = Buffer.concat([pick(dirs), Buffer.from("/"), nm]);
    // lstat, not exists: a dangling symlink holds its name too.
    if (fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined || nm.toString("latin1") === ".new") continue;
    const t = pick(["d", "d", "f", "f", "f", "f", "l", "c", "b", "p", "h", "w"]);
    let made = true;
    if (t === "d") fs.mkdirSync(tmp);
    else if (t === "f") {
      const size = pick([0, 1, 63, 64, 65, 100, 4095, 4096, 4097, 8192, 65543, int(300000)]);
      const b = Buffer.alloc(size, chance(0.3) ? int(256) : 0);
      for (let j = 0; j < Math.min(size, 512); j++) b[j] = int(256);
      fs.writeFileSync(tmp, b);
    } else if (t === "l") fs.symlinkSync(chance(0.02) ? Buffer.alloc(1000 + int(3000), 97) : randomName(), tmp);
    else if (t === "h") {
      if (files.length === 0) continue;
      fs.linkSync(pick(files), tmp);
    } else if (t === "p") made = run("mkfifo", [tmp]);
    else made = run("mknod", [tmp, t === "b" ? "b" : "c", ...(t === "w" ? ["0", "0"] : [String(int(300)), String(int(300))])]);
    if (!made) continue;
    if (t !== "l") fs.chmodSync(tmp, chance(0.9) ? pick([0o755, 0o644, 0o4755, 0o1777, 0o2755, 0o000, 0o600]) : int(0o10000));
    fs.lchownSync(tmp, chance(0.7) ? 0 : int(70000), chance(0.7) ? 0 : int(70000));
    if (t !== "h") setXattrs(tmp);
    const sec = chance(0.3) ? int(2 ** 31) : 1700000000 + int(1000);
    fs.lutimesSync(tmp, sec, sec + (chance(0.5) ? 0 : int(1e9) / 1e9));
    fs.renameSync(tmp, p);
    if (t === "d") dirs.push(p);
    if (t === "f") files.push(p);
  }
  for (const d of dirs) if (chance(0.5)) fs.utimesSync(d, 1600000000 + int(1e8), 1600000000 + int(1e8) + int(1e9) / 1e9);
}

if (dirCases > 0) {
  if (process.getuid?.() !== 0) {
    console.log("directory trees: skipped (needs root for devices, owners and trusted.* xattrs)");
  } else {
    const root = path.join(work, "tree");
    let compared = 0, before = failures;
    for (let c = 0; c < dirCases; c++) {
      const treeSeed = state();
      randomTree(root);
      const stores = [path.join(work, "store-up"), path.join(work, "store-ours")];
      for (const opt of [[], ["--use-epoch"], ["--skip-xattrs"], ["--user-xattrs"], ["--skip-devices"], ["--max-version=0"], ["--min-version=1"], ["--digest-store"]]) {
        // --digest-store: each tool its own store, which must end up the same.
        const withStore = opt[0] === "--digest-store";
        for (const d of stores) fs.rmSync(d, { recursive: true, force: true });
        const args = (i) => (withStore ? [`--digest-store=${stores[i]}`] : opt);
        const u = spawnSync(MKCOMPOSEFS, [...args(0), root, path.join(work, "up.img")], { encoding: "latin1" });
        const o = spawnSync(process.execPath, [CLI, "mkcomposefs", ...args(1), root, path.join(work, "ours.img")], { encoding: "latin1" });
        compared++;
        const listing = (d) =>
          fs.existsSync(d)
            ? spawnSync("find", [".", "-printf", "%p %y %m %s\\n"], { cwd: d, encoding: "latin1" }).stdout.split("\n").sort().join("\n")
            : "";
        const differs =
          (u.status === 0) !== (o.status === 0) ||
          (u.status === 0 && !fs.readFileSync(path.join(work, "up.img")).equals(fs.readFileSync(path.join(work, "ours.img")))) ||
          (withStore && listing(stores[0]) !== listing(stores[1]));
        if (differs) {
          failures++;
          const kept = path.join(work, `tree-${treeSeed}`);
          fs.renameSync(root, kept);
          console.log(`DIFFERENT tree (${opt.join(" ") || "no option"}): ${kept}; upstream ${u.status} ${u.stderr.trim()} / cfsctl ${o.status} ${o.stderr.trim()}`);
          break;
        }
      }
    }
    console.log(`directory trees: ${compared} runs compared, ${failures - before} different`);
  }
}
if (failures === 0) fs.rmSync(work, { recursive: true, force: true });
process.exit(failures === 0 ? 0 : 1);
