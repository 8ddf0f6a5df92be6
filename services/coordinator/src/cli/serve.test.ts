import { chmod, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CliIo } from "./io.js";
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
    let stdout = "";
    let stderr = "";
    let stop: (signal: string) => void = () => undefined;
    let signalsAwaited = 0;
    const io: CliIo = {
      stdout: (text) => {
        stdout += text;
      },
      stderr: (text) => {
        stderr += text;
      },
      env: { HOME: root, DARKBLOOM_DATA_DIR: dataDir },
      shutdownSignal: () => {
        signalsAwaited++;
        return new Promise((resolve) => {
          stop = resolve;
        });
      },
    };
    const serving = runCli(["serve", "--port", "0", "--log-level", "silent"], io);
    await expect
      .poll(() => stdout, { timeout: 60_000 })
      .toMatch(/listening on (http:\/\/127\.0\.0\.1:\d+)\n/);
    const url = /listening on (\S+)/.exec(stdout)![1]!;
    expect(stdout).toContain(`admin key in ${join(dataDir, "admin.key")}`);

    // /metrics on the public port needs the generated token (its path is printed, not the token).
    const tokenFile = join(dataDir, "metrics.token");
    expect(stdout).toContain(`metrics token in ${tokenFile}\n`);
    expect((await stat(tokenFile)).mode & 0o777).toBe(0o600);
    const token = (await readFile(tokenFile, "utf8")).trim();
    expect(stdout).not.toContain(token);
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    const scraped = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(scraped.status).toBe(200);
    expect(await scraped.text()).toContain("darkbloom_providers_connected 0");

    let adminOut = "";
    const adminIo: CliIo = {
      ...io,
      stdout: (text) => (adminOut += text),
      env: { HOME: root, DARKBLOOM_DATA_DIR: dataDir },
    };
    const created = await runCli(
      ["admin", "accounts", "create", "--name", "Ada", "--json", "--url", url],
      adminIo,
    );
    expect(created).toBe(0);
    expect(JSON.parse(adminOut).api_key).toMatch(/^dbk_/);

    stop("SIGTERM");
    expect(await serving).toBe(0);
    expect(signalsAwaited).toBe(1);
    expect(stdout).toMatch(/SIGTERM: shutting down\n$/);
    expect(stderr).toBe("");
    const after = await runCli(["admin", "accounts", "list", "--url", url], adminIo);
    expect(after).toBe(69);
  });
});
