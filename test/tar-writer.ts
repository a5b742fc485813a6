/** A minimal tar writer for crafted test layers (ustar headers, PAX records). */
import zlib from "node:zlib";

export interface Member {
  name: string | Buffer;
  type?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  data?: Buffer | string;
  /** Size written in the header (defaults to the data length). */
  size?: number;
  pax?: Record<string, string | Buffer>;
  /** PAX records given as raw bytes (key, value), after `pax`: keys that are not UTF-8. */
  paxRaw?: Array<[Buffer, Buffer]>;
  devmajor?: number;
  devminor?: number;
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

export function header(m: Member): Buffer {
  const h = Buffer.alloc(512);
  const name = Buffer.isBuffer(m.name) ? m.name : Buffer.from(m.name);
  name.copy(h, 0, 0, Math.min(100, name.length));
  h.write(octal(m.mode ?? 0o644, 8), 100, "latin1");
  h.write(octal(m.uid ?? 0, 8), 108, "latin1");
  h.write(octal(m.gid ?? 0, 8), 116, "latin1");
  const data = m.data === undefined ? Buffer.alloc(0) : Buffer.from(m.data);
  h.write(octal(m.size ?? data.length, 12), 124, "latin1");
  h.write(octal(m.mtime ?? 1700000000, 12), 136, "latin1");
  h.write(m.type ?? "0", 156, "latin1");
  if (m.linkname) h.write(m.linkname, 157, "utf8");
  h.write("ustar\0", 257, "latin1");
  h.write("00", 263, "latin1");
  h.write(octal(m.devmajor ?? 0, 8), 329, "latin1");
  h.write(octal(m.devminor ?? 0, 8), 337, "latin1");
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + " ", 148, "latin1");
  return h;
}

function pad(n: number): Buffer {
  return Buffer.alloc((512 - (n % 512)) % 512);
}

export function paxData(rec: Record<string, string | Buffer>, raw: Array<[Buffer, Buffer]> = []): Buffer {
  const parts: Buffer[] = [];
  const records: Array<[Buffer, Buffer]> = [...Object.entries(rec).map(([k, v]) => [Buffer.from(k), Buffer.from(v)] as [Buffer, Buffer]), ...raw];
  for (const [k, v] of records) {
    const body = Buffer.concat([Buffer.from(" "), k, Buffer.from("="), v, Buffer.from("\n")]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    parts.push(Buffer.from(String(len)), body);
  }
  return Buffer.concat(parts);
}

/** A tar archive of the members, with the two end-of-archive blocks unless `noEnd`. */
export function tar(members: Member[], opts: { noEnd?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    if (m.pax || m.paxRaw) {
      const d = paxData(m.pax ?? {}, m.paxRaw);
      parts.push(header({ name: "PaxHeader", type: "x", data: d }), d, pad(d.length));
    }
    const data = m.data === undefined ? Buffer.alloc(0) : Buffer.from(m.data);
    parts.push(header(m), data, pad(data.length));
  }
  if (!opts.noEnd) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export function gzip(b: Buffer): Buffer {
  return zlib.gzipSync(b);
}
