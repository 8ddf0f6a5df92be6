import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../store/errors.js";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "../testing/test-database.js";
import { ReleaseAlreadyExistsError, ReleaseNotFoundError } from "./errors.js";
import { ReleaseStore } from "./release-store.js";

let server: TestPostgres;
let db: TestDatabase;
let store: ReleaseStore;

beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  db = await createTestDatabase(server.url);
  store = new ReleaseStore(db.pool);
});
afterEach(async () => {
  await db?.drop();
});

const hash = (digit: string) => digit.repeat(64);
const release = {
  version: "0.5.1",
  platform: "darwin-arm64",
  binarySha256: hash("a"),
  bundleSha256: hash("b"),
  url: "https://releases.example.com/darkbloom-0.5.1-darwin-arm64.tar.gz",
};

describe("ReleaseStore", () => {
  it("registers releases as active and lists them newest first", async () => {
    const created = await store.create(release);
    expect(created).toMatchObject({ ...release, active: true });
    await store.create({ ...release, version: "0.6.0-rc.1+build.7", binarySha256: hash("c") });
    await store.create({ ...release, platform: "linux-x64", binarySha256: hash("d"), active: false });
    expect((await store.list()).map((r) => `${r.version}/${r.platform}`)).toEqual([
      "0.5.1/linux-x64",
      "0.6.0-rc.1+build.7/darwin-arm64",
      "0.5.1/darwin-arm64",
    ]);
    expect((await store.list({ platform: "linux-x64" })).map((r) => r.binarySha256)).toEqual([hash("d")]);
    expect(await store.activeBinaryHashes()).toEqual(new Set([hash("a"), hash("c")]));
  });

  it("activates and deactivates, changing the allowlist", async () => {
    await store.create(release);
    expect((await store.setActive(release.version, release.platform, false)).active).toBe(false);
    expect(await store.activeBinaryHashes()).toEqual(new Set());
    expect((await store.setActive(release.version, release.platform, true)).active).toBe(true);
    expect(await store.activeBinaryHashes()).toEqual(new Set([hash("a")]));
    await expect(store.setActive("9.9.9", "linux-x64", true)).rejects.toThrow(
      new ReleaseNotFoundError("9.9.9", "linux-x64"),
    );
  });

  it("refuses a duplicate version and platform", async () => {
    await store.create(release);
    await expect(store.create({ ...release, binarySha256: hash("e") })).rejects.toThrow(
      new ReleaseAlreadyExistsError("0.5.1", "darwin-arm64"),
    );
  });

  it("validates versions, platforms, hashes and URLs", async () => {
    const bad: Array<[Partial<typeof release>, RegExp]> = [
      [{ version: "v0.5.1" }, /not a semantic version/],
      [{ version: "0.5" }, /not a semantic version/],
      [{ version: "01.2.3" }, /not a semantic version/],
      [{ platform: "Darwin-ARM64" }, /platform "Darwin-ARM64" must look like darwin-arm64/],
      [{ platform: "darwin" }, /platform/],
      [{ binarySha256: hash("A") }, /binary_sha256 must be 64 lowercase hexadecimal characters/],
      [{ bundleSha256: hash("a").slice(1) }, /bundle_sha256/],
      [{ url: "ftp://example.com/x" }, /url must be an http or https URL/],
      [{ url: "not a url" }, /url must be/],
      [{ url: "javascript:alert(1)" }, /url must be/],
    ];
    for (const [change, message] of bad) {
      const failure = store.create({ ...release, ...change });
      await expect(failure).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(failure).rejects.toThrow(message);
    }
    expect(await store.list()).toEqual([]);
  });
});
