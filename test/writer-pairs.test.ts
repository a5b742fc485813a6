/**
 * Shared xattrs are the same whether a tree's equal values are one Buffer
 * (as the dumpfile parser interns them) or each a Buffer of its own (as a
 * directory scan makes them), and through the string map a flooded pair
 * table turns to; values that differ only in their middle do not collide.
 */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseDumpfile } from "../src/dumpfile/parse.js";
import { writeImage } from "../src/erofs/writer.js";
import type { Inode } from "../src/model/inode.js";
import { cfsctl, fsckErofs, tmpdir } from "./helpers.js";

const work = tmpdir();

/**
 * 3000 files whose xattrs repeat: a few labels, a value used under two keys
 * (one Buffer for both once parsed), and one value per file of its own.
 */
function dumpfile(): string {
  const lines = ["/ 4096 40755 2 0 0 0 0.0 - - -", "/d 4096 40755 2 0 0 0 0.0 - - -"];
  const labels = ["system_u:object_r:usr_t:s0", "system_u:object_r:bin_t:s0", "system_u:object_r:lib_t:s0"];
  for (let i = 0; i < 3000; i++) {
    const x = [`security.selinux=${labels[i % 3]}`, `user.own=v${i}`];
    if (i % 5 === 0) x.push("user.a=same", "user.b=same");
    if (i % 7 === 0) x.push("trusted.x=same");
    lines.push(`/d/f${i} 100 100644 1 0 0 0 0.0 ${(i % 251).toString(16).padStart(2, "0")}/${i.toString(16).padStart(62, "0")} - - ${x.join(" ")}`);
  }
  return lines.join("\n") + "\n";
}

/** The tree again, every xattr key and value (of inodes from `from` on) a Buffer of its own. */
function unshare(root: Inode, from: number): Inode {
  let n = 0;
  const walk = (inode: Inode): void => {
    if (n++ >= from) inode.xattrs = inode.xattrs.map((x) => ({ key: Buffer.from(x.key), value: Buffer.from(x.value) }));
    for (const e of inode.entries ?? []) walk(e.inode);
  };
  walk(root);
  return root;
}

function occurrences(hay: Buffer, needle: string): number {
  let n = 0;
  for (let i = hay.indexOf(needle); i >= 0; i = hay.indexOf(needle, i + 1)) n++;
  return n;
}

describe("shared xattrs", () => {
  it("are the same for shared and unshared value objects", () => {
    const text = dumpfile();
    const shared = writeImage(parseDumpfile(Buffer.from(text))).image;
    // Each value its own object.
    const own = writeImage(unshare(parseDumpfile(Buffer.from(text)), 0)).image;
    // Shared objects for the first 1500 inodes, then each its own.
    const mixed = writeImage(unshare(parseDumpfile(Buffer.from(text)), 1500)).image;
    expect(own.equals(shared)).toBe(true);
    expect(mixed.equals(shared)).toBe(true);
    // And through the string map a flooded pair table turns to.
    expect(writeImage(unshare(parseDumpfile(Buffer.from(text)), 1500), { maxProbes: 0 }).image.equals(shared)).toBe(true);
    const p = path.join(work, "pairs.img");
    fs.writeFileSync(p, shared);
    fsckErofs(p);
    // The repeated pairs went to the shared table, once each: a label, and
    // "same" under user.a, user.b and trusted.x.
    expect(occurrences(shared, "system_u:object_r:usr_t:s0")).toBe(1);
    expect(occurrences(shared, "same")).toBe(3);
  });

  it("are found in linear time when values differ only in their middle", () => {
    // A hash of the ends of values alone made every one of these collide:
    // 40,000 files took about 40 s, each lookup walking all the others.
    const lines = ["/ 4096 40755 2 0 0 0 0.0 - - -"];
    for (let i = 0; i < 40000; i++) lines.push(`/f${i} 0 100644 1 0 0 0 0.0 - - - user.x=${"a".repeat(30)}${String(i).padStart(8, "0")}${"b".repeat(30)}`);
    const dump = path.join(work, "middle.dump");
    fs.writeFileSync(dump, lines.join("\n") + "\n");
    const img = path.join(work, "middle.img");
    const res = cfsctl(["mkcomposefs", "--from-file", dump, img], { timeout: 20_000 });
    expect(res.status, "-1: killed after 20 s").toBe(0);
    const want = writeImage(parseDumpfile(fs.readFileSync(dump)), { maxProbes: 0 }).image;
    expect(fs.readFileSync(img).equals(want)).toBe(true);
  });
});
