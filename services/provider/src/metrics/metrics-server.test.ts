import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { ModelFile } from "../engine/engine.js";
import { parsePrometheusText, sampleValue } from "../testing/prometheus-text.js";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import { listenForMetrics, MetricsListenError, type MetricsServer, serveMetrics } from "./metrics-server.js";
import { ProviderMetrics } from "./provider-metrics.js";

const TINY: ModelFile = {
  id: "tiny",
  path: "/nonexistent/tiny.gguf",
  sizeBytes: 1024,
  quantization: "Q8_0",
  sha256: "ab".repeat(32),
  architecture: "qwen3",
  contextLength: 2048,
};

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** Log lines written at warn or above, as parsed JSON. */
function capturingLogger() {
  const lines: { level: number; msg: string; [key: string]: unknown }[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, warnings: () => lines.filter((l) => l.level >= 40) };
}

function setup(engine = new ScriptedEngine({ maxBatch: 3 })) {
  const metrics = new ProviderMetrics({
    engine,
    models: ["tiny"],
    version: "9.9.9",
    logger: pino({ level: "silent" }),
  });
  engine.observe(metrics);
  return { engine, metrics };
}

async function started(server: Promise<MetricsServer>): Promise<MetricsServer> {
  const s = await server;
  closers.push(() => s.close());
  return s;
}

async function scrape(url: string) {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  return parsePrometheusText(await res.text());
}

/** A request with any method (fetch refuses some), answered with its status and Allow header. */
function call(
  url: string,
  method: string,
  path: string,
): Promise<{ status: number; allow: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, allow: res.headers.allow }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("the provider's metrics listener", () => {
  it("serves /metrics with every family, /healthz, and answers 405 and 404 otherwise", async () => {
    const { metrics } = setup();
    const server = await started(serveMetrics({ host: "127.0.0.1", port: 0 }, metrics));
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const families = await scrape(server.url);
    const expected: [string, string][] = [
      ["darkbloom_provider_build_info", "gauge"],
      ["darkbloom_provider_batch_slots_busy", "gauge"],
      ["darkbloom_provider_batch_slots", "gauge"],
      ["darkbloom_provider_queue_depth", "gauge"],
      ["darkbloom_provider_requests_in_flight", "gauge"],
      ["darkbloom_provider_kv_cache_usage_ratio", "gauge"],
      ["darkbloom_provider_kv_cache_tokens", "gauge"],
      ["darkbloom_provider_kv_cache_capacity_tokens", "gauge"],
      ["darkbloom_provider_prefill_tokens_per_second", "gauge"],
      ["darkbloom_provider_decode_tokens_per_second", "gauge"],
      ["darkbloom_provider_coordinator_connected", "gauge"],
      ["darkbloom_provider_model_loaded", "gauge"],
      ["darkbloom_provider_engine_threads", "gauge"],
      ["darkbloom_provider_generated_tokens_total", "counter"],
      ["darkbloom_provider_prompt_tokens_total", "counter"],
      ["darkbloom_provider_prefill_seconds_total", "counter"],
      ["darkbloom_provider_decode_seconds_total", "counter"],
      ["darkbloom_provider_decode_steps_total", "counter"],
      ["darkbloom_provider_coordinator_registrations_total", "counter"],
      ["darkbloom_provider_heartbeats_sent_total", "counter"],
      ["darkbloom_provider_requests_total", "counter"],
      ["darkbloom_provider_model_loads_total", "counter"],
      ["darkbloom_provider_coordinator_disconnects_total", "counter"],
      ["darkbloom_provider_model_load_duration_seconds", "histogram"],
      ["process_cpu_seconds_total", "counter"],
      ["nodejs_heap_size_used_bytes", "gauge"],
    ];
    for (const [name, type] of expected) {
      expect(families.get(name)?.type, name).toBe(type);
      expect(families.get(name)?.help, name).not.toBe("");
    }
    expect(
      sampleValue(families, "darkbloom_provider_build_info", { version: "9.9.9", engine: "scripted" }),
    ).toBe(1);
    // Bounded series exist from the start, at 0.
    expect(
      sampleValue(families, "darkbloom_provider_requests_total", { model: "tiny", outcome: "completed" }),
    ).toBe(0);
    expect(
      sampleValue(families, "darkbloom_provider_model_loads_total", { model: "tiny", result: "failed" }),
    ).toBe(0);
    expect(sampleValue(families, "darkbloom_provider_model_loaded", { model: "tiny" })).toBe(0);
    expect(sampleValue(families, "darkbloom_provider_engine_threads", { model: "tiny" })).toBe(0);
    expect(sampleValue(families, "darkbloom_provider_coordinator_connected")).toBe(0);

    const health = await fetch(`${server.url}/healthz`);
    expect([health.status, await health.text()]).toEqual([200, "ok\n"]);
    expect((await fetch(`${server.url}/metrics?x=1`)).status).toBe(200);
    expect(await call(server.url, "HEAD", "/metrics")).toEqual({ status: 200, allow: undefined });
    expect(await call(server.url, "POST", "/metrics")).toEqual({ status: 405, allow: "GET, HEAD" });
    expect(await call(server.url, "DELETE", "/healthz")).toEqual({ status: 405, allow: "GET, HEAD" });
    expect(await call(server.url, "GET", "/")).toEqual({ status: 404, allow: undefined });
    expect(await call(server.url, "GET", "/metrics/x")).toEqual({ status: 404, allow: undefined });

    await server.close();
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
  });

  it("counts model loads, generated tokens and outcomes, and bounds the model label", async () => {
    const { engine, metrics } = setup(
      new ScriptedEngine({ maxBatch: 3, tokensPerGeneration: 7, failLoad: ["broken"] }),
    );
    // What the llama engine's "auto" chose for the model (the scripted engine has no threads).
    Object.assign(engine, { threadsFor: (id: string) => (id === "tiny" ? 3 : undefined) });
    const server = await started(serveMetrics({ host: "127.0.0.1", port: 0 }, metrics));
    await engine.load(TINY);
    await engine.load(TINY); // already loaded: no load
    await expect(engine.load({ ...TINY, id: "broken" })).rejects.toThrow();
    const generation = engine.generate(
      {
        id: "r/0",
        model: "tiny",
        input: { kind: "text", prompt: "one two three" },
        sampling: { temperature: 0, topP: 1, topK: 0, stop: [], maxTokens: 100 },
      },
      () => {},
    );
    await generation.done;
    metrics.requestFinished("tiny", "completed");
    metrics.requestFinished("made-up-by-the-sender", "refused");
    metrics.linkDisconnected("error");

    const families = await scrape(server.url);
    const value = (name: string, labels: Record<string, string> = {}) => sampleValue(families, name, labels);
    expect(value("darkbloom_provider_model_loads_total", { model: "tiny", result: "loaded" })).toBe(1);
    expect(value("darkbloom_provider_model_loads_total", { model: "other", result: "failed" })).toBe(1);
    expect(value("darkbloom_provider_model_load_duration_seconds_count", { model: "tiny" })).toBe(1);
    expect(
      value("darkbloom_provider_model_load_duration_seconds_bucket", { model: "tiny", le: "+Inf" }),
    ).toBe(1);
    expect(value("darkbloom_provider_model_loaded", { model: "tiny" })).toBe(1);
    expect(value("darkbloom_provider_engine_threads", { model: "tiny" })).toBe(3);
    expect(value("darkbloom_provider_generated_tokens_total")).toBe(7);
    expect(value("darkbloom_provider_prompt_tokens_total")).toBe(3);
    expect(value("darkbloom_provider_batch_slots")).toBe(3);
    expect(value("darkbloom_provider_requests_total", { model: "tiny", outcome: "completed" })).toBe(1);
    expect(value("darkbloom_provider_requests_total", { model: "other", outcome: "refused" })).toBe(1);
    expect(value("darkbloom_provider_coordinator_disconnects_total", { reason: "error" })).toBe(1);
    // Nothing a sender wrote became a label value.
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).not.toContain("made-up-by-the-sender");
    expect(text).not.toContain("broken");
    // A counter mirrored from the engine's total does not count the same tokens twice.
    expect(sampleValue(await scrape(server.url), "darkbloom_provider_generated_tokens_total")).toBe(7);
  });

  it("a taken address: required fails with MetricsListenError, the default warns and serves on without", async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    closers.push(() => new Promise((resolve) => blocker.close(() => resolve())));
    const port = (blocker.address() as AddressInfo).port;
    const { metrics } = setup();
    const listen = { host: "127.0.0.1", port };

    const error = await serveMetrics(listen, metrics).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MetricsListenError);
    expect((error as MetricsListenError).code).toBe("EADDRINUSE");
    expect((error as Error).message).toBe(
      `cannot serve metrics on 127.0.0.1:${port}: the address is in use (another daemon on this machine?)`,
    );

    const strict = capturingLogger();
    await expect(listenForMetrics(metrics, { listen, required: true }, strict.logger)).rejects.toThrow(
      MetricsListenError,
    );
    const lenient = capturingLogger();
    expect(await listenForMetrics(metrics, { listen, required: false }, lenient.logger)).toBeUndefined();
    expect(lenient.warnings().map((l) => l.msg)).toEqual([
      `cannot serve metrics on 127.0.0.1:${port}: the address is in use (another daemon on this machine?); ` +
        "serving without metrics (set --metrics-listen to another address, or off)",
    ]);
  });

  it("warns when the listener is reachable from other machines, not on loopback", async () => {
    const { metrics } = setup();
    const loopback = capturingLogger();
    const local = await listenForMetrics(
      metrics,
      { listen: { host: "127.0.0.1", port: 0 }, required: true },
      loopback.logger,
    );
    if (local) closers.push(() => local.close());
    expect(loopback.warnings()).toEqual([]);
    const open = capturingLogger();
    const exposed = await listenForMetrics(
      metrics,
      { listen: { host: "0.0.0.0", port: 0 }, required: true },
      open.logger,
    );
    if (exposed) closers.push(() => exposed.close());
    expect(exposed?.url).toMatch(/^http:\/\/0\.0\.0\.0:\d+$/);
    expect(open.warnings().map((l) => l.msg)).toEqual([
      "metrics listener on a non-loopback address: whoever reaches it sees which models this provider serves and how busy it is",
    ]);
  });
});
