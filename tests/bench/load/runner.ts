// The closed loop: `concurrency` clients on keep-alive connections, each sending its next request
// when the previous one ended, first the warm-up requests, then the measured ones.
import http from "node:http";
import https from "node:https";
import { normalizeBaseUrl } from "./network.js";
import { measureCpuPressure } from "./pressure.js";
import { type RequestSample, type RequestTarget, sendRequest } from "./request.js";
import { type RunSummary, summarizeRun } from "./stats.js";
import { Workload } from "./workload.js";

export interface LoadRunOptions {
  /** The coordinator, with or without /v1. */
  baseUrl: string;
  /** One per user; requests rotate over them. */
  apiKeys: readonly string[];
  model: string;
  concurrency: number;
  /** Requests to measure (undefined: until durationMs). */
  total: number | undefined;
  /** Stop starting requests after this long (undefined: until total). */
  durationMs: number | undefined;
  stream: boolean;
  promptTokens: number;
  maxTokens: number;
  warmup: number;
  timeoutMs: number;
  /** Aborting stops the run: requests in flight are cut and left out. */
  signal?: AbortSignal;
  /** Called every `progressIntervalMs` and once at the end of each phase. */
  onProgress?: (progress: Progress) => void;
  progressIntervalMs?: number;
}

export interface Progress {
  phase: "warmup" | "measure";
  done: number;
  errors: number;
  inFlight: number;
  elapsedMs: number;
  /** Requests the phase will send, when known. */
  total: number | undefined;
}

export interface LoadRunResult {
  /** Measured requests, in completion order. */
  samples: RequestSample[];
  warmupRequests: number;
  /** The run was aborted before its end. */
  interrupted: boolean;
  /** Share of the measured phase some task on this machine waited for a CPU (Linux PSI), if known. */
  cpuPressure: number | undefined;
  summary: RunSummary;
}

/** Runs the load and summarizes it. Never rejects for a failed request: those are counted. */
export async function runLoadTest(o: LoadRunOptions): Promise<LoadRunResult> {
  if (o.total === undefined && o.durationMs === undefined) throw new Error("give total, durationMs or both");
  const url = new URL(`${normalizeBaseUrl(o.baseUrl)}/v1/chat/completions`);
  const agentOptions = { keepAlive: true, maxSockets: o.concurrency, maxFreeSockets: o.concurrency };
  const agent = url.protocol === "https:" ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
  const target: RequestTarget = { url, agent, timeoutMs: o.timeoutMs };
  const workload = new Workload({
    model: o.model,
    stream: o.stream,
    promptTokens: o.promptTokens,
    maxTokens: o.maxTokens,
    apiKeys: o.apiKeys,
  });
  const signal = o.signal;
  const samples: RequestSample[] = [];

  const phase = async (
    name: Progress["phase"],
    count: number | undefined,
    durationMs: number | undefined,
  ) => {
    const startedAt = performance.now();
    const deadline = durationMs === undefined ? undefined : startedAt + durationMs;
    let started = 0;
    let done = 0;
    let errors = 0;
    let inFlight = 0;
    const report = () =>
      o.onProgress?.({
        phase: name,
        done,
        errors,
        inFlight,
        elapsedMs: performance.now() - startedAt,
        total: count,
      });
    const ticker = o.onProgress ? setInterval(report, o.progressIntervalMs ?? 250) : undefined;
    ticker?.unref();
    const client = async () => {
      while (!signal?.aborted) {
        if (count !== undefined && started >= count) return;
        if (deadline !== undefined && performance.now() >= deadline) return;
        started++;
        const planned = workload.plan();
        inFlight++;
        const sample = await sendRequest(
          target,
          planned.body,
          planned.apiKey,
          planned.user,
          o.stream,
          signal,
        );
        inFlight--;
        if (signal?.aborted) return; // cut short by the abort: not a measurement
        done++;
        if (sample.error) errors++;
        if (name === "measure") samples.push(sample);
      }
    };
    const clients = Math.min(o.concurrency, count ?? o.concurrency);
    await Promise.all(Array.from({ length: clients }, client));
    clearInterval(ticker);
    report();
    return (performance.now() - startedAt) * 1000;
  };

  try {
    if (o.warmup > 0) await phase("warmup", o.warmup, undefined);
    const pressure = measureCpuPressure();
    const durationUs = signal?.aborted ? 0 : await phase("measure", o.total, o.durationMs);
    const cpuPressure = pressure();
    return {
      samples,
      warmupRequests: Math.min(o.warmup, workload.planned),
      interrupted: signal?.aborted === true,
      cpuPressure,
      summary: summarizeRun(samples, durationUs, o.apiKeys.length),
    };
  } finally {
    agent.destroy();
  }
}
