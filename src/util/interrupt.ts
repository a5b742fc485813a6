/**
 * What a run leaves when it is interrupted (SIGINT, SIGTERM, SIGHUP):
 * registered cleanups remove its temporary files, then the signal is raised
 * again with its default action, so the exit status still tells which
 * signal ended the run. Cleanups run on the main thread once it gets
 * control; a file a thread creates after that is left to `cfsctl gc`.
 */
import fs from "node:fs";
import path from "node:path";
import { removeQuietly } from "./remove-quietly.js";
import { sleepMs } from "./sleep.js";

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
const stoppers = new Set<() => void>();
const cleanups = new Set<() => void>();
let installed = false;

/**
 * Set once the run is interrupted, shared with the worker threads
 * (shareInterruptFlag / adoptInterruptFlag): they make no new temporary
 * file after that, so the cleanups find every one.
 */
let flag = new Int32Array(new SharedArrayBuffer(4));

/** The flag's memory, for a worker thread's workerData. */
export function shareInterruptFlag(): SharedArrayBuffer {
  return flag.buffer as SharedArrayBuffer;
}

/** In a worker thread: use the main thread's flag. */
export function adoptInterruptFlag(shared: SharedArrayBuffer): void {
  flag = new Int32Array(shared);
}

export function isInterrupted(): boolean {
  return Atomics.load(flag, 0) !== 0;
}

/** Run `fn` first if the run is interrupted: stop threads making new temporary files. */
export function onInterruptStop(fn: () => void): () => void {
  return register(stoppers, fn);
}

/** Run `fn` if the run is interrupted (remove temporary files); returns the function that cancels it. */
export function onInterrupt(fn: () => void): () => void {
  return register(cleanups, fn);
}

/**
 * The signal listeners are there only while something is registered: the
 * rest of the time a signal keeps its default action and ends the process
 * at once. (While they are there, a signal waits for the main thread: see
 * deliverPendingSignal.)
 */
const listeners = new Map<(typeof SIGNALS)[number], () => void>();

function register(set: Set<() => void>, fn: () => void): () => void {
  set.add(fn);
  if (!installed) {
    installed = true;
    for (const sig of SIGNALS) {
      const l = () => interrupted(sig);
      listeners.set(sig, l);
      process.on(sig, l);
    }
  }
  return () => {
    set.delete(fn);
    // Removed once the event loop has polled: a signal that came meanwhile
    // is delivered first, not dropped with its listener.
    if (installed && !removalQueued && stoppers.size === 0 && cleanups.size === 0) {
      removalQueued = true;
      afterPoll(() => {
        removalQueued = false;
        if (!installed || stoppers.size > 0 || cleanups.size > 0) return;
        installed = false;
        for (const [sig, l] of listeners) process.removeListener(sig, l);
        listeners.clear();
      });
    }
  };
}

let removalQueued = false;

/**
 * Run fn after the event loop has polled for I/O (where a signal is read)
 * at least once. One setImmediate is not enough: queued from a callback of
 * the poll phase, it runs in the check phase right after, before any new
 * poll. Queued from the check phase, the second one runs after the next.
 */
function afterPoll(fn: () => void): void {
  setImmediate(() => setImmediate(fn));
}

/**
 * A signal that came while the main thread was busy is only seen when the
 * event loop polls; a run that then ends without polling again would drop
 * it and exit 0. Awaiting this at the end of a run delivers it (the run
 * then dies of it, after its cleanups).
 */
export async function deliverPendingSignal(): Promise<void> {
  if (!installed) return;
  await new Promise<void>((r) => afterPoll(r));
}

function interrupted(sig: (typeof SIGNALS)[number]): void {
  Atomics.store(flag, 0, 1);
  runAll(stoppers);
  // A thread that made a file just before it was stopped has made it by now.
  sleepMs(50);
  runAll(cleanups);
  installed = false;
  for (const s of SIGNALS) process.removeAllListeners(s);
  listeners.clear();
  process.kill(process.pid, sig);
}

function runAll(set: Set<() => void>): void {
  for (const fn of set) {
    try {
      fn();
    } catch {
      // Best effort: the rest still run.
    }
  }
  set.clear();
}

/**
 * Remove the files whose names start with `prefix` in `dir` and, `depth`
 * levels down, in its subdirectories (never following symlinks).
 */
export function removeByPrefix(dir: string, prefix: string, depth: number): void {
  let ents: fs.Dirent[];
  try {
    ents = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const d of ents) {
    const p = path.join(dir, d.name);
    if (d.name.startsWith(prefix) && !d.isDirectory()) removeQuietly(p);
    else if (depth > 0 && d.isDirectory()) removeByPrefix(p, prefix, depth - 1);
  }
}
