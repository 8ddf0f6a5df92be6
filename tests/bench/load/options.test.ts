import { describe, expect, it } from "vitest";
import { parseOptions, UsageError } from "./options.js";

function usage(argv: string[]): string {
  try {
    parseOptions(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error(`no UsageError for ${argv.join(" ")}`);
}

describe("bench:load options", () => {
  it("has the documented defaults: own network, 1 provider, tiny, 8 clients, 100 streamed requests", () => {
    expect(parseOptions([])).toMatchObject({
      help: false,
      baseUrl: undefined,
      apiKeys: [],
      users: 1,
      providers: 1,
      model: "tiny",
      concurrency: 8,
      total: 100,
      durationMs: undefined,
      stream: true,
      promptTokens: 32,
      maxTokens: 16,
      warmup: 0,
      timeoutMs: 120_000,
      json: false,
      defaultAsserts: false,
      assertions: [],
    });
  });

  it("reads every flag", () => {
    const o = parseOptions([
      "--base-url",
      "http://127.0.0.1:8080/v1",
      "--api-key",
      "k1,k2",
      "--api-key",
      "k3",
      "--concurrency",
      "4",
      "--total",
      "200",
      "--duration",
      "1.5m",
      "--no-stream",
      "--prompt-tokens",
      "256",
      "--max-tokens",
      "64",
      "--model",
      "qwen3-0.6b",
      "--warmup",
      "10",
      "--timeout",
      "30",
      "--json",
      "--assert",
      "parse.p95<=2ms",
      "--assert",
      "errors<=0",
    ]);
    expect(o).toMatchObject({
      baseUrl: "http://127.0.0.1:8080/v1",
      apiKeys: ["k1", "k2", "k3"],
      users: 3,
      concurrency: 4,
      total: 200,
      durationMs: 90_000,
      stream: false,
      promptTokens: 256,
      maxTokens: 64,
      model: "qwen3-0.6b",
      warmup: 10,
      timeoutMs: 30_000,
      json: true,
    });
    expect(o.assertions.map((a) => a.text)).toEqual(["parse.p95<=2ms", "errors<=0"]);
  });

  it("lets the last of --stream and --no-stream win", () => {
    expect(parseOptions(["--no-stream", "--stream"]).stream).toBe(true);
    expect(parseOptions(["--stream", "--no-stream"]).stream).toBe(false);
  });

  it("measures for --duration alone, or stops at the first of --duration and --total", () => {
    expect(parseOptions(["--duration", "30s"])).toMatchObject({ total: undefined, durationMs: 30_000 });
    expect(parseOptions(["--duration", "500ms", "--total", "7"])).toMatchObject({
      total: 7,
      durationMs: 500,
    });
  });

  it("puts --default-asserts first, then the --assert expressions", () => {
    const o = parseOptions(["--default-asserts", "--assert", "total_e2e.p99<=2s"]);
    expect(o.assertions.map((a) => a.text)).toEqual([
      "parse.mean<=0.5ms",
      "parse.p95<=2ms",
      "reserve.mean<=10ms",
      "reserve.p95<=50ms",
      "encrypt.mean<=1ms",
      "encrypt.p95<=10ms",
      "dispatch.mean<=4ms",
      "dispatch.p95<=20ms",
      "errors<=0",
      "total_e2e.p99<=2s",
    ]);
  });

  it("creates --users accounts with --admin-key", () => {
    expect(parseOptions(["--base-url", "http://h:1", "--admin-key", "adm", "--users", "5"])).toMatchObject({
      adminKey: "adm",
      apiKeys: [],
      users: 5,
    });
  });

  it("refuses bad values with one line naming the flag and its range (exit 64)", () => {
    expect(usage(["--concurrency", "0"])).toBe(
      '--concurrency must be a whole number from 1 to 100000, got "0"',
    );
    expect(usage(["--concurrency", "2.5"])).toMatch(/^--concurrency must be a whole number from 1 to 100000/);
    expect(usage(["--total=-3"])).toMatch(/^--total must be a whole number from 1 to 100000000/);
    expect(usage(["--users", "abc"])).toMatch(/^--users must be a whole number from 1 to 10000/);
    expect(usage(["--providers", "17"])).toMatch(/^--providers must be a whole number from 1 to 16/);
    expect(usage(["--warmup", "x"])).toMatch(/^--warmup must be a whole number from 0 to/);
    expect(usage(["--max-tokens", "0"])).toMatch(/^--max-tokens must be a whole number from 1/);
    expect(usage(["--prompt-tokens", ""])).toMatch(/^--prompt-tokens must be a whole number from 1/);
    expect(usage(["--duration", "soon"])).toMatch(/^--duration must be a duration/);
    expect(usage(["--timeout", "0s"])).toMatch(/^--timeout must be a duration/);
    expect(usage(["--model", "a b"])).toMatch(/^--model must be a model id/);
  });

  it("refuses unknown flags, positionals and flags that need a value", () => {
    expect(usage(["--speed", "9"])).toBe("Unknown option '--speed'");
    expect(usage(["now"])).toBe('unexpected argument "now"');
    expect(usage(["--total"])).toMatch(/--total/);
  });

  it("refuses inconsistent targets", () => {
    expect(usage(["--base-url", "ftp://h"])).toMatch(/^--base-url must be an http:\/\/ or https:\/\/ URL/);
    expect(usage(["--base-url", "http://h:1"])).toBe(
      "--base-url needs --api-key KEY (repeatable) or --admin-key KEY",
    );
    expect(usage(["--api-key", "k"])).toMatch(/^--api-key and --admin-key need --base-url/);
    expect(usage(["--base-url", "http://h:1", "--api-key", "k", "--admin-key", "a"])).toMatch(/not both/);
    expect(usage(["--base-url", "http://h:1", "--api-key", "k", "--providers", "2"])).toMatch(
      /^--providers applies only/,
    );
    expect(usage(["--base-url", "http://h:1", "--api-key", "a,b", "--users", "3"])).toBe(
      "--users 3 needs --admin-key to create the accounts, or 3 --api-key values (got 2)",
    );
    expect(usage(["--base-url", "http://h:1", "--api-key", "a,,b"])).toBe("--api-key must not be empty");
    expect(usage(["--base-url", "http://h:1", "--api-key", "a b"])).toMatch(
      /^--api-key must be printable ASCII/,
    );
    expect(usage(["--base-url", "http://h:1", "--admin-key", ""])).toMatch(/^--admin-key must be printable/);
  });

  it("reports a bad --assert as a usage error", () => {
    expect(usage(["--assert", "parse.p95<=2"])).toMatch(/^--assert: .*must be a duration with a unit/);
    expect(usage(["--assert", "latency<=2ms"])).toMatch(/^--assert: unknown figure "latency"/);
  });
});
