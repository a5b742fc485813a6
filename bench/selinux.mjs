// SELinux relabelling speed: relabelTree over an in-memory tree of ~100k
// /usr-like paths (Debian-ish layout: libraries, binaries, docs, man pages,
// locales, python modules, kernel modules, /etc, /var, /home, symlinks and
// hardlinks) with the real Debian mls policy of fixtures/selinux/policy.
// Uses the compiled code: run `npx tsc -p tsconfig.json` first.
// Usage: node bench/selinux.mjs [ENTRIES] [RUNS]
import fs from "node:fs";
import path from "node:path";
import { ROOT } from "./lib.mjs";

const { Inode, S_IFDIR, S_IFREG, S_IFLNK } = await import(path.join(ROOT, "dist/model/inode.js"));
const { loadPolicy, relabelTree } = await import(path.join(ROOT, "dist/tree/selinux.js"));

const target = Number(process.argv[2] ?? 100_000);
const runs = Number(process.argv[3] ?? 5);
const policyDir = path.join(ROOT, "fixtures", "selinux", "policy");

let t0 = performance.now();
const policy = loadPolicy((rel) => {
  const f = path.join(policyDir, rel);
  return fs.existsSync(f) ? fs.readFileSync(f) : null;
});
const loadMs = performance.now() - t0;

// Deterministic pseudo-random generator (xorshift32).
let seed = 0x9e3779b9;
const rnd = (n) => {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
};
const pick = (a) => a[rnd(a.length)];
const words = ["core", "util", "net", "gtk", "xml", "ssl", "crypto", "glib", "dbus", "audio", "video", "font", "print", "image", "kde", "qt5", "perl", "ruby", "data", "tools", "common", "base", "extra", "systemd", "pam", "krb5", "ldap", "sasl", "curl", "z", "bz2", "lzma", "zstd", "ffi", "icu", "pcre2", "selinux"];
const exts = [".so", ".so.1", ".so.6.0.3", ".a", ".py", ".pyc", ".pm", ".h", ".gz", ".mo", ".png", ".svg", ".conf", ".txt", ".html", ".ko.xz", ".json", ""];
const name = () => `${pick(words)}${rnd(3) ? "-" + pick(words) : ""}${rnd(4) ? rnd(100) : ""}${pick(exts)}`;

const root = new Inode(S_IFDIR | 0o755);
let count = 1;
const dirOf = new Map([["", root]]);
function mkdirp(p) {
  let d = dirOf.get(p);
  if (d) return d;
  const i = p.lastIndexOf("/");
  const parent = mkdirp(p.slice(0, i));
  d = new Inode(S_IFDIR | 0o755);
  if (parent.addEntry(Buffer.from(p.slice(i + 1)), d) === null) d = parent.lookup(Buffer.from(p.slice(i + 1))).inode;
  else count++;
  dirOf.set(p, d);
  return d;
}
const files = [];
function add(dir, fname, mode = S_IFREG | 0o644) {
  const d = mkdirp(dir);
  const n = new Inode(mode);
  if (mode === (S_IFLNK | 0o777)) n.payload = Buffer.from("target");
  if (d.addEntry(Buffer.from(fname), n) !== null) {
    count++;
    files.push([d, n]);
  }
}
const layouts = [
  () => add(`/usr/lib/x86_64-linux-gnu${rnd(3) ? "" : "/" + pick(words)}`, `lib${name()}`),
  () => add(`/usr/lib/x86_64-linux-gnu`, `lib${pick(words)}.so.${rnd(9)}`, S_IFLNK | 0o777),
  () => add("/usr/bin", name().replace(/\..*/, "")),
  () => add("/usr/sbin", name().replace(/\..*/, "")),
  () => add(`/usr/share/doc/${pick(words)}-${pick(words)}${rnd(50)}`, pick(["copyright", "changelog.Debian.gz", "README.md", "NEWS.gz"])),
  () => add(`/usr/share/man/man${1 + rnd(8)}`, `${name()}.${1 + rnd(8)}.gz`),
  () => add(`/usr/share/locale/${pick(["de", "fr", "es", "ja", "pt_BR", "zh_CN", "ru", "it"])}/LC_MESSAGES`, `${pick(words)}${rnd(30)}.mo`),
  () => add(`/usr/lib/python3/dist-packages/${pick(words)}${rnd(40)}${rnd(2) ? "/" + pick(words) : ""}`, `${pick(words)}${rnd(20)}.py`),
  () => add(`/usr/lib/python3/dist-packages/${pick(words)}${rnd(40)}/__pycache__`, `${pick(words)}.cpython-311.pyc`),
  () => add(`/usr/lib/modules/6.1.0-18-amd64/kernel/drivers/${pick(words)}/${pick(words)}`, `${pick(words)}${rnd(99)}.ko.xz`),
  () => add(`/usr/include/${pick(words)}${rnd(2) ? "/" + pick(words) : ""}`, `${pick(words)}${rnd(30)}.h`),
  () => add(`/usr/share/icons/hicolor/${pick(["16x16", "32x32", "48x48", "scalable"])}/apps`, `${pick(words)}${rnd(200)}.png`),
  () => add(`/usr/share/perl5/${pick(words)}`, `${pick(words)}${rnd(60)}.pm`),
  () => add(`/usr/lib/systemd/system`, `${pick(words)}${rnd(60)}.service`),
  () => add(`/usr/share/zoneinfo/${pick(["Europe", "America", "Asia", "Africa"])}`, `${pick(words)}${rnd(100)}`),
  () => add(`/etc/${pick(words)}${rnd(2) ? ".d" : ""}`, `${pick(words)}${rnd(10)}.conf`),
  () => add(`/etc/systemd/system/multi-user.target.wants`, `${pick(words)}${rnd(60)}.service`, S_IFLNK | 0o777),
  () => add(`/var/lib/dpkg/info`, `${pick(words)}${rnd(200)}.${pick(["list", "md5sums", "postinst"])}`),
  () => add(`/var/log/${pick(["apt", "journal", "installer"])}`, `${pick(words)}${rnd(20)}.log`),
  () => add(`/home/user${rnd(3)}/${pick([".config", ".cache", ".local/share", "src", ".ssh"])}/${pick(words)}`, name()),
  () => add(`/opt/${pick(words)}/${pick(["bin", "lib", "share"])}`, name()),
];
while (count < target) pick(layouts)();
// A few hardlinks: extra names for existing files.
for (let i = 0; i < 200; i++) {
  const [, n] = files[rnd(files.length)];
  const d = mkdirp(`/usr/lib/hardlinks${rnd(4)}`);
  if (d.addEntry(Buffer.from(`link${i}`), n, true) !== null) count++;
}

console.log(`policy: ${policy.size} specs, loaded in ${loadMs.toFixed(1)} ms`);
console.log(`tree: ${count} entries`);
const times = [];
for (let r = 0; r < runs + 1; r++) {
  t0 = performance.now();
  relabelTree(root, policy);
  const ms = performance.now() - t0;
  if (r > 0 || runs === 0) times.push(ms);
  else console.log(`first run (includes regex compilation): ${ms.toFixed(0)} ms, ${Math.round(count / (ms / 1000))} entries/s`);
}
times.sort((a, b) => a - b);
const med = times[Math.floor(times.length / 2)];
console.log(`relabelTree: median ${med.toFixed(0)} ms over ${times.length} runs, ${Math.round(count / (med / 1000))} entries/s`);
