import { chmod, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testIo } from "@darkbloom/cli-kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "./program.js";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "darkbloom-serve-test-"));
  if (process.getuid?.() === 0) await chmod(root, 0o755);
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("serve", () => {
  it("runs until a signal, then closes once and exits 0; the admin CLI reaches it with the generated key", async () => {
    const dataDir = join(root, "data");
    const t = testIo({ HOME: root, DARKBLOOM_DATA_DIR: dataDir });
    const serving = runCli(["serve", "--port", "0", "--log-level", "silent"], t.io);
    await expect
      .poll(() => t.stdout(), { timeout: 60_000 })
      .toMatch(/listening on (http:\/\/127\.0\.0\.1:\d+)\n/);
    const url = /listening on (\S+)/.exec(t.stdout())![1]!;
    expect(t.stdout()).toContain(`admin key in ${join(dataDir, "admin.key")}`);

    // /metrics on the public port needs the generated token (its path is printed, not the token).
    const tokenFile = join(dataDir, "metrics.token");
    expect(t.stdout()).toContain(`metrics token in ${tokenFile}\n`);
    expect((await stat(tokenFile)).mode & 0o777).toBe(0o600);
    const token = (await readFile(tokenFile, "utf8")).trim();
    expect(t.stdout()).not.toContain(token);
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    const scraped = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(scraped.status).toBe(200);
    expect(await scraped.text()).toContain("darkbloom_providers_connected 0");

    const admin = testIo({ HOME: root, DARKBLOOM_DATA_DIR: dataDir });
    const created = await runCli(
      ["admin", "accounts", "create", "--name", "Ada", "--json", "--url", url],
      admin.io,
    );
    expect(created).toBe(0);
    expect(JSON.parse(admin.stdout()).api_key).toMatch(/^dbk_/);

    t.signal("SIGTERM");
    expect(await serving).toBe(0);
    expect(t.signalsAwaited()).toBe(1);
    expect(t.stdout()).toMatch(/SIGTERM: shutting down\n$/);
    expect(t.stderr()).toBe("");
    const after = await runCli(["admin", "accounts", "list", "--url", url], admin.io);
    expect(after).toBe(69);
  });
});
