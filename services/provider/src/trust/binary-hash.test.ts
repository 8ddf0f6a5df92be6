import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { daemonBinarySha256, daemonCodeRoot, treeSha256 } from "./binary-hash.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "darkbloom-tree-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

describe("treeSha256", () => {
  it("is SHA-256 over sorted `<sha256>  <path>` lines, so any change to the tree changes it", async () => {
    await mkdir(join(root, "bin"));
    await writeFile(join(root, "bin", "darkbloom.js"), "main");
    await writeFile(join(root, "a.js"), "a");
    await symlink("a.js", join(root, "z-link"));
    const expected = sha(
      `${sha("a")}  a.js\n${sha("main")}  bin/darkbloom.js\n${sha("symlink:a.js")}  z-link\n`,
    );
    expect(await treeSha256(root)).toBe(expected);
    await writeFile(join(root, "a.js"), "A");
    expect(await treeSha256(root)).not.toBe(expected);
    await writeFile(join(root, "a.js"), "a");
    expect(await treeSha256(root)).toBe(expected);
    await writeFile(join(root, "extra.js"), "");
    expect(await treeSha256(root)).not.toBe(expected);
  });

  it("hashes the running daemon's own code directory", async () => {
    expect(daemonCodeRoot()).toMatch(/services\/provider\/(src|dist)$/);
    expect(await daemonBinarySha256()).toMatch(/^[0-9a-f]{64}$/);
  });
});
