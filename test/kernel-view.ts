/**
 * Mount an image with the kernel's EROFS driver and check that what the
 * kernel shows is what the dumpfile says. The raw EROFS view is the image as
 * written: external files carry their overlay metacopy/redirect xattrs,
 * `trusted.overlay.*` xattrs appear escaped as `trusted.overlay.overlay.*`,
 * whiteouts are marked regular files, and the root has the 00..ff devices.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import * as xattr from "fs-xattr";
import { walkDepthFirst, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type Inode } from "../src/model/inode.js";
import { isRoot, tmpdir } from "./helpers.js";

const O_PATH = 0o10000000;

export interface MountResult {
  mountpoint: string;
  unmount(): void;
}

/** Mount read-only with a loop device; returns null with the reason when the machine refuses. */
export function mountErofs(image: string): MountResult | string {
  if (!isRoot) return "not running as root";
  const mnt = tmpdir("cfsctl-mnt-");
  const r = spawnSync("mount", ["-t", "erofs", "-o", "ro,loop", image, mnt]);
  if (r.status !== 0) {
    fs.rmdirSync(mnt);
    return `mount -t erofs refused: ${r.stderr.toString().trim()}`;
  }
  return {
    mountpoint: mnt,
    unmount() {
      spawnSync("umount", [mnt]);
      fs.rmdirSync(mnt);
    },
  };
}

/**
 * The xattrs the kernel lists, with their values. Two kinds are listed but
 * cannot be read back, and are marked null: user.* on anything but regular
 * files and directories (the VFS refuses them), and POSIX ACLs whose value
 * is not a valid ACL (the kernel parses them).
 */
function readXattrs(p: Buffer, regOrDir: boolean): Map<string, Buffer | null> {
  const fd = fs.openSync(p, O_PATH | fs.constants.O_NOFOLLOW);
  try {
    const proc = `/proc/self/fd/${fd}`;
    const m = new Map<string, Buffer | null>();
    for (const name of xattr.listAttributesSync(proc)) {
      // fs-xattr passes names as UTF-8 strings: others cannot be asked for.
      if (name.includes("\ufffd")) continue;
      try {
        m.set(name, xattr.getAttributeSync(proc, name));
      } catch (e) {
        const unreadable = (name.startsWith("user.") && !regOrDir) || name.startsWith("system.posix_acl_");
        if (!unreadable) throw new Error(`${p.toString("latin1")}: reading ${name}: ${(e as Error).message}`);
        m.set(name, null);
      }
    }
    return m;
  } finally {
    fs.closeSync(fd);
  }
}

const ADDED = new Set([
  "trusted.overlay.metacopy",
  "trusted.overlay.redirect",
  "trusted.overlay.opaque",
  "trusted.overlay.overlay.whiteout",
  "trusted.overlay.overlay.whiteouts",
  "trusted.overlay.overlay.opaque",
  "user.overlay.whiteout",
  "user.overlay.whiteouts",
  "user.overlay.opaque",
]);

/** Compare the mounted tree with the tree a dumpfile describes; returns the differences. */
export function compareMount(mnt: string, root: Inode): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  const base = Buffer.from(mnt);
  walkDepthFirst(root, (p, _ent, n) => {
    const rel = p.length === 1 ? Buffer.alloc(0) : p;
    const full = Buffer.concat([base, rel]);
    const show = p.toString("latin1");
    seen.add(p.toString("latin1"));
    let st: fs.BigIntStats;
    try {
      st = fs.lstatSync(full, { bigint: true });
    } catch (e) {
      problems.push(`${show}: missing (${(e as Error).message})`);
      return;
    }
    const whiteout = (n.mode & S_IFMT) === S_IFCHR && n.rdev === 0;
    const wantType = whiteout ? S_IFREG : n.mode & S_IFMT;
    const mode = Number(st.mode);
    if ((mode & S_IFMT) !== wantType) problems.push(`${show}: type ${mode & S_IFMT} != ${wantType}`);
    if ((mode & 0o7777) !== (n.mode & 0o7777)) problems.push(`${show}: mode ${(mode & 0o7777).toString(8)} != ${(n.mode & 0o7777).toString(8)}`);
    if (Number(st.uid) !== n.uid || Number(st.gid) !== n.gid) problems.push(`${show}: owner ${st.uid}:${st.gid} != ${n.uid}:${n.gid}`);
    if (n.mtimeNsec < 1e9 && st.mtimeNs !== n.mtimeSec * 1_000_000_000n + BigInt(n.mtimeNsec)) {
      problems.push(`${show}: mtime ${st.mtimeNs} != ${n.mtimeSec}.${n.mtimeNsec}`);
    }
    if (wantType !== S_IFDIR && Number(st.nlink) !== n.nlink) problems.push(`${show}: nlink ${st.nlink} != ${n.nlink}`);
    if (wantType === S_IFREG) {
      const size = whiteout ? 0n : n.size;
      if (st.size !== size) problems.push(`${show}: size ${st.size} != ${size}`);
      if (!whiteout && n.content && n.content.length > 0) {
        const data = fs.readFileSync(full);
        if (!data.equals(n.content)) problems.push(`${show}: content differs`);
      }
    } else if (wantType === S_IFLNK) {
      const t = fs.readlinkSync(full, { encoding: "buffer" });
      if (!t.equals(n.payload!)) problems.push(`${show}: target ${t.toString("latin1")} != ${n.payload!.toString("latin1")}`);
      if (st.size !== BigInt(n.payload!.length)) problems.push(`${show}: symlink size ${st.size}`);
    } else if (wantType === S_IFCHR || wantType === 0o060000) {
      if (Number(st.rdev & 0xffffffffn) !== n.rdev) problems.push(`${show}: rdev ${st.rdev} != ${n.rdev}`);
    }
    // xattrs: each from the dumpfile is there (escaped if trusted.overlay.*),
    // and anything else is one composefs adds.
    const got = readXattrs(full, wantType === S_IFREG || wantType === S_IFDIR);
    const want = new Map<string, Buffer>();
    for (const x of n.xattrs) {
      if (!Buffer.from(x.key.toString("utf8"), "utf8").equals(x.key)) continue; // not valid UTF-8: see readXattrs
      let k = x.key.toString("utf8");
      if (k.startsWith("trusted.overlay.")) k = "trusted.overlay.overlay." + k.slice("trusted.overlay.".length);
      want.set(k, x.value);
    }
    for (const [k, v] of want) {
      if (ADDED.has(k)) continue; // composefs may overwrite these
      const g = got.get(k);
      if (g === undefined) problems.push(`${show}: xattr ${k} missing`);
      else if (g !== null && !g.equals(v)) problems.push(`${show}: xattr ${k} differs`);
    }
    for (const k of got.keys()) if (!want.has(k) && !ADDED.has(k)) problems.push(`${show}: unexpected xattr ${k}`);
    const external = (n.mode & S_IFMT) === S_IFREG && n.size > 0n && !n.content;
    if (external) {
      const mc = got.get("trusted.overlay.metacopy");
      if (!mc) problems.push(`${show}: no metacopy xattr`);
      else if (n.digest && !mc.subarray(4).equals(n.digest)) problems.push(`${show}: metacopy digest differs`);
      if (n.payload && n.payload.length > 0) {
        const rd = got.get("trusted.overlay.redirect");
        if (!rd || rd.toString("latin1") !== "/" + n.payload.toString("latin1")) problems.push(`${show}: redirect differs`);
      }
    }
  });
  // Nothing more in the mount than the dumpfile's entries and the root's whiteouts.
  const rec = (dir: Buffer, rel: string) => {
    for (const name of fs.readdirSync(dir, { encoding: "buffer" })) {
      const p = `${rel}/${name.toString("latin1")}`;
      const full = Buffer.concat([dir, Buffer.from("/"), name]);
      if (!seen.has(p)) {
        if (rel === "" && /^[0-9a-f]{2}$/.test(name.toString("latin1"))) continue;
        problems.push(`${p}: in the mount but not in the dumpfile`);
        continue;
      }
      if (fs.lstatSync(full).isDirectory()) rec(full, p);
    }
  };
  rec(Buffer.from(mnt), "");
  void path;
  return problems;
}
