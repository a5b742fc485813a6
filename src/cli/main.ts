/**
 * cfsctl command line: commander program, global options, and the error
 * contract of CLI.md (stdout data only; `cfsctl: error: …` and exit 1 on a
 * failure; usage and exit 2 on a usage error; never a stack trace).
 */
import type { Command } from "commander";
import { CfsError } from "../util/errors.js";
import { deliverPendingSignal } from "../util/interrupt.js";
import { writeFully } from "./io.js";
import { VERSION } from "./version.js";

type Register = (program: Command) => unknown;

/**
 * Command modules, loaded only when their command runs (or for the full
 * help): start-up stays at commander's cost whatever the program grows to.
 */
const COMMAND_MODULES: Array<{ commands: string[]; load: () => Promise<Register> }> = [
  { commands: ["create-image", "compute-id", "create-dumpfile"], load: async () => (await import("./commands/build.js")).registerBuild },
  { commands: ["mkcomposefs"], load: async () => (await import("./commands/mkcomposefs.js")).registerMkcomposefs },
  { commands: ["info"], load: async () => (await import("./commands/info.js")).registerInfo },
  { commands: ["dump", "image-objects"], load: async () => (await import("./commands/read.js")).registerRead },
  { commands: ["diff"], load: async () => (await import("./commands/diff.js")).registerDiff },
  { commands: ["init", "fsck", "gc", "mount"], load: async () => (await import("./commands/repository.js")).registerRepository },
  { commands: ["import-oci", "cat"], load: async () => (await import("./commands/oci.js")).registerOci },
];

/** The subcommand named on the line: the first word that is not a global option or its value. */
function commandName(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--repo" || a === "--hash") {
      i++;
      continue;
    }
    if (a.startsWith("-")) continue;
    return a;
  }
  return undefined;
}

export interface GlobalOptions {
  repo?: string;
  hash: "sha256" | "sha512";
  requireVerity: boolean;
  quiet: boolean;
}

export async function buildProgram(args: string[] = []): Promise<Command> {
  // Loaded here, not at start-up: plain `mkcomposefs` lines never need it.
  const { Command } = await import("commander");
  const program = new Command();
  program
    .name("cfsctl")
    .description("Build, read and mount composefs images")
    .version(VERSION, "-V, --version")
    .option("--repo <dir>", "object repository (default: $CFSCTL_REPO, /sysroot/composefs as root, ~/.var/lib/composefs)")
    .option("--hash <alg>", "fs-verity algorithm of a new repository: sha256 or sha512", "sha256")
    .option("--require-verity", "fail when fs-verity cannot be enabled on stored objects", false)
    .option("-q, --quiet", "no progress bars", false)
    .showHelpAfterError()
    .addHelpText(
      "after",
      "\nExamples:\n  cfsctl --repo /var/lib/composefs create-image --name myos /rootfs\n  cfsctl compute-id /rootfs\n  cfsctl import-oci --name myos image.oci-archive.tar\n  cfsctl dump /var/lib/composefs/images/refs/myos\n\nEach command has its own help: cfsctl COMMAND --help\n",
    )
    .exitOverride();
  const name = commandName(args);
  const wanted = COMMAND_MODULES.filter((m) => name !== undefined && m.commands.includes(name));
  const onlyVersion = args.length === 1 && (args[0] === "--version" || args[0] === "-V");
  for (const m of onlyVersion ? [] : wanted.length > 0 ? wanted : COMMAND_MODULES) (await m.load())(program);
  // Every subcommand throws instead of exiting, so main() decides the code.
  for (const c of program.commands) c.exitOverride();
  return program;
}

export function globalOptions(cmd: Command): GlobalOptions {
  let root = cmd;
  while (root.parent) root = root.parent;
  const o = root.opts();
  if (o.hash !== "sha256" && o.hash !== "sha512") throw new UsageError(`--hash must be sha256 or sha512, not ${o.hash}`);
  if (o.repo === "") throw new UsageError("--repo needs a directory (an empty one would be the working directory)");
  return { repo: o.repo, hash: o.hash, requireVerity: !!o.requireVerity, quiet: !!o.quiet };
}

/** A usage error found after commander parsed the line: exit 2. */
export class UsageError extends Error {}

export async function main(argv: string[]): Promise<void> {
  // A reader that goes away (`cfsctl dump IMG | head`) ends the output quietly.
  for (const s of [process.stdout, process.stderr]) {
    s.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
  const args = argv.slice(2);
  if (args[0] === "mkcomposefs") {
    // The hot path of image builds: plain arguments run without commander
    // (anything else, help included, goes through it below).
    const m = await import("./commands/mkcomposefs.js");
    const plain = m.plainMkcomposefsArgs(args.slice(1));
    if (plain) {
      await settle(args, () => m.runMkcomposefs(plain.source, plain.image, plain.opts));
      return;
    }
  }
  const program = await buildProgram(args);
  await settle(args, () => program.parseAsync(argv));
}

/** Run the command; a failure sets the exit code (and ends the process now). */
async function settle(args: string[], run: () => Promise<unknown>): Promise<void> {
  try {
    await run();
    // A signal that came during the run's last synchronous part: die of it now, not exit 0.
    await deliverPendingSignal();
  } catch (e) {
    const code = exitCodeFor(e);
    // CLI.md: a usage error comes with the usage (commander prints it for its own).
    if (e instanceof UsageError) process.stderr.write(await usageOf(args));
    // A failure ends the process now: a helper process or a pending stream
    // (a zstd decompressor, a half-read layer) must not keep it alive.
    if (code !== 0) process.exit(code);
    process.exitCode = code;
  }
}

/** The help of the command on the line (of the program when there is none), for a usage error. */
async function usageOf(args: string[]): Promise<string> {
  const program = await buildProgram(args);
  let cmd: Command = program;
  const name = commandName(args);
  const sub = program.commands.find((c) => c.name() === name);
  if (sub) {
    cmd = sub;
    // One level deeper for `info ls` and the like: the first word after it
    // that is neither an option nor the value of one (`--filter NAME`).
    const after = args.slice(args.indexOf(name!) + 1);
    const valued = new Set(sub.options.filter((o) => o.required || o.optional).map((o) => o.long));
    for (let i = 0; i < after.length; i++) {
      const a = after[i]!;
      if (a.startsWith("-")) {
        if (valued.has(a)) i++;
        continue;
      }
      const subsub = sub.commands.find((c) => c.name() === a);
      if (subsub) cmd = subsub;
      break;
    }
  }
  return cmd.helpInformation();
}

/** A CommanderError, known without loading commander. */
function isCommanderError(e: unknown): e is Error & { code: string } {
  return e instanceof Error && typeof (e as { code?: unknown }).code === "string" && (e as unknown as { code: string }).code.startsWith("commander.");
}

function exitCodeFor(e: unknown): number {
  if (isCommanderError(e)) {
    if (e.code === "commander.helpDisplayed" || e.code === "commander.version") return 0;
    // Help asked for (`cfsctl help`) is a success; help shown because a command
    // is missing (`cfsctl`, `cfsctl info`) is a usage error.
    if (e.code === "commander.help") return (e as { exitCode?: number }).exitCode === 0 ? 0 : 2;
    return 2; // commander already printed the message and the usage
  }
  if (e instanceof UsageError) {
    printError(`cfsctl: ${oneLine(e.message)}\n`);
    return 2;
  }
  if (e instanceof CfsError) {
    printError(`cfsctl: error: ${oneLine(e.message)}\n`);
    return 1;
  }
  const err = e as Error;
  if (err && (err as NodeJS.ErrnoException).code === "ERR_STRING_TOO_LONG") {
    printError("cfsctl: error: output too large\n");
    return 1;
  }
  if (process.env.CFSCTL_DEBUG) printError(`${err?.stack ?? String(e)}\n`);
  printError(`cfsctl: error: ${oneLine(err?.message ?? String(e))}\n`);
  return 1;
}

/**
 * Write an error to stderr whole before the process exits. process.stderr
 * queues what a full pipe does not take at once, and exiting drops it: an
 * error naming a path of megabytes lost its end.
 */
function printError(s: string): void {
  try {
    writeFully(2, Buffer.from(s, "utf8"));
  } catch {
    // No reader: nothing more to say.
  }
}

/**
 * An error as one line a terminal shows as it is. Messages quote names and
 * fields from the input (a dumpfile, a tar, an image, a scanned tree), which
 * may hold any byte: line breaks become a space, and every other control
 * character (C0 but tab, DEL, and C1, which a latin1-decoded byte of 0x80 to
 * 0x9f becomes) is written as \xNN, so no escape sequence reaches the terminal.
 */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ").replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}
