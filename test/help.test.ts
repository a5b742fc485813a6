/** Every command's --help shows its options and at least one example. */
import { describe, expect, it } from "vitest";
import { cfsctl } from "./helpers.js";

/** The subcommands `cfsctl --help` (or `cfsctl info --help`) lists. */
function commandsOf(args: string[]): string[] {
  const r = cfsctl([...args, "--help"]);
  expect(r.status).toBe(0);
  const text = r.stdout.toString();
  const start = text.indexOf("\nCommands:\n");
  expect(start).toBeGreaterThan(0);
  const end = text.indexOf("\n\n", start + 1);
  const section = text.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/^  ([a-z][a-z-]*)\b/gm)].map((m) => m[1]!).filter((c) => c !== "help");
}

describe("help", () => {
  const top = commandsOf([]);

  it("lists every command", () => {
    for (const c of ["create-image", "compute-id", "create-dumpfile", "import-oci", "cat", "dump", "image-objects", "diff", "init", "fsck", "gc", "mount", "mkcomposefs", "info"]) {
      expect(top).toContain(c);
    }
  });

  it("no command is a usage error: the usage on stderr, nothing on stdout, exit 2; help asked for exits 0", () => {
    for (const args of [[], ["info"]]) {
      const r = cfsctl(args);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stdout.length).toBe(0);
      expect(r.stderr).toMatch(/^Usage: cfsctl /);
    }
    for (const args of [["help"], ["help", "info"], ["info", "help"]]) expect(cfsctl(args).status, args.join(" ")).toBe(0);
  });

  it("a bad option value is a usage error: its message, then the command's usage, exit 2", () => {
    for (const [args, usage] of [
      [["--hash", "md5", "init"], "init"],
      [["compute-id", "--selinux", "bogus", "/"], "compute-id"],
      [["mkcomposefs", "--threads=0", "a", "b"], "mkcomposefs"],
      [["create-image", "--name", "../x", "/"], "create-image"],
      // An option's value is not taken for the subcommand.
      [["info", "--filter", "ls", "missing-objects", "x.cfs"], "info missing-objects"],
    ] as const) {
      const r = cfsctl([...args]);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stdout.length).toBe(0);
      expect(r.stderr).toMatch(new RegExp(`^cfsctl: [^\n]+\nUsage: cfsctl ${usage} `));
    }
  });

  const all = [...top.map((c) => [c]), ...commandsOf(["info"]).map((c) => ["info", c])];
  for (const cmd of all) {
    it(`cfsctl ${cmd.join(" ")} --help shows its options and an example`, () => {
      const r = cfsctl([...cmd, "--help"]);
      expect(r.status).toBe(0);
      expect(r.stderr).toBe("");
      const text = r.stdout.toString();
      expect(text).toMatch(new RegExp(`^Usage: cfsctl ${cmd.join(" ")} `, "m"));
      expect(text).toMatch(/^Options:\n {2}/m);
      expect(text).toMatch(/^Examples?:\n {2}(cfsctl|podman) /m);
      expect(text).toMatch(new RegExp(`\\bcfsctl (--?[a-z-]+( [^ -]\\S*)? )*${cmd.join(" ")}\\b`));
    });
  }
});
