// Drill 2: many simultaneous streamed chat completions (SSE) through one coordinator process to
// scripted providers that pace their tokens, so that every stream is open at the same time. Checks
// that each completes with the right tokens and exactly one [DONE], and measures time to first token,
// the gaps between tokens against the scripted pacing, wall time, and the coordinator's CPU and memory.
import http from "node:http";
import { CoordinatorProcess } from "./coordinator-link.js";
import {
  type Check,
  check,
  cpuPercent,
  cpuPressureMicros,
  mib,
  round,
  type Spread,
  spread,
} from "./figures.js";
import { expectedText, type StreamResult, streamChat } from "./sse-client.js";
import { SwarmProcess } from "./swarm-link.js";

const MODEL = "scale-stream";

export interface StreamDrillOptions {
  databaseUrl: string;
  /** Streams opened at once. */
  streams: number;
  /** Tokens per stream, and the provider's pacing between them. */
  tokens: number;
  interTokenDelayMs: number;
  firstTokenDelayMs: number;
  /** Providers serving the model, and each one's batch (together enough for every stream). */
  providers: number;
  maxBatch: number;
  heartbeatIntervalMs: number;
  /** A stream not finished after this long counts as hung. */
  timeoutMs: number;
  billing: boolean;
  cpuProfileDir?: string | undefined;
  log?: (line: string) => void;
}

/** Defaults for `streams` streams: one provider per 100 streams, 128 slots each (25% headroom). */
export function streamDrillDefaults(streams: number): Omit<StreamDrillOptions, "databaseUrl"> {
  return {
    streams,
    tokens: 20,
    interTokenDelayMs: 50,
    firstTokenDelayMs: 0,
    providers: Math.max(1, Math.ceil(streams / 100)),
    maxBatch: 128,
    heartbeatIntervalMs: 5_000,
    timeoutMs: 60_000,
    billing: false,
  };
}

export interface StreamDrillResult {
  streams: number;
  tokens: number;
  interTokenDelayMs: number;
  providers: number;
  slots: number;
  completed: number;
  /** Transport errors, non-200 answers, error events, wrong text or [DONE] count (hung excluded). */
  errors: number;
  hung: number;
  firstError: string | undefined;
  /** Whether the first stream to finish finished after the last request was sent: all open at once. */
  allOpenAtOnce: boolean;
  /** Most streams open (request sent, [DONE] not yet) at one time. */
  peakOpen: number;
  /** Most streams between their first token and [DONE] at one time. */
  peakStreaming: number;
  ttftMs: Spread;
  /** Gaps between consecutive tokens of a stream, as the consumer saw them, ms. */
  interTokenGapMs: Spread;
  interTokenGapMeanMs: number;
  /** The coordinator's X-Timing queue phase (waiting for a provider slot), µs. */
  queueMicros: Spread;
  /** Every X-Timing phase (µs; sent with the first token, so `total` is the coordinator's TTFT). */
  timingMicros: Record<string, Spread>;
  wallMs: number;
  /** The least possible wall time: first-token delay plus (tokens − 1) × pacing. */
  scriptedMs: number;
  coordinator: {
    cpuPercent: number;
    cpuMicrosPerStream: number;
    cpuMicrosPerToken: number;
    rssPeakMiB: number;
    heapUsedPeakMiB: number;
    rssBeforeMiB: number;
    eventLoopDelayP99Ms: number;
    eventLoopDelayMaxMs: number;
  };
  swarmCpuPercent: number;
  /** This process's CPU (the 1,000 consumers reading SSE), % of one core over the wall time. */
  consumerCpuPercent: number;
  /** Share of the wall time some task waited for a CPU (Linux PSI), %. */
  cpuPressurePercent: number;
  warnings: string[];
  checks: Check[];
  passed: boolean;
}

export async function runStreamDrill(o: StreamDrillOptions): Promise<StreamDrillResult> {
  const log = o.log ?? (() => undefined);
  const coordinator = await CoordinatorProcess.start({
    databaseUrl: o.databaseUrl,
    heartbeatIntervalMs: o.heartbeatIntervalMs,
    billing: o.billing,
    cpuProfileDir: o.cpuProfileDir,
  });
  let swarm: SwarmProcess | undefined;
  // Enough sockets for every stream, all kept between the warm-up and the measured burst.
  const agent = new http.Agent({
    keepAlive: true,
    maxSockets: Number.POSITIVE_INFINITY,
    maxFreeSockets: o.streams,
  });
  try {
    swarm = await SwarmProcess.start();
    const registered = await swarm.register({
      baseUrl: coordinator.url,
      groups: [{ prefix: "scale-stream", count: o.providers, models: [MODEL], maxBatch: o.maxBatch }],
      script: {
        tokens: o.tokens,
        firstTokenDelayMs: o.firstTokenDelayMs,
        interTokenDelayMs: o.interTokenDelayMs,
      },
      streamsPerConnection: 1, // one connection per provider, as separate daemons have
      registerConcurrency: o.providers,
    });
    if (registered.failed > 0) throw new Error(`providers failed to register: ${registered.firstError}`);
    log(`coordinator pid ${coordinator.pid}, ${o.providers} providers × ${o.maxBatch} slots`);

    // Warm-up: as many one-token streams at once, which opens the keep-alive connections the measured
    // burst reuses (so it measures streams, not a storm of TCP handshakes) and warms the JIT.
    const stream = (maxTokens: number) =>
      streamChat({
        agent,
        url: coordinator.url,
        apiKey: coordinator.apiKey,
        model: MODEL,
        maxTokens,
        timeoutMs: o.timeoutMs,
      });
    const warm = await Promise.all(Array.from({ length: o.streams }, () => stream(1)));
    const warmErrors = warm.filter((r) => r.error !== undefined).length;
    log(`warm-up: ${o.streams - warmErrors}/${o.streams} ok`);

    await coordinator.reset();
    const before = await coordinator.stats();
    const swarmBefore = await swarm.stats();
    const pressureStart = cpuPressureMicros();
    const consumerBefore = process.cpuUsage();
    const t0 = performance.now();
    const starts: number[] = [];
    const results = await Promise.all(
      Array.from({ length: o.streams }, () => {
        starts.push(performance.now() - t0);
        return stream(o.tokens);
      }),
    );
    const wallMs = performance.now() - t0;
    const consumerCpu = process.cpuUsage(consumerBefore);
    const pressure = cpuPressureMicros() - pressureStart;
    const after = await coordinator.stats();
    const swarmAfter = await swarm.stats();
    log(`burst of ${o.streams} streams done in ${round(wallMs / 1000)} s`);

    const expected = expectedText(o.tokens);
    const hung = results.filter((r) => r.error?.startsWith("hung")).length;
    const failures = results
      .map((r) => failure(r, expected, o.tokens))
      .filter((f): f is string => f !== undefined && !f.startsWith("hung"));
    const completed = results.length - hung - failures.length;
    const gaps: number[] = [];
    for (const r of results) {
      for (let i = 1; i < r.tokenTimesMs.length; i++) {
        gaps.push((r.tokenTimesMs[i] as number) - (r.tokenTimesMs[i - 1] as number));
      }
    }
    // Absolute times since t0 of each stream's first token and end.
    const firstTokens = results.map((r, i) => (starts[i] as number) + r.ttftMs);
    const ends = results.map((r, i) => (starts[i] as number) + r.totalMs);
    const allOpenAtOnce = Math.min(...ends) > Math.max(...starts);
    const scriptedMs = o.firstTokenDelayMs + (o.tokens - 1) * o.interTokenDelayMs;
    const maxListeners = after.warnings.filter((w) => w.startsWith("MaxListenersExceeded"));
    const checks: Check[] = [
      check(
        "every stream complete: all tokens, in order, one [DONE] last",
        completed === o.streams,
        `${completed}/${o.streams}${failures[0] ? `; first failure: ${failures[0]}` : ""}`,
      ),
      check("no errors", failures.length === 0, `${failures.length} errors`),
      check("no hung stream", hung === 0, `${hung} not finished after ${o.timeoutMs} ms`),
      check(
        "all streams open at once",
        allOpenAtOnce,
        allOpenAtOnce
          ? "the first stream to end ended after the last request was sent"
          : "some stream ended before the last request was sent",
      ),
      check(
        "no MaxListenersExceededWarning in the coordinator",
        maxListeners.length === 0,
        maxListeners[0] ?? "none",
      ),
    ];
    return {
      streams: o.streams,
      tokens: o.tokens,
      interTokenDelayMs: o.interTokenDelayMs,
      providers: o.providers,
      slots: o.providers * o.maxBatch,
      completed,
      errors: failures.length,
      hung,
      firstError: failures[0],
      allOpenAtOnce,
      peakOpen: peakOverlap(starts, ends),
      peakStreaming: peakOverlap(firstTokens, ends),
      ttftMs: spread(results.map((r) => r.ttftMs).filter((v) => !Number.isNaN(v))),
      interTokenGapMs: spread(gaps),
      interTokenGapMeanMs: round(gaps.reduce((a, b) => a + b, 0) / Math.max(1, gaps.length)),
      queueMicros: spread(
        results.flatMap((r) => (r.timing?.queue === undefined ? [] : [r.timing.queue])),
        0,
      ),
      timingMicros: timingSpreads(results),
      wallMs: round(wallMs, 0),
      scriptedMs,
      coordinator: {
        cpuPercent: cpuPercent(after.cpuMicros - before.cpuMicros, after.atMs - before.atMs),
        cpuMicrosPerStream: round((after.cpuMicros - before.cpuMicros) / o.streams, 0),
        cpuMicrosPerToken: round((after.cpuMicros - before.cpuMicros) / (o.streams * o.tokens), 1),
        rssPeakMiB: mib(after.rssPeakBytes),
        heapUsedPeakMiB: mib(after.heapUsedPeakBytes),
        rssBeforeMiB: mib(before.rssBytes),
        eventLoopDelayP99Ms: round(after.eventLoopDelayP99Ms),
        eventLoopDelayMaxMs: round(after.eventLoopDelayMaxMs),
      },
      swarmCpuPercent: cpuPercent(swarmAfter.cpuMicros - swarmBefore.cpuMicros, wallMs),
      consumerCpuPercent: cpuPercent(consumerCpu.user + consumerCpu.system, wallMs),
      cpuPressurePercent: cpuPercent(pressure, wallMs),
      warnings: after.warnings,
      checks,
      passed: checks.every((c) => c.ok),
    };
  } finally {
    agent.destroy();
    await swarm?.stop().catch(() => swarm?.kill());
    await coordinator.stop().catch(() => coordinator.kill());
  }
}

/** What is wrong with a stream, if anything. */
function failure(r: StreamResult, expected: string, tokens: number): string | undefined {
  if (r.error !== undefined) return r.error;
  if (r.errorEvent !== undefined) return `error event: ${r.errorEvent}`;
  if (r.doneEvents !== 1 || !r.doneLast) return `${r.doneEvents} [DONE] events (last: ${r.doneLast})`;
  if (r.tokenTimesMs.length !== tokens || r.text !== expected) {
    return `${r.tokenTimesMs.length} tokens "${r.text.slice(0, 40)}…", expected ${tokens}`;
  }
  return undefined;
}

/** p50 / p99 / max of each X-Timing phase over the streams that carried the header. */
function timingSpreads(results: StreamResult[]): Record<string, Spread> {
  const phases = new Map<string, number[]>();
  for (const r of results) {
    for (const [phase, micros] of Object.entries(r.timing ?? {})) {
      const list = phases.get(phase) ?? [];
      list.push(micros);
      phases.set(phase, list);
    }
  }
  return Object.fromEntries([...phases].map(([phase, values]) => [phase, spread(values, 0)]));
}

/** The most intervals [start, end] overlapping at one instant. */
function peakOverlap(starts: number[], ends: number[]): number {
  const events: Array<[number, number]> = [];
  for (let i = 0; i < starts.length; i++) {
    const s = starts[i] as number;
    const e = ends[i] as number;
    if (Number.isNaN(s) || Number.isNaN(e)) continue;
    events.push([s, 1], [e, -1]);
  }
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let peak = 0;
  for (const [, delta] of events) {
    open += delta;
    peak = Math.max(peak, open);
  }
  return peak;
}
