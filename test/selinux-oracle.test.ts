/**
 * SELinux labels through the whole pipeline: for every row of the oracle
 * (the label real libselinux gives a path of a type with that policy), the
 * path is made on disk in a tree that holds the policy, and create-dumpfile
 * must give it exactly that security.selinux (none for <<none>>).
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseDumpfile } from "../src/dumpfile/parse.js";
import type { Inode } from "../src/model/inode.js";
import { FIXTURES, cfsctl, isRoot, tmpdir } from "./helpers.js";

interface Row {
  path: Buffer;
  type: string;
  label: string;
}

function unescapeOracle(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "\\" && s[i + 1] === "\\") {
      out.push(0x5c);
      i++;
    } else if (s[i] === "\\" && s[i + 1] === "x") {
      out.push(parseInt(s.slice(i + 2, i + 4), 16));
      i += 3;
    } else out.push(s.charCodeAt(i));
  }
  return Buffer.from(out);
}

function readOracle(file: string): Row[] {
  return fs
    .readFileSync(file, "utf8")
    .trim()
    .split("\n")
    .slice(1)
    .map((l) => {
      const [p, type, label] = l.split("\t");
      return { path: unescapeOracle(p!), type: type!, label: label! };
    });
}

/** Spread the rows over as few trees as possible without conflicts (same path, other type). */
function plan(rows: Row[]): Row[][] {
  const trees: Array<{ rows: Row[]; kinds: Map<string, string> }> = [];
  for (const r of rows) {
    const p = r.path.toString("latin1").replace(/\/+$/, "") || "/";
    const ancestors: string[] = [];
    for (let i = p.indexOf("/", 1); i > 0; i = p.indexOf("/", i + 1)) ancestors.push(p.slice(0, i));
    const fits = (t: { kinds: Map<string, string> }) => {
      const k = t.kinds.get(p);
      if (k !== undefined && k !== r.type) return false;
      if (ancestors.some((a) => t.kinds.has(a) && t.kinds.get(a) !== "d")) return false;
      if (r.type !== "d") for (const key of t.kinds.keys()) if (key.startsWith(p + "/")) return false;
      return true;
    };
    let t = trees.find(fits);
    if (!t) trees.push((t = { rows: [], kinds: new Map() }));
    t.rows.push(r);
    t.kinds.set(p, r.type);
    for (const a of ancestors) if (!t.kinds.has(a)) t.kinds.set(a, "d");
  }
  return trees.map((t) => t.rows);
}

function copyDir(src: string, dst: string): void {
  fs.cpSync(src, dst, { recursive: true });
}

function make(root: Buffer, r: Row): boolean {
  const rel = r.path.toString("latin1") === "/" ? null : r.path;
  if (!rel) return true;
  const full = Buffer.concat([root, rel]);
  const parent = full.subarray(0, full.lastIndexOf(0x2f));
  fs.mkdirSync(parent, { recursive: true });
  const exists = fs.existsSync(full);
  switch (r.type) {
    case "d":
      if (!exists) fs.mkdirSync(full);
      return true;
    case "-":
      if (!exists) fs.writeFileSync(full, "x");
      return true;
    case "l":
      if (!exists) fs.symlinkSync("target", full);
      return true;
    case "p":
      return spawnSync("mkfifo", [full.toString("latin1")]).status === 0 || exists;
    case "s":
      return (
        exists ||
        spawnSync("python3", ["-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1].encode('latin1'))", full.toString("latin1")]).status === 0
      );
    case "c":
    case "b":
      if (!isRoot) return false;
      return exists || spawnSync("mknod", [full.toString("latin1"), r.type, "1", "3"]).status === 0;
    default:
      throw new Error(`unknown type ${r.type}`);
  }
}

function find(root: Inode, p: Buffer): Inode | undefined {
  let n: Inode | undefined = root;
  for (const comp of p.toString("latin1").split("/").filter((c) => c.length > 0)) {
    n = n?.lookup(Buffer.from(comp, "latin1"))?.inode;
  }
  return n;
}

function check(policyDir: string, oracle: string, work: string): { checked: number; skipped: number } {
  const rows = readOracle(oracle);
  let checked = 0;
  let skipped = 0;
  plan(rows).forEach((group, i) => {
    const tree = path.join(work, `t${i}`);
    copyDir(path.join(policyDir, "etc"), path.join(tree, "etc"));
    const made = group.filter((r) => make(Buffer.from(tree, "latin1"), r));
    skipped += group.length - made.length;
    const res = cfsctl(["create-dumpfile", tree]);
    expect(res.status, res.stderr).toBe(0);
    const root = parseDumpfile(res.stdout);
    for (const r of made) {
      const n = find(root, r.path);
      expect(n, `${r.path.toString("latin1")} missing`).toBeDefined();
      const got = n!.getXattr("security.selinux");
      const want = r.label === "<<none>>" ? undefined : r.label + "\0";
      expect(got?.toString("latin1"), `${JSON.stringify(r.path.toString("latin1"))} (${r.type})`).toBe(want);
      checked++;
    }
  });
  return { checked, skipped };
}

describe("create-dumpfile labels every path as libselinux does", () => {
  it("the Debian MLS policy: every oracle row", () => {
    const { checked, skipped } = check(path.join(FIXTURES, "selinux", "policy"), path.join(FIXTURES, "selinux", "oracle.tsv"), tmpdir());
    if (skipped) console.log(`${skipped} device rows skipped: making devices needs root`);
    expect(checked + skipped).toBe(505);
  }, 120_000);
  it("the probe policy: every oracle row", () => {
    const { checked, skipped } = check(path.join(FIXTURES, "selinux", "probe", "policy"), path.join(FIXTURES, "selinux", "probe", "oracle.tsv"), tmpdir());
    if (skipped) console.log(`${skipped} device rows skipped: making devices needs root`);
    expect(checked + skipped).toBeGreaterThan(20);
  }, 60_000);
});
