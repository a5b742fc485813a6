/**
 * A run interrupted by SIGINT or SIGTERM removes its temporary files (the
 * repository's `.tmp-PID-…` objects, a --digest-store's copies) and dies of
 * that signal. Each case sends the signal as soon as a temporary file
 * shows, then checks that none is left.
 */
import { spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { CLI, tmpdir } from "./helpers.js";

const work = tmpdir();
const tree = path.join(work, "tree");
const layer = path.join(work, "layer.tar");

beforeAll(() => {
  fs.mkdirSync(tree);
  // Random contents: every file is a new object, copied while the run goes on.
  for (let i = 0; i < 24; i++) fs.writeFileSync(path.join(tree, `f${i}`), crypto.randomBytes(4 << 20));
  expect(spawnSync("tar", ["-cf", layer, "-C", tree, "."]).status, "tar").toBe(0);
});

function temporaries(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let ents: fs.Dirent[];
    try {
      ents = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      if (e.name.includes(".tmp-")) out.push(path.join(d, e.name));
      else if (e.isDirectory()) walk(path.join(d, e.name));
    }
  };
  walk(dir);
  return out;
}

/** Run cfsctl, send `sig` once a temporary file shows below `watch`; the exit signal, and whether one showed. */
function interrupt(args: string[], watch: string, sig: NodeJS.Signals): Promise<{ signal: NodeJS.Signals | null; code: number | null; seen: boolean; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    let seen = false;
    const poll = setInterval(() => {
      if (!seen && temporaries(watch).length > 0) {
        seen = true;
        child.kill(sig);
      }
    }, 5);
    child.on("close", (code, signal) => {
      clearInterval(poll);
      resolve({ signal, code, seen, stderr });
    });
  });
}

describe("an interrupted run", () => {
  const cases: Array<[string, (dir: string) => string[], NodeJS.Signals]> = [
    ["create-image", (dir) => ["--repo", dir, "create-image", tree], "SIGINT"],
    ["mkcomposefs --digest-store", (dir) => ["mkcomposefs", `--digest-store=${dir}`, tree, path.join(work, "never.img")], "SIGTERM"],
    ["import-oci", (dir) => ["--repo", dir, "import-oci", layer], "SIGINT"],
  ];
  for (const [name, args, sig] of cases) {
    it(`${name} leaves no temporary file and dies of ${sig}`, async () => {
      const dir = path.join(tmpdir(), "target");
      const r = await interrupt(args(dir), dir, sig);
      if (!r.seen) {
        // It ended before a temporary file showed (a fast machine): it must have ended well.
        console.log(`${name}: finished before a temporary file showed (${r.code})`);
        expect(r.code, r.stderr).toBe(0);
        expect(temporaries(dir)).toEqual([]);
        return;
      }
      expect(r.signal, r.stderr).toBe(sig);
      expect(temporaries(dir).map((p) => path.relative(dir, p))).toEqual([]);
    });
  }

  it("mkcomposefs --from-file, signalled while it writes the image, leaves no image and dies of SIGTERM", async () => {
    // Parsing and writing run without a pause: the signal is taken once the
    // image is written, before it is renamed into place. (It used to be
    // dropped: the image was renamed and the run exited 0.)
    const dump = path.join(work, "big.dump");
    const lines = ["/ 4096 40755 2 0 0 0 0.0 - - -"];
    for (let d = 0; d < 100; d++) {
      lines.push(`/d${d} 4096 40755 2 0 0 0 0.0 - - -`);
      for (let i = 0; i < 1000; i++) {
        const id = (d * 1000 + i).toString(16).padStart(64, "0");
        lines.push(`/d${d}/f${i} 5000 100644 1 0 0 0 0.0 ${id.slice(0, 2)}/${id.slice(2)} - ${id} user.n=${i}`);
      }
    }
    fs.writeFileSync(dump, lines.join("\n") + "\n");
    const dir = tmpdir();
    const r = await interrupt(["mkcomposefs", "--from-file", dump, path.join(dir, "out.img")], dir, "SIGTERM");
    if (!r.seen) {
      console.log(`mkcomposefs --from-file: finished before its temporary image showed (${r.code})`);
      expect(r.code, r.stderr).toBe(0);
      expect(fs.readdirSync(dir)).toEqual(["out.img"]);
      return;
    }
    expect(r.signal, r.stderr).toBe("SIGTERM");
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it("a run waiting for the repository lock dies of SIGINT at once: gc removes nothing", async () => {
    const small = path.join(tmpdir(), "small");
    fs.mkdirSync(small);
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(small, `f${i}`), crypto.randomBytes(1000));
    const repo = path.join(tmpdir(), "repo");
    expect(spawnSync(process.execPath, [CLI, "--repo", repo, "-q", "create-image", "--name", "k", small]).status).toBe(0);
    fs.unlinkSync(path.join(repo, "images", "refs", "k")); // everything is garbage now
    const objects = () => fs.readdirSync(path.join(repo, "objects")).length;
    const before = objects();
    const holder = spawn("flock", ["-x", repo, "sleep", "20"]);
    try {
      await new Promise((r) => setTimeout(r, 300));
      const r = await new Promise<{ signal: NodeJS.Signals | null; waited: number }>((resolve) => {
        const child = spawn(process.execPath, [CLI, "--repo", repo, "gc"], { stdio: ["ignore", "ignore", "pipe"] });
        let sent = 0;
        child.stderr.on("data", (d: Buffer) => {
          if (sent === 0 && d.toString().includes("waiting for the lock")) {
            sent = Date.now();
            child.kill("SIGINT");
          }
        });
        child.on("close", (_code, signal) => resolve({ signal, waited: Date.now() - sent }));
      });
      expect(r.signal).toBe("SIGINT");
      expect(r.waited).toBeLessThan(5000); // not after the lock holder's 20 s
      expect(objects()).toBe(before);
    } finally {
      holder.kill();
    }
  });
});
