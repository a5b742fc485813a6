/**
 * Mount points below a directory, from /proc/self/mountinfo. The walk
 * refuses an entry whose st_dev is not the root's, but a bind mount of the
 * same filesystem keeps st_dev: only the mount table shows that such a
 * directory is another mount, whose contents the scan must not take in.
 */
import fs from "node:fs";

/** mountinfo escapes space, tab, newline and backslash as \ooo (octal). */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The mount points strictly below `dir`, as paths that start with `dir`
 * as given (bytes, sorted), or none where the mount table cannot be read.
 */
export function mountPointsBelow(dir: Buffer): Buffer[] {
  let table: string;
  let real: string;
  try {
    table = fs.readFileSync("/proc/self/mountinfo", "latin1");
    real = (fs.realpathSync.native(dir, { encoding: "buffer" }) as Buffer).toString("latin1");
  } catch {
    return [];
  }
  const under = real.endsWith("/") ? real : real + "/";
  const given = dir.length > 1 && dir[dir.length - 1] === 0x2f ? dir.subarray(0, dir.length - 1) : dir;
  const found: Buffer[] = [];
  for (const line of table.split("\n")) {
    // ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS …
    const mp = line.split(" ")[4];
    if (mp === undefined) continue;
    const p = unescapeMountPath(mp);
    if (p.length <= under.length || !p.startsWith(under)) continue;
    const rest = Buffer.from(p.slice(real.length === 1 ? 0 : real.length), "latin1");
    found.push(given.length === 1 && given[0] === 0x2f ? rest : Buffer.concat([given, rest]));
  }
  return found.sort(Buffer.compare);
}
