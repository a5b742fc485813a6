import fs from "node:fs";

/** Remove the file at p if it is there (a temporary name being given up). */
export function removeQuietly(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch {
    // Gone already, or never made.
  }
}
