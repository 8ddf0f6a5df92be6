import { testIo } from "@darkbloom/cli-kit/testing";
import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../config.js";
import { runCli } from "./program.js";
import { addTuningOptions, tuningFrom } from "./serve-tuning.js";

function parse(args: string[]): Record<string, unknown> {
  const command = addTuningOptions(new Command("serve").exitOverride());
  command.parse(args, { from: "user" });
  return command.opts();
}

describe("serve's serving limits", () => {
  it("takes flags over environment variables, with units on durations", () => {
    const opts = parse([
      "--inter-token-timeout",
      "1500ms",
      "--heartbeat-interval",
      "2s",
      "--rate-limit",
      "0",
    ]);
    expect(
      tuningFrom(opts, {
        DARKBLOOM_HEARTBEAT_INTERVAL: "9s",
        DARKBLOOM_QUEUE_TIMEOUT: "1m",
        DARKBLOOM_MAX_RETRIES: "0",
      }),
    ).toEqual({
      interTokenTimeoutMs: 1_500,
      heartbeatIntervalMs: 2_000,
      rateLimitPerSecond: 0,
      queueTimeoutMs: 60_000,
      maxRetries: 0,
    });
    expect(tuningFrom(parse([]), {})).toEqual({});
  });

  it("takes the shutdown drain as a flag or a variable, and refuses a bad schema mode", async () => {
    expect(tuningFrom(parse(["--drain-timeout", "45s"]), {})).toEqual({ drainTimeoutMs: 45_000 });
    expect(tuningFrom(parse([]), { DARKBLOOM_DRAIN_TIMEOUT: "2m" })).toEqual({ drainTimeoutMs: 120_000 });
    expect(resolveConfig({ dataDir: "/x", adminKey: "k" })).toMatchObject({
      drainTimeoutMs: 10_000,
      schema: "migrate",
    });
    const t = testIo();
    expect(await runCli(["serve", "--schema", "sometimes"], t.io)).toBe(64);
    expect(t.stderr()).toContain("expected one of migrate, check");
  });

  it("takes the provider directory's periods as flags or variables", () => {
    expect(tuningFrom(parse(["--directory-flush", "250ms"]), { DARKBLOOM_DIRECTORY_POLL: "2s" })).toEqual({
      directoryFlushMs: 250,
      directoryPollMs: 2_000,
    });
  });

  it("re-reads the provider directory at least twice per staleness period unless told otherwise", () => {
    const base = { dataDir: "/d", adminKey: "k" };
    expect(resolveConfig(base).directoryPollMs).toBe(5_000);
    expect(resolveConfig({ ...base, instanceStaleMs: 2_000 }).directoryPollMs).toBe(1_000);
    expect(resolveConfig({ ...base, instanceStaleMs: 2_000, directoryPollMs: 1_500 }).directoryPollMs).toBe(
      1_500,
    );
  });

  it.each([
    [["--inter-token-timeout", "5"], /--inter-token-timeout.*expected a duration such as 500ms/],
    [["--queue-depth", "-1"], /--queue-depth.*whole number from 0/],
    [["--rate-limit-burst", "0"], /--rate-limit-burst.*whole number from 1/],
    [["--instance-stale", "3s"], /--instance-heartbeat must be shorter than --instance-stale/],
    [["--directory-poll", "30s"], /--directory-poll must be shorter than --instance-stale/],
    [["--advertise-url", "ftp://10.0.0.1"], /--advertise-url.*expected an http:\/\/ or https:\/\/ URL/],
  ])("exits 64 with one line on %j", async (args, message) => {
    const t = testIo({ HOME: "/nonexistent" });
    expect(await runCli(["serve", "--data-dir", "/nonexistent/darkbloom", ...args], t.io)).toBe(64);
    const stderr = t.stderr();
    expect(stderr).toMatch(message);
    expect(stderr.trim().split("\n")).toHaveLength(1);
  });

  it("takes the connection and response limits, with units on durations and sizes", () => {
    const opts = parse([
      "--header-timeout",
      "500ms",
      "--max-connections-per-address",
      "0",
      "--max-response-buffer",
      "512KiB",
      "--max-response-bytes",
      "1048576",
    ]);
    expect(
      tuningFrom(opts, {
        DARKBLOOM_BODY_TIMEOUT: "2m",
        DARKBLOOM_IDLE_TIMEOUT: "30s",
        DARKBLOOM_SEND_TIMEOUT: "45s",
        DARKBLOOM_MAX_CONNECTIONS: "5000",
        DARKBLOOM_MAX_STREAMS_PER_CONNECTION: "100",
        DARKBLOOM_MAX_RESPONSE_BUFFER: "2MiB",
      }),
    ).toEqual({
      headerTimeoutMs: 500,
      bodyTimeoutMs: 120_000,
      idleTimeoutMs: 30_000,
      sendTimeoutMs: 45_000,
      maxConnections: 5_000,
      maxConnectionsPerAddress: 0,
      maxStreamsPerConnection: 100,
      maxResponseBufferBytes: 512 * 1024,
      maxResponseBytes: 1024 * 1024,
    });
  });

  it.each([
    [["--header-timeout", "20"], /--header-timeout.*expected a duration such as 500ms/],
    [["--max-connections", "0"], /--max-connections.*whole number from 1/],
    [["--max-streams-per-connection", "-4"], /--max-streams-per-connection.*whole number from 1/],
    [["--max-response-buffer", "1MB"], /--max-response-buffer.*expected a size from 1 byte/],
    [["--max-response-bytes", "0"], /--max-response-bytes.*expected a size from 1 byte/],
  ])("exits 64 with one line on a bad limit %j", async (args, message) => {
    const t = testIo({ HOME: "/nonexistent" });
    expect(await runCli(["serve", "--data-dir", "/nonexistent/darkbloom", ...args], t.io)).toBe(64);
    const stderr = t.stderr();
    expect(stderr).toMatch(message);
    expect(stderr.trim().split("\n")).toHaveLength(1);
  });

  it("rejects an invalid environment value without echoing it", () => {
    expect(() => tuningFrom({}, { DARKBLOOM_FIRST_TOKEN_TIMEOUT: "soon" })).toThrow(
      /environment variable DARKBLOOM_FIRST_TOKEN_TIMEOUT is invalid: expected a duration/,
    );
  });
});
