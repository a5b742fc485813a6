// Shared benchmark helpers: run a command several times, take the median
// wall time and the peak RSS (GNU time), and find the peers on this machine.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
export const CFSCTL = path.join(ROOT, "bin", "cfsctl");
export const OUT = path.join(ROOT, "bench", "out");
fs.mkdirSync(OUT, { recursive: true });

/** Run `sh -c cmd` `runs` times; median seconds and max peak RSS in MB. */
export function measure(cmd, { runs = 5, warmup = 1 } = {}) {
  const times = [];
  let rss = 0;
  for (let i = 0; i < warmup + runs; i++) {
    const r = spawnSync("/usr/bin/time", ["-f", "%e %M", "sh", "-c", cmd], { encoding: "utf8", maxBuffer: 1 << 30 });
    if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}): ${r.stderr.slice(-2000)}`);
    const last = r.stderr.trim().split("\n").pop().split(" ");
    if (i < warmup) continue;
    times.push(Number(last[0]));
    rss = Math.max(rss, Number(last[1]) / 1024);
  }
  times.sort((a, b) => a - b);
  return { seconds: times[Math.floor(times.length / 2)], rssMB: rss, runs: times };
}

/** A peer binary: on PATH, or an upstream build in CFSCTL_PEERS (colon-separated dirs). */
export function findPeer(name) {
  const dirs = [...(process.env.CFSCTL_PEERS ?? "").split(":").filter(Boolean), ...process.env.PATH.split(":")];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

export function report(rows) {
  const w = Math.max(...rows.map((r) => r.name.length));
  for (const r of rows) {
    const ratio = r.ratio !== undefined ? `  ratio ${r.ratio.toFixed(2)}` : "";
    console.log(`${r.name.padEnd(w)}  ${r.seconds.toFixed(3)} s  peak ${r.rssMB.toFixed(0)} MB${ratio}`);
  }
}

/**
 * A synthetic dumpfile of about `n` entries: nested directories, external
 * files with digests, inline files, symlinks, some xattrs and hardlinks.
 */
export function genDumpfile(n) {
  const lines = ["/ 4096 40755 2 0 0 0 1700000000.0 - - -"];
  let count = 1;
  let d = 0;
  const hex = (i) => (BigInt(i) * 0x9e3779b97f4a7c15n % (1n << 256n)).toString(16).padStart(64, "0");
  while (count < n) {
    const dir = `/d${String(d).padStart(4, "0")}`;
    lines.push(`${dir} 4096 40755 2 0 0 0 1700000000.0 - - - user.dir=${d % 7}`);
    count++;
    for (let s = 0; s < 4 && count < n; s++) {
      const sub = `${dir}/sub${s}`;
      lines.push(`${sub} 4096 40755 2 1000 1000 0 1700000001.${s} - - -`);
      count++;
      for (let f = 0; f < 30 && count < n; f++) {
        const i = count;
        const name = `${sub}/file-${f}.dat`;
        if (f % 10 === 9) {
          lines.push(`${sub}/link-${f} 12 120777 1 0 0 0 1700000002.0 ../sub0/x${f} - -`);
        } else if (f % 5 === 3) {
          lines.push(`${name} 19 100644 1 0 0 0 1700000003.0 - small-content-${String(i % 100000).padStart(5, "0")} -`);
        } else if (f === 29 && s === 1) {
          lines.push(`${sub}/hard 0 @100644 1 0 0 0 0.0 ${dir}/sub0/file-0.dat - -`);
        } else {
          const dg = hex(i);
          const size = 100 + ((i * 7919) % 5_000_000);
          const sel = f % 2 ? " security.selinux=system_u:object_r:usr_t:s0\\x00" : "";
          lines.push(`${name} ${size} 100644 1 0 0 0 1700000004.${i % 1000} ${dg.slice(0, 2)}/${dg.slice(2)} - ${dg}${sel}`);
        }
        count++;
      }
    }
    d++;
  }
  return lines.join("\n") + "\n";
}
