import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  postJson,
  startTestCoordinator,
  startTestPostgres,
  type TestCoordinator,
  type TestPostgres,
  waitFor,
} from "@darkbloom/coordinator/testing";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readAccountToken, writeAccountToken } from "../config/account-token.js";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

let pg: TestPostgres;
let t: TestCoordinator;
let home: string;

beforeAll(async () => {
  pg = await startTestPostgres();
  // A 1 s poll interval keeps the test short; the daemon follows whatever interval it is given.
  t = await startTestCoordinator(pg.url, { deviceCodePollIntervalSeconds: 1 });
  home = await mkdtemp(join(tmpdir(), "darkbloom-login-"));
});
afterAll(async () => {
  await t?.close();
  await pg?.stop();
  await rm(home, { recursive: true, force: true });
});

describe("darkbloom login / logout", () => {
  it("links the installation through the device-code flow, stores the token 0600, and logs out", async () => {
    const dataDir = join(home, "provider");
    const io = testIo();
    const args = ["--coordinator", t.url, "--data-dir", dataDir];
    const login = runCli(["login", ...args], io.io, { defaults: { home } });
    await waitFor(() => /approve code ([0-9A-Z]{4}-[0-9A-Z]{4})/.test(io.stdout()), 5_000, "the user code");
    const userCode = /approve code ([0-9A-Z]{4}-[0-9A-Z]{4})/.exec(io.stdout())?.[1];
    const approved = await postJson(t.url, "/v1/device/approve", t.apiKey, { user_code: userCode });
    expect(approved.status).toBe(200);
    expect(await login).toBe(0);
    expect(io.stdout()).toContain(`linked to account ${t.accountId}`);
    const token = await readAccountToken(dataDir);
    expect(token).toBeTruthy();
    expect((await stat(join(dataDir, "account-token"))).mode & 0o777).toBe(0o600);

    const out = testIo();
    expect(await runCli(["logout", ...args], out.io, { defaults: { home } })).toBe(0);
    expect(out.stdout()).toBe("logged out\n");
    expect(await readAccountToken(dataDir)).toBeUndefined();
    // The revoked token no longer registers a provider.
    const provider = new ScriptedProvider({ baseUrl: t.url, models: [{ id: "m" }], accountToken: token });
    await expect(provider.start()).rejects.toThrow(/account_token is not valid/);
    await provider.stop().catch(() => undefined);
  });

  it("fails with one line when the owner denies the login", async () => {
    const io = testIo();
    const login = runCli(["login", "--coordinator", t.url, "--data-dir", join(home, "denied")], io.io, {
      defaults: { home },
    });
    await waitFor(() => /approve code ([0-9A-Z]{4}-[0-9A-Z]{4})/.test(io.stdout()), 5_000, "the user code");
    const userCode = /approve code ([0-9A-Z]{4}-[0-9A-Z]{4})/.exec(io.stdout())?.[1];
    expect((await postJson(t.url, "/v1/device/deny", t.apiKey, { user_code: userCode })).status).toBe(200);
    expect(await login).toBe(1);
    expect(io.stderr()).toBe("darkbloom: the login was denied by the account owner\n");
  });

  it("names the coordinator it cannot reach", async () => {
    const io = testIo();
    const code = await runCli(
      ["login", "--coordinator", "http://127.0.0.1:1", "--data-dir", join(home, "x")],
      io.io,
      {
        defaults: { home },
      },
    );
    expect(code).toBe(1);
    expect(io.stderr()).toMatch(/^darkbloom: cannot reach the coordinator at http:\/\/127\.0\.0\.1:1/);
  });

  it("stops the daemon with one line when the coordinator refuses its token, instead of retrying", async () => {
    const dataDir = join(home, "refused");
    const synth = testIo();
    expect(
      await runCli(["models", "synth", "tiny", "--data-dir", dataDir], synth.io, { defaults: { home } }),
    ).toBe(0);
    await writeAccountToken(dataDir, "dbpt_not-a-real-token");
    const io = testIo();
    const code = await runCli(
      ["serve", "--coordinator", t.url, "--data-dir", dataDir, "--model", "tiny", "--allow-cpu"],
      io.io,
      {
        defaults: { home },
        cwd: home,
        createEngine: async () => new ScriptedEngine(),
      },
    );
    expect(code).toBe(1);
    expect(io.stderr()).toMatch(
      /^darkbloom: the coordinator refused this provider: .*account_token is not valid.*\n$/,
    );
  });
});
