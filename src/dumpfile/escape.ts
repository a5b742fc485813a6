/**
 * Escaping of composefs-dump(5) fields (upstream tools/composefs-info.c
 * print_escaped, tools/mkcomposefs.c unescape_string).
 */

export const enum Escape {
  Standard = 0,
  /** Spaces are printed raw (used by `info ls`). */
  NoEscapeSpace = 1,
  /** `=` becomes `\x3d` (xattr keys and values). */
  Equal = 2,
  /** A value that is exactly `-` becomes `\x2d` (payload, content). */
  LoneDash = 4,
}

const HEX = "0123456789abcdef";

/** Escape bytes to printable ASCII. */
export function escape(buf: Uint8Array, flags: Escape = Escape.Standard): string {
  if ((flags & Escape.LoneDash) !== 0 && buf.length === 1 && buf[0] === 0x2d) return "\\x2d";
  const lo = (flags & Escape.NoEscapeSpace) !== 0 ? 0x20 : 0x21;
  const eq = (flags & Escape.Equal) !== 0;
  let plain = true;
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i]!;
    if (c < lo || c > 0x7e || c === 0x5c || (eq && c === 0x3d)) {
      plain = false;
      break;
    }
  }
  if (plain) return Buffer.from(buf.buffer, buf.byteOffset, buf.length).toString("latin1");
  let out = "";
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i]!;
    if (c === 0x5c) out += "\\\\";
    else if (c === 0x0a) out += "\\n";
    else if (c === 0x0d) out += "\\r";
    else if (c === 0x09) out += "\\t";
    else if (c < lo || c > 0x7e || (eq && c === 0x3d)) out += "\\x" + HEX[c >> 4] + HEX[c & 15];
    else out += String.fromCharCode(c);
  }
  return out;
}

/** Escape an optional value: null prints as `-`. */
export function escapeOptional(buf: Uint8Array | null, flags: Escape): string {
  return buf === null ? "-" : escape(buf, flags);
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * Undo escaping of buf[start, end). Throws a message string (the caller adds
 * the line number) on a bad escape, as unescape_string reports it.
 */
export function unescape(buf: Buffer, start: number, end: number): Buffer {
  if (!hasEscape(buf, start, end)) return buf.subarray(start, end);
  const out = Buffer.allocUnsafe(end - start);
  let o = 0;
  let i = start;
  while (i < end) {
    const c = buf[i++]!;
    if (c !== 0x5c) {
      out[o++] = c;
      continue;
    }
    if (i >= end) throw new DumpSyntaxError("No character after escape");
    const e = buf[i++]!;
    switch (e) {
      case 0x5c:
        out[o++] = 0x5c;
        break;
      case 0x6e:
        out[o++] = 0x0a;
        break;
      case 0x72:
        out[o++] = 0x0d;
        break;
      case 0x74:
        out[o++] = 0x09;
        break;
      case 0x78: {
        if (i >= end) throw new DumpSyntaxError("No hex characters after hex escape");
        const x1 = hexValue(buf[i++]!);
        if (i >= end) throw new DumpSyntaxError("No hex characters after hex escape");
        const x2 = hexValue(buf[i++]!);
        if (x1 < 0 || x2 < 0) throw new DumpSyntaxError("Invalid hex characters after hex escape");
        out[o++] = (x1 << 4) | x2;
        break;
      }
      default:
        throw new DumpSyntaxError(`Unsupported escape type ${String.fromCharCode(e)}`);
    }
  }
  return out.subarray(0, o);
}

/** Whether buf[start, end) holds a backslash (a loop: fields are short, and indexOf would search past end). */
export function hasEscape(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] === 0x5c) return true;
  return false;
}

/** A dumpfile problem; the parser adds where it was found. */
export class DumpSyntaxError extends Error {}
