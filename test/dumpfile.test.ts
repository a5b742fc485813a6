/** composefs-dump(5): parsing rules of upstream mkcomposefs and the writer. */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseDumpfile } from "../src/dumpfile/parse.js";
import { dumpfileToString } from "../src/dumpfile/write.js";
import { escape, Escape, unescape } from "../src/dumpfile/escape.js";
import { CfsError } from "../src/util/errors.js";
import { NOT_STRICT, assetDump, assetNames, cfsctl, tmpdir } from "./helpers.js";

const ROOT = "/ 4096 40755 2 0 0 0 0.0 - - -\n";
const parse = (s: string, strict = false) => parseDumpfile(Buffer.from(s, "latin1"), { strict, source: "t" });
const err = (s: string, strict = false): string => {
  try {
    parse(s, strict);
  } catch (e) {
    expect(e).toBeInstanceOf(CfsError);
    return (e as Error).message;
  }
  throw new Error("parsed");
};

describe("escaping", () => {
  it("escapes like composefs-info", () => {
    const b = Buffer.from([0x61, 0x20, 0x5c, 0x0a, 0x0d, 0x09, 0x3d, 0x7f, 0xff, 0x00, 0x2d]);
    expect(escape(b)).toBe("a\\x20\\\\\\n\\r\\t=\\x7f\\xff\\x00-");
    expect(escape(b, Escape.Equal)).toBe("a\\x20\\\\\\n\\r\\t\\x3d\\x7f\\xff\\x00-");
    expect(escape(b, Escape.NoEscapeSpace)).toBe("a \\\\\\n\\r\\t=\\x7f\\xff\\x00-");
    expect(escape(Buffer.from("-"), Escape.LoneDash)).toBe("\\x2d");
    expect(escape(Buffer.from("-"))).toBe("-");
  });
  it("unescapes both hex cases and rejects bad escapes", () => {
    const u = (s: string) => unescape(Buffer.from(s, "latin1"), 0, s.length);
    expect(u("\\x41\\x6a\\x6A\\n\\\\").toString("latin1")).toBe("Ajj\n\\");
    for (const bad of ["\\q", "\\X41", "\\", "\\x4", "\\xzz"]) expect(() => u(bad)).toThrow();
  });
});

describe("parser rules", () => {
  it("reads mtime as SEC.NSEC with a plain integer after the dot, negative seconds too", () => {
    const r = parse(ROOT + "/a 0 100644 1 0 0 0 1.5 - - -\n/b 0 100644 1 0 0 0 -1.999999999 - - -\n/c 0 100644 1 0 0 0 -1.-1 - - -\n");
    const [a, b, c] = r.entries!.map((e) => e.inode);
    expect([a!.mtimeSec, a!.mtimeNsec]).toEqual([1n, 5]);
    expect([b!.mtimeSec, b!.mtimeNsec]).toEqual([-1n, 999999999]);
    expect([c!.mtimeSec, c!.mtimeNsec]).toEqual([-1n, 4294967295]);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 5 - - -\n")).toMatch(/Invalid integer/);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 5. - - -\n")).toMatch(/Invalid integer/);
  });
  it("treats `-` as unset and an empty field as empty", () => {
    const r = parse(ROOT + "/a 1 100644 1 0 0 0 0.0 - \\x2d -\n/b 0 100644 1 0 0 0 0.0   -\n");
    expect(r.entries![0]!.inode.content!.toString()).toBe("-");
    expect(r.entries![1]!.inode.payload!.length).toBe(0);
    expect(r.entries![1]!.inode.content!.length).toBe(0);
  });
  it("accepts a line that ends after MTIME and tolerates // in paths", () => {
    // An empty CONTENT field is empty content, so SIZE must then be 0.
    expect(err("/ 4096 40755 2 0 0 0 0.0\n")).toMatch(/Invalid content size 0, must match size 4096/);
    const r = parse("/ 0 40755 2 0 0 0 0.0\n//d 0 40755 2 0 0 0 0.0 - - -\n/d//x 0 100644 1 0 0 0 0.0 - - -\n");
    expect(r.lookup(Buffer.from("d"))!.inode.lookup(Buffer.from("x"))).toBeDefined();
  });
  it("keeps the last value of a repeated xattr and splits at the first =", () => {
    const r = parse("/ 4096 40755 2 0 0 0 0.0 - - - user.a=1 user.b=x=y user.a=2\n");
    expect(r.getXattr("user.a")!.toString()).toBe("2");
    expect(r.getXattr("user.b")!.toString()).toBe("x=y");
  });
  it("refuses what upstream refuses", () => {
    expect(err("")).toMatch(/No files in dump file/);
    expect(err("/a 0 100644 1 0 0 0 0.0 - - -\n")).toMatch(/Root node not present/);
    expect(err("/ 0 100644 1 0 0 0 0.0 - - -\n")).toMatch(/Root must be a directory/);
    expect(err(ROOT + ROOT)).toMatch(/Can't have multiple roots/);
    expect(err(ROOT + "/x/y 0 100644 1 0 0 0 0.0 - - -\n")).toMatch(/:2: Parent directory missing for \/x\/y/);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n")).toMatch(/:3: Path \/a already exist/);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n")).toMatch(/Parent must be a directory/);
    expect(err(ROOT + "/a\x00 0 100644 1 0 0 0 0.0 - - -\n")).toMatch(/embedded NUL/);
    expect(err(ROOT + "/a 3 100644 1 0 0 0 0.0 - ab -\n")).toMatch(/Invalid content size 2, must match size 3/);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 0.0 - - - user.a\n")).toMatch(/Missing = in xattr/);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 0.0 - - - user.a=1  \n")).toMatch(/Missing = in xattr/);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 0.0 - - 0123\n")).toMatch(/Invalid digest/);
    expect(err(ROOT + "/a 0 @100644 1 0 0 0 0.0 /nothere - -\n")).toMatch(/No target at \/nothere for hardlink/);
    expect(err(ROOT + "/a 0 @100644 1 0 0 0 0.0 - - -\n")).toMatch(/No target path for the hardlink/);
    expect(err(ROOT + `/${"n".repeat(256)} 0 100644 1 0 0 0 0.0 - - -\n`)).toMatch(/Can't add child/);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 0.0 - - - \\q=1\n")).toMatch(/Unsupported escape type q/);
  });
  it("reads a digest of 64 hex digits in either case, and refuses any other byte among them", () => {
    const hex = "0123456789abcdefABCDEF".repeat(3).slice(0, 64);
    const a = parse(ROOT + `/a 4096 100644 1 0 0 0 0.0 - - ${hex}\n`).entries![0]!.inode.digest!;
    expect(a.toString("hex")).toBe(hex.toLowerCase());
    // The bytes on either side of each hex range, and one past 'f'.
    for (const bad of ["/", ":", "@", "G", "`", "g", "\\x00"]) {
      const digest = hex.slice(0, 63) + bad;
      expect(err(ROOT + `/a 4096 100644 1 0 0 0 0.0 - - ${digest}\n`)).toMatch(/Invalid digest/);
    }
  });
  it("keeps upstream's lenient integers (a bad GID is ignored when UID is not 0)", () => {
    const r = parse(ROOT + "/a 0 100644 1 5 x 0 0.0 - - -\n");
    expect(r.entries![0]!.inode.gid).toBe(0);
    expect(err(ROOT + "/a 0 100644 1 0 x 0 0.0 - - -\n")).toMatch(/Invalid integer x/);
  });
  it("takes digits followed by anything else as an invalid integer worth 0, as parse_int_field does", () => {
    expect(err(ROOT + "/a 0 100644x 1 0 0 0 0.0 - - -\n")).toMatch(/:2: Invalid integer 100644x$/);
    expect(err(ROOT + "/a 0 @100644x 1 0 0 0 0.0 / - -\n")).toMatch(/Invalid integer 100644x/);
    expect(err(ROOT + "/a 5x 100644 1 0 0 0 0.0 - - -\n")).toMatch(/Invalid integer 5x/);
    expect(err(ROOT + "/a 0 100644 2x 0 0 0 0.0 - - -\n")).toMatch(/Invalid integer 2x/);
    expect(err(ROOT + "/a 0 100644 1 1x 0 0 0.0 - - -\n")).toMatch(/Invalid integer 1x/);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 1.5x - - -\n")).toMatch(/Invalid integer 5x/);
    expect(err(ROOT + "/a 0 100644 1 0 0 0 7x.5 - - -\n")).toMatch(/Invalid integer 7x/);
    // Where upstream checks the UID instead (GID, RDEV), the value is 0, not the digits before the garbage.
    const r = parse(ROOT + "/a 0 100644 1 5 6x 0 0.0 - - -\n/c 0 20644 1 5 0 259x 0.0 - - -\n");
    expect(r.entries!.map((e) => [e.inode.gid, e.inode.rdev])).toEqual([
      [0, 0],
      [0, 0],
    ]);
  });
  it("resolves hardlink chains and forward references, keeping the target's nlink", () => {
    const r = parse(ROOT + "/a 0 @100644 0 0 0 0 0.0 /b - -\n/b 0 @100644 0 0 0 0 0.0 /c - -\n/c 5 100644 1 0 0 0 0.0 - hello -\n");
    const [a, b, c] = r.entries!;
    expect(a!.hardlink && b!.hardlink && !c!.hardlink).toBe(true);
    expect(a!.inode).toBe(c!.inode);
    expect(b!.inode).toBe(c!.inode);
    expect(c!.inode.nlink).toBe(1);
  });
  it("refuses hardlinks that lead round in a loop, naming the first line of one", () => {
    expect(err(ROOT + "/a 0 @100644 0 0 0 0 0.0 /b - -\n/b 0 @100644 0 0 0 0 0.0 /a - -\n")).toMatch(/:2: cannot write file: hardlink loop/);
    const tail = ROOT + "/f 0 100644 1 0 0 0 0.0 - - -\n/a 0 @100644 0 0 0 0 0.0 /f - -\n";
    expect(err(tail + "/b 0 @100644 0 0 0 0 0.0 /c - -\n/c 0 @100644 0 0 0 0 0.0 /d - -\n/d 0 @100644 0 0 0 0 0.0 /c - -\n")).toMatch(/:4: cannot write file: hardlink loop/);
  });
  it("resolves a long chain of hardlinks in linear time", () => {
    // Each link walked the chain to its end: 50,000 links took 77 s (upstream: 11 s).
    const lines = [ROOT.trimEnd(), "/f 0 100644 1 0 0 0 0.0 - - -", "/l1 0 @100644 1 0 0 0 0.0 /f - -"];
    for (let i = 2; i < 50000; i++) lines.push(`/l${i} 0 @100644 1 0 0 0 0.0 /l${i - 1} - -`);
    const dir = tmpdir();
    const dump = path.join(dir, "chain.dump");
    fs.writeFileSync(dump, lines.join("\n") + "\n");
    const res = cfsctl(["mkcomposefs", "--from-file", dump, path.join(dir, "chain.img")], { timeout: 20_000 });
    expect(res.status, "-1: killed after 20 s").toBe(0);
    const r = parseDumpfile(fs.readFileSync(dump));
    const f = r.lookup(Buffer.from("f"))!.inode;
    expect(r.entries!.every((e) => e.inode === f)).toBe(true);
  });
  it("refuses a path of ten million components at its first missing parent, in bounded memory", () => {
    // The parents were split into a Buffer each before the walk: 2 GB for
    // this 20 MB line. (And the message, 20 MB long, lost its end on a pipe.)
    const dir = tmpdir();
    const dump = path.join(dir, "long.dump");
    fs.writeFileSync(dump, ROOT + "/a".repeat(10_000_000) + " 0 100644 1 0 0 0 0.0 - - -\n");
    const res = cfsctl(["mkcomposefs", "--from-file", dump, path.join(dir, "x.img")], { env: { NODE_OPTIONS: "--max-old-space-size=256" } });
    expect(res.status).toBe(1);
    expect(res.stderr).toMatch(/^cfsctl: error: \S+long\.dump:2: Parent directory missing for \/a\/a\/a[/a]*\n$/);
  });
  it("writes control characters of a bad field as \\xNN: the error stays one line a terminal shows as is", () => {
    const dir = tmpdir();
    const dump = path.join(dir, "esc.dump");
    // A mode field of ESC sequences, BEL, a carriage return, DEL and byte 0x9b (CSI in C1).
    const bad = Buffer.concat([Buffer.from("1\x1b]0;t\x07\x1b[2J\r\x7f"), Buffer.from([0x9b]), Buffer.from("9")]);
    fs.writeFileSync(dump, Buffer.concat([Buffer.from("/ 0 40755 2 0 0 0 0.0 - - -\n/a 0 "), bad, Buffer.from(" 1 0 0 0 0.0 - - -\n")]));
    const res = cfsctl(["mkcomposefs", "--from-file", dump, path.join(dir, "x.img")]);
    expect(res.status).toBe(1);
    expect(res.stderr).toBe(`cfsctl: error: ${dump}:2: Invalid integer 1\\x1b]0;t\\x07\\x1b[2J \\x7f\\x9b9\n`);
  });
  it("keeps the last value of a key repeated among many xattrs, moved to the end, as upstream", () => {
    const many = Array.from({ length: 30 }, (_, i) => `user.k${i}=v${i}`).join(" ");
    const r = parse(ROOT + `/f 0 100644 1 0 0 0 0.0 - - - ${many} user.k3=again user.k20=last user.k29=x\n`);
    const xs = r.lookup(Buffer.from("f"))!.inode.xattrs;
    const keys = xs.map((x) => x.key.toString());
    const want = Array.from({ length: 30 }, (_, i) => `user.k${i}`).filter((k) => k !== "user.k3" && k !== "user.k20" && k !== "user.k29");
    expect(keys).toEqual([...want, "user.k3", "user.k20", "user.k29"]);
    expect(xs.map((x) => x.value.toString()).slice(-3)).toEqual(["again", "last", "x"]);
    // The budget counts each key once: 30 of them fit where 31 would not.
    const fill = (n: number) => Array.from({ length: n }, (_, i) => `user.${String(i).padStart(5, "0")}=${"v".repeat(1070)}`).join(" ");
    expect(() => parse(ROOT + `/f 0 100644 1 0 0 0 0.0 - - - ${fill(30)} user.00007=${"w".repeat(1070)}\n`)).not.toThrow();
    expect(err(ROOT + `/f 0 100644 1 0 0 0 0.0 - - - ${fill(31)}\n`)).toMatch(/Can't set xattr/);
  });
  it("sets thousands of xattrs a line in linear time", () => {
    // Each xattr was compared with all before it: 600 lines of 1,900 took about 19 s (upstream: 4 s).
    const xs = Array.from({ length: 1900 }, (_, i) => `user.${String(i).padStart(5, "0")}=`).join(" ");
    const lines = [ROOT.trimEnd()];
    for (let i = 0; i < 600; i++) lines.push(`/f${i} 0 100644 1 0 0 0 0.0 - - - ${xs}`);
    const dir = tmpdir();
    const dump = path.join(dir, "xattrs.dump");
    fs.writeFileSync(dump, lines.join("\n") + "\n");
    const res = cfsctl(["mkcomposefs", "--from-file", "--print-digest-only", dump], { timeout: 12_000 });
    expect(res.status, "-1: killed after 12 s").toBe(0);
  });
  it("strict mode adds upstream's four rejections", () => {
    expect(err(ROOT.trimEnd(), true)).toMatch(/Missing trailing newline/);
    expect(err(ROOT + "/a 0 100644 1 0 0 5 0.0 - - -\n", true)).toMatch(/Non-zero devnum on non-device/);
    expect(err(ROOT + "/l 3 120777 1 0 0 0 0.0 abcd - -\n", true)).toMatch(/Invalid symlink size 4, must match size 3/);
    expect(err(ROOT + "/l 4 120777 1 0 0 0 0.0 abcd wxyz -\n", true)).toMatch(/Symlink cannot have content/);
    expect(() => parse(ROOT + "/a 0 100644 1 0 0 5 0.0 - - -\n/l 3 120777 1 0 0 0 0.0 abcd - -\n")).not.toThrow();
  });
});

describe("round trips", () => {
  for (const name of assetNames()) {
    it(`parse → write → parse is the identity: ${name}`, () => {
      const first = dumpfileToString(parseDumpfile(assetDump(name), { strict: !NOT_STRICT.has(name) }));
      const second = dumpfileToString(parseDumpfile(Buffer.from(first, "latin1"), { strict: true }));
      expect(second).toBe(first);
    });
  }
});
