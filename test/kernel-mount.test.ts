/** Every asset image mounts with the kernel and shows what its dumpfile says. */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseDumpfile } from "../src/dumpfile/parse.js";
import { writeImage } from "../src/erofs/writer.js";
import { NOT_STRICT, assetDump, assetNames, assetVersion, tmpdir } from "./helpers.js";
import { compareMount, mountErofs } from "./kernel-view.js";

const work = tmpdir();

// Find out once whether this machine lets us mount at all.
const probe = (() => {
  const img = path.join(work, "probe.img");
  fs.writeFileSync(img, writeImage(parseDumpfile(Buffer.from("/ 4096 40755 2 0 0 0 0.0 - - -\n"))).image);
  const m = mountErofs(img);
  if (typeof m === "string") return m;
  m.unmount();
  return null;
})();
if (probe) console.log(`kernel mount tests skipped: ${probe}`);

describe.skipIf(probe !== null)("kernel EROFS mount of written images", () => {
  for (const name of assetNames()) {
    it(name, () => {
      const v = assetVersion(name);
      const root = parseDumpfile(assetDump(name), { strict: !NOT_STRICT.has(name) });
      const img = path.join(work, `${name}.img`);
      fs.writeFileSync(img, writeImage(root, v === undefined ? {} : { minVersion: v, maxVersion: v }).image);
      const m = mountErofs(img);
      if (typeof m === "string") throw new Error(m);
      try {
        expect(compareMount(m.mountpoint, root)).toEqual([]);
      } finally {
        m.unmount();
      }
    });
  }
});
