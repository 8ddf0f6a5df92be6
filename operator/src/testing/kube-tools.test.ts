import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { deflateRawSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { kubeTools, unzipEntry } from "./kube-tools.js";

const run = promisify(execFile);

describe("kubeTools", () => {
  it("unpacks the real kubectl 1.35 and helm v4 once, for concurrent callers alike", async () => {
    const [first, second] = await Promise.all([kubeTools(), kubeTools()]);
    expect(second).toEqual(first);
    const kubectl = await run(first.kubectl, ["version", "--client", "-o", "json"]);
    expect(JSON.parse(kubectl.stdout).clientVersion).toMatchObject({ major: "1", minor: "35" });
    const helm = await run(first.helm, ["version", "--short"]);
    expect(helm.stdout).toMatch(/^v4\./);
  }, 300_000);
});

describe("unzipEntry", () => {
  // A two-entry archive built by hand: one stored, one deflated.
  function zip(entries: { name: string; data: Buffer; deflate: boolean }[]): Buffer {
    const locals: Buffer[] = [];
    const central: Buffer[] = [];
    let offset = 0;
    for (const entry of entries) {
      const body = entry.deflate ? deflateRawSync(entry.data) : entry.data;
      const name = Buffer.from(entry.name);
      const local = Buffer.alloc(30);
      local.writeUInt32LE(0x04034b50, 0);
      local.writeUInt16LE(entry.deflate ? 8 : 0, 8);
      local.writeUInt32LE(body.length, 18);
      local.writeUInt32LE(entry.data.length, 22);
      local.writeUInt16LE(name.length, 26);
      const header = Buffer.alloc(46);
      header.writeUInt32LE(0x02014b50, 0);
      header.writeUInt16LE(entry.deflate ? 8 : 0, 10);
      header.writeUInt32LE(body.length, 20);
      header.writeUInt32LE(entry.data.length, 24);
      header.writeUInt16LE(name.length, 28);
      header.writeUInt32LE(offset, 42);
      locals.push(local, name, body);
      central.push(header, name);
      offset += local.length + name.length + body.length;
    }
    const directory = Buffer.concat(central);
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(entries.length, 10);
    end.writeUInt32LE(directory.length, 12);
    end.writeUInt32LE(offset, 16);
    return Buffer.concat([...locals, directory, end]);
  }

  it("reads stored and deflated entries and names what is missing", () => {
    const archive = zip([
      { name: "a/one", data: Buffer.from("stored bytes"), deflate: false },
      { name: "b/two", data: Buffer.from("deflated ".repeat(100)), deflate: true },
    ]);
    expect(unzipEntry(archive, "a/one").toString()).toBe("stored bytes");
    expect(unzipEntry(archive, "b/two").toString()).toBe("deflated ".repeat(100));
    expect(() => unzipEntry(archive, "c/three")).toThrow("c/three is not in the archive");
    expect(() => unzipEntry(Buffer.from("nope"), "a/one")).toThrow("not a zip archive");
  });
});
