/**
 * The reason cfsctl exists, end to end: `podman build` of
 * examples/podman/Containerfile computes the composefs digest of its `rootfs`
 * stage inside the build (`cfsctl compute-id` on a bind mount of that stage),
 * and `cfsctl import-oci` of the same stage saved with
 * `podman save --format oci-archive` prints the same digest on the host.
 *
 * podman runs with its own storage under the test's temporary directory
 * (--root, --runroot, --tmpdir), so the host's images and containers are never
 * touched; everything is removed at the end. The test skips, saying why, only
 * where podman cannot run a container at all.
 */
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cfsctl, ROOT, tmpdir } from "./helpers.js";

const EXAMPLE = path.join(ROOT, "examples", "podman");
const BASE = "localhost/cfsctl-example-base";
const DIGEST_IMAGE = "localhost/cfsctl-example-digest";
const ROOTFS_IMAGE = "localhost/cfsctl-example-rootfs";

function run(cmd: string, args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: "utf8", input: opts.input, env: opts.env ?? process.env, maxBuffer: 1 << 28 });
}

function found(cmd: string): boolean {
  return run("sh", ["-c", `command -v ${cmd}`]).status === 0;
}

/** Why the test cannot run here, or null. Only what podman needs to exist is checked here; the probe container comes later. */
function missingTools(): string | null {
  if (process.platform !== "linux") return "podman builds need Linux";
  if (process.getuid?.() !== 0) return "the example builds as root (rootful podman)";
  for (const t of ["podman", "busybox", "setcap", "getcap", "setfattr", "ldd"]) {
    if (!found(t)) return `${t} is not installed (Debian: podman buildah runc busybox-static libcap2-bin attr)`;
  }
  if (run("ldd", [run("sh", ["-c", "command -v busybox"]).stdout.trim()]).status === 0) return "busybox is not static (Debian: busybox-static)";
  return null;
}

class Podman {
  readonly conf: string;
  readonly env: NodeJS.ProcessEnv;
  /** podman refuses a runroot path longer than 50 characters. */
  readonly runroot: string;

  constructor(
    readonly dir: string,
    readonly driver: string,
  ) {
    fs.mkdirSync(dir);
    this.runroot = path.join(dir, "r");
    if (this.runroot.length > 50) this.runroot = fs.mkdtempSync("/tmp/cfsctl-podman-");
    // Settings a host without systemd, with cgroup v1 or without
    // CAP_SYS_RESOURCE needs (doc/podman.md); harmless elsewhere.
    this.conf = path.join(dir, "containers.conf");
    const limits = run("sh", ["-c", "ulimit -Hn; ulimit -Hu"]).stdout.trim().split("\n");
    const cap = (v: string | undefined, want: number) => (v === undefined || v === "unlimited" || Number(v) >= want ? want : Number(v));
    const nofile = cap(limits[0], 20000);
    const nproc = cap(limits[1], 4096);
    fs.writeFileSync(
      this.conf,
      [
        "[containers]",
        `default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]`,
        'netns = "none"',
        "[engine]",
        found("runc") ? 'runtime = "runc"' : "",
        "",
      ].join("\n"),
    );
    this.env = { ...process.env, CONTAINERS_CONF: this.conf };
  }

  /** podman with this test's own storage. */
  run(args: string[], input?: Buffer): SpawnSyncReturns<string> {
    const global = [
      "--root", path.join(this.dir, "storage"),
      "--runroot", this.runroot,
      "--tmpdir", path.join(this.dir, "tmp"),
      "--storage-driver", this.driver,
      "--cgroup-manager", "cgroupfs",
      "--events-backend", "none",
    ];
    return run("podman", [...global, ...args], { input, env: this.env });
  }

  ok(args: string[], input?: Buffer): string {
    const r = this.run(args, input);
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`podman ${args.join(" ")} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  }

  /** Remove everything: images, then any mount left under the directory, then the directory. */
  destroy(): void {
    this.run(["rmi", "--all", "--force"]);
    const mounts = fs.readFileSync("/proc/mounts", "utf8").split("\n").map((l) => (l.split(" ")[1] ?? "").replace(/\\040/g, " "));
    for (const d of [this.dir, this.runroot]) {
      for (const m of mounts.filter((m) => m.startsWith(d + "/")).reverse()) spawnSync("umount", ["-l", m]);
      fs.rmSync(d, { recursive: true, force: true });
    }
  }
}

const cannot = missingTools();
if (cannot) console.log(`podman.test.ts skipped: ${cannot}`);

describe.skipIf(cannot !== null)("podman build: composefs digest inside the build = cfsctl import-oci outside", () => {
  const work = cannot ? "" : tmpdir("podman-");
  let podman: Podman | null = null;

  afterAll(() => {
    podman?.destroy();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it("same digest in the build and from the saved rootfs stage", { timeout: 240_000 }, (ctx) => {
    const t0 = Date.now();
    const step = (what: string) => console.log(`[podman.test ${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);

    // The base image, made locally: busybox-static + setcap + node's libraries.
    const base = path.join(work, "base");
    const made = run("sh", [path.join(EXAMPLE, "make-base.sh"), base, process.execPath]);
    expect(made.status, made.stderr).toBe(0);
    const layer = spawnSync("tar", ["-C", base, "--numeric-owner", "-c", "."], { maxBuffer: 1 << 28 });
    expect(layer.status, layer.stderr?.toString()).toBe(0);

    // overlay storage, or vfs where overlay cannot be mounted (nested overlay).
    let probeError = "";
    for (const driver of ["overlay", "vfs"]) {
      const p = new Podman(path.join(work, driver), driver);
      const imported = p.run(["import", "-", BASE], layer.stdout);
      const probe = imported.status === 0 ? p.run(["run", "--rm", BASE, "true"]) : imported;
      if (probe.status === 0) {
        podman = p;
        break;
      }
      probeError += `${driver}: ${(probe.stderr || probe.error?.message || "").trim().split("\n").slice(-2).join(" ")}\n`;
      p.destroy();
    }
    if (!podman) {
      console.log(`podman.test.ts skipped: podman cannot run a container here:\n${probeError}`);
      ctx.skip();
      return;
    }
    const pm = podman;
    step(`base image imported (${pm.driver} storage under ${pm.dir})`);

    // Build contexts: the checkout (dist/ and node_modules/) and the directory of a binary named `node`.
    let nodeDir = path.dirname(process.execPath);
    if (path.basename(process.execPath) !== "node") {
      nodeDir = path.join(work, "node");
      fs.mkdirSync(nodeDir);
      fs.copyFileSync(process.execPath, path.join(nodeDir, "node"));
    }
    const ctxDir = path.join(work, "context");
    fs.mkdirSync(ctxDir);
    const contexts = [
      "--network=none",
      "--build-arg", `BUILD_ID=${Date.now()}.${process.pid}`,
      "--build-context", `cfsctl=${ROOT}`,
      "--build-context", `node=${nodeDir}`,
    ];
    let build: string;
    if (pm.driver === "overlay") {
      // The documented way: one build, then the rootfs stage tagged by the
      // same build (same BUILD_ID) up to that stage, all from the cache.
      const file = ["-f", path.join(EXAMPLE, "Containerfile")];
      build = pm.ok(["build", ...contexts, ...file, "-t", DIGEST_IMAGE, ctxDir]);
      step("podman build done");
      const stageId = /\n--> ([0-9a-f]{11,64})\n\[2\/2\] STEP 1\//.exec(build)?.[1];
      expect(stageId, `no image id for the rootfs stage in:\n${build}`).toBeDefined();
      const iidFile = path.join(work, "rootfs.iid");
      pm.ok(["build", ...contexts, ...file, "--target", "rootfs", "--iidfile", iidFile, "-t", ROOTFS_IMAGE, ctxDir]);
      const tagged = fs.readFileSync(iidFile, "utf8").trim().replace(/^sha256:/, "");
      expect(tagged.startsWith(stageId!), `rootfs stage rebuilt instead of taken from the cache: ${tagged} vs ${stageId}`).toBe(true);
    } else {
      // vfs: a stage mounted while it is fresh shows directory metadata
      // changes its vfs layers drop; the documented way there is two builds,
      // the second mounting the committed stage by its image name.
      const containerfile = fs.readFileSync(path.join(EXAMPLE, "Containerfile"), "utf8");
      const variant = containerfile.replace("--mount=type=bind,from=rootfs,", `--mount=type=bind,from=${ROOTFS_IMAGE},`);
      expect(variant).not.toBe(containerfile);
      const variantFile = path.join(work, "Containerfile.vfs");
      fs.writeFileSync(variantFile, variant);
      pm.ok(["build", ...contexts, "-f", variantFile, "--target", "rootfs", "-t", ROOTFS_IMAGE, ctxDir]);
      build = pm.ok(["build", ...contexts, "-f", variantFile, "-t", DIGEST_IMAGE, ctxDir]);
      step("podman builds done");
    }
    const inside = pm.ok(["run", "--rm", DIGEST_IMAGE, "cat", "/digest"]).trim();
    expect(inside).toMatch(/^[0-9a-f]{64}$/);
    expect(build).toContain(`composefs digest of the rootfs stage: ${inside}`);
    const rootfsId = pm.ok(["image", "inspect", "--format", "{{.Id}}", ROOTFS_IMAGE]).trim();

    // Outside: save the rootfs stage as an oci-archive and import it.
    const archive = path.join(work, "rootfs.oci-archive.tar");
    pm.ok(["save", "--format", "oci-archive", "-o", archive, ROOTFS_IMAGE]);
    step(`saved ${ROOTFS_IMAGE} (${rootfsId.slice(0, 12)}) as ${path.basename(archive)}`);
    const repo = path.join(work, "repo");
    const imported = cfsctl(["--repo", repo, "import-oci", archive]);
    expect(imported.status, imported.stderr).toBe(0);
    const outside = imported.stdout.toString().trim();
    step("cfsctl import-oci done");

    console.log(`digest inside podman build (compute-id):      ${inside}`);
    console.log(`digest outside (import-oci of the oci-archive): ${outside}`);
    if (inside !== outside) console.log(explainDifference(pm, repo, outside));
    expect(outside).toBe(inside);
  });
});

/**
 * On a mismatch: `cfsctl diff` of the stage as the build saw it (the example
 * keeps its dumpfile in /rootfs.dump) against the imported image.
 */
function explainDifference(pm: Podman, repo: string, outside: string): string {
  const viewed = pm.run(["run", "--rm", DIGEST_IMAGE, "cat", "/rootfs.dump"]);
  if (viewed.status !== 0) return `no dumpfile from the build: ${viewed.stderr}`;
  const dumpfile = path.join(path.dirname(repo), "rootfs.dump");
  fs.writeFileSync(dumpfile, viewed.stdout);
  const d = cfsctl(["diff", dumpfile, path.join(repo, "images", outside)]);
  return `cfsctl diff (in the build -> imported):\n${d.stdout.toString().split("\n").slice(0, 40).join("\n")}${d.stderr}`;
}
