import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testIo } from "@darkbloom/cli-kit/testing";
import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { runCli } from "./program.js";
import { accessFrom, addAccessOptions, metricsTokenFor } from "./serve-access.js";

function parse(args: string[]): Record<string, unknown> {
  const command = addAccessOptions(new Command("serve").exitOverride());
  command.parse(args, { from: "user" });
  return command.opts();
}

describe("serve's access settings", () => {
  it("takes flags over environment variables", () => {
    const opts = parse(["--metrics-port", "9464", "--auth-failure-burst", "7", "--trust-proxy", "1"]);
    expect(
      accessFrom(opts, {
        DARKBLOOM_METRICS_PORT: "1",
        DARKBLOOM_METRICS_TOKEN: "from-the-environment-0123",
        DARKBLOOM_AUTH_FAILURE_RATE: "0",
      }),
    ).toEqual({
      metricsPort: 9464,
      metricsToken: "from-the-environment-0123",
      authFailureBurst: 7,
      authFailuresPerSecond: 0,
      trustProxyHops: 1,
    });
    expect(accessFrom(parse([]), {})).toEqual({});
  });

  it("generates a metrics token in the data directory only when /metrics is on the main port", async () => {
    const dir = await mkdtemp(join(tmpdir(), "darkbloom-access-"));
    try {
      const generated = await metricsTokenFor({}, dir);
      expect(generated.file).toBe(join(dir, "metrics.token"));
      expect((await readFile(generated.file!, "utf8")).trim()).toBe(generated.token);
      expect(await metricsTokenFor({}, dir)).toEqual(generated); // the same one next time
      expect(await metricsTokenFor({ metricsPort: 9464 }, join(dir, "unused"))).toEqual({
        token: undefined,
        file: undefined,
      });
      expect(await metricsTokenFor({ metricsToken: "given-0123456789abcdef" }, dir)).toEqual({
        token: "given-0123456789abcdef",
        file: undefined,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("takes a previous peer token beside the current one, by flag or environment", () => {
    const current = "current-peer-token-0123456789";
    const previous = "previous-peer-token-0123456789";
    expect(accessFrom(parse(["--peer-token", current, "--previous-peer-token", previous]), {})).toEqual({
      peerToken: current,
      previousPeerToken: previous,
    });
    expect(
      accessFrom(parse([]), { DARKBLOOM_PEER_TOKEN: current, DARKBLOOM_PREVIOUS_PEER_TOKEN: previous }),
    ).toEqual({ peerToken: current, previousPeerToken: previous });
    // The flag wins over the environment, as for every other setting.
    expect(
      accessFrom(parse(["--previous-peer-token", previous]), {
        DARKBLOOM_PEER_TOKEN: current,
        DARKBLOOM_PREVIOUS_PEER_TOKEN: "another-previous-token-0123",
      }),
    ).toEqual({ peerToken: current, previousPeerToken: previous });
  });

  it.each([
    [
      ["--previous-peer-token", "previous-peer-token-0123456789"],
      {},
      /--previous-peer-token \(DARKBLOOM_PREVIOUS_PEER_TOKEN\) needs --peer-token/,
      "previous-peer-token-0123456789",
    ],
    [
      [],
      { DARKBLOOM_PREVIOUS_PEER_TOKEN: "previous-peer-token-0123456789" },
      /needs --peer-token/,
      "previous-peer-token-0123456789",
    ],
    [
      ["--peer-token", "the-same-token-0123456789", "--previous-peer-token", "the-same-token-0123456789"],
      {},
      /--previous-peer-token must differ from --peer-token/,
      "the-same-token-0123456789",
    ],
    [
      ["--peer-token", "current-peer-token-0123456789", "--previous-peer-token", "short prev"],
      {},
      /--previous-peer-token is invalid: expected 16 to 256 printable/,
      "short prev",
    ],
    [
      ["--peer-token", "current-peer-token-0123456789"],
      { DARKBLOOM_PREVIOUS_PEER_TOKEN: "bad token with spaces 0123" },
      /environment variable DARKBLOOM_PREVIOUS_PEER_TOKEN is invalid/,
      "bad token with spaces 0123",
    ],
  ])(
    "refuses a bad previous peer token %j (env %j): exit 64, one line, no token",
    async (args, env, message, secret) => {
      const t = testIo({ HOME: "/nonexistent", ...env });
      expect(await runCli(["serve", "--data-dir", "/nonexistent/darkbloom", ...args], t.io)).toBe(64);
      const stderr = t.stderr();
      expect(stderr).toMatch(message);
      expect(stderr.trim().split("\n")).toHaveLength(1);
      expect(stderr).not.toContain(secret);
    },
  );

  it.each([
    [["--metrics-token", "short"], /^.*--metrics-token is invalid: expected 16 to 256 printable/, "short"],
    [["--trust-proxy", "x"], /--trust-proxy.*whole number from 0 to 10/, undefined],
    [["--auth-failure-burst", "0"], /--auth-failure-burst.*whole number from 1/, undefined],
  ])("exits 64 with one line on %j, never echoing a token", async (args, message, secret) => {
    const t = testIo({ HOME: "/nonexistent" });
    expect(await runCli(["serve", "--data-dir", "/nonexistent/darkbloom", ...args], t.io)).toBe(64);
    const stderr = t.stderr();
    expect(stderr).toMatch(message);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    if (secret) expect(stderr).not.toContain(secret);
  });
});
