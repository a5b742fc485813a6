/** `cfsctl info …`: the commands of upstream composefs-info. */
import type { Command } from "commander";
import fs from "node:fs";
import { CfsError, describeSystemError } from "../../util/errors.js";
import { fsverityDigestFdSync } from "../../fsverity/digest.js";
import { StdoutBuffer } from "../io.js";

export function registerInfo(program: Command): Command {
  const info = program.command("info").description("inspect composefs images and files (as composefs-info)");
  info
    .command("measure-file")
    .description("print the fs-verity sha256 digest of each file")
    .argument("<file...>")
    .addHelpText("after", "\nExample:\n  cfsctl info measure-file /usr/bin/bash\n")
    .action((files: string[]) => {
      const out = new StdoutBuffer();
      try {
        for (const f of files) {
          let fd: number;
          try {
            fd = fs.openSync(f, "r");
          } catch (e) {
            throw new CfsError(`failed to measure '${f}': ${describeSystemError(e, "").message.replace(/^: /, "")}`);
          }
          try {
            out.write(fsverityDigestFdSync(fd, "sha256").toString("hex") + "\n");
          } catch (e) {
            throw new CfsError(`failed to measure '${f}': ${describeSystemError(e, "").message.replace(/^: /, "")}`);
          } finally {
            fs.closeSync(fd);
          }
        }
      } finally {
        out.flush();
      }
    });
  return info;
}
