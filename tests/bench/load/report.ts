// The report of a run: aligned tables for people, one JSON object (microseconds) for machines.
import { cpus } from "node:os";
import type { AssertionResult } from "./assertions.js";
import { type RunSummary, SEGMENT_DEFINITIONS, SEGMENTS, type Summary } from "./stats.js";
import { formatMicros, significant } from "./units.js";

export interface Scenario {
  /** Where the load went: "own network at …" or the URL. */
  target: string;
  /** Provider daemons started; undefined for an existing network (the report counts those seen). */
  providers: number | undefined;
  users: number;
  concurrency: number;
  /** Requests asked for (undefined with --duration alone). */
  total: number | undefined;
  durationMs: number | undefined;
  stream: boolean;
  model: string;
  promptTokens: number;
  maxTokens: number;
  warmup: number;
  timeoutMs: number;
}

export interface Report {
  scenario: Scenario;
  summary: RunSummary;
  interrupted: boolean;
  /** Share of the measured time some task waited for a CPU (Linux PSI); undefined where unknown. */
  cpuPressure: number | undefined;
  assertions: AssertionResult[];
}

/** "2 × Intel(R) Xeon(R) …, Node v20.20.2". */
export function machineLine(): string {
  const list = cpus();
  return `${list.length} × ${list[0]?.model.trim() ?? "cpu"}, Node ${process.version}`;
}

export function assertionsPassed(results: readonly AssertionResult[]): boolean {
  return results.every((r) => r.pass);
}

function providerCount(report: Report): string {
  const s = report.scenario;
  if (s.providers !== undefined) return `${s.providers} providers`;
  return `${Object.keys(report.summary.providers).length} providers (seen)`;
}

/** The original benchmark's scenario line, with the rest of the workload after it. */
export function scenarioLine(report: Report): string {
  const s = report.scenario;
  const parts = [
    providerCount(report),
    `${s.users} users`,
    `${report.summary.totalRequests} requests`,
    `concurrency=${s.concurrency}`,
    `streaming=${s.stream}`,
    `model=${s.model}`,
    `prompt=${s.promptTokens} words`,
    `max_tokens=${s.maxTokens}`,
    `warmup=${s.warmup}`,
  ];
  if (s.durationMs !== undefined) parts.push(`duration=${formatMicros(s.durationMs * 1000)}`);
  return parts.join(", ");
}

type Align = "left" | "right";

/** Columns padded to their widest cell, a dashed rule under the header. */
export function table(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  align: readonly Align[],
) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (align[i] === "right" ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function grouped(n: number): string {
  return n.toLocaleString("en-US");
}

/** The human-readable report. */
export function renderText(report: Report): string {
  const { summary: r, scenario: s } = report;
  const out: string[] = [];
  out.push(`Darkbloom load test${report.interrupted ? " (INTERRUPTED: partial figures)" : ""}`);
  out.push(`target: ${s.target}`);
  const pressure =
    report.cpuPressure === undefined
      ? ""
      : `; CPU pressure while measuring ${significant(report.cpuPressure * 100)}% (PSI: time some task waited for a CPU)`;
  out.push(`machine: ${machineLine()}${pressure}`);
  out.push(scenarioLine(report));
  out.push("");
  const perRequest = r.success > 0 ? ` (${significant(r.completionTokens / r.success)} per request)` : "";
  out.push(
    table(
      ["Metric", "Value"],
      [
        ["Total Requests", grouped(r.totalRequests)],
        ["Success", grouped(r.success)],
        ["Errors", grouped(r.errors)],
        ["Total Duration", formatMicros(r.durationUs)],
        ["Throughput", `${significant(r.throughput)} req/s`],
        ["Completion Tokens", `${grouped(r.completionTokens)}${perRequest}`],
        ["Token Throughput", `${significant(r.tokenThroughput)} tok/s`],
      ],
      ["left", "right"],
    ),
  );
  out.push("");
  out.push("Latency Decomposition");
  const cell = (v: number) => formatMicros(v);
  out.push(
    table(
      ["Segment", "Count", "Mean", "P50", "P95", "P99", "Max"],
      SEGMENTS.map((name) => {
        const x = r.segments[name];
        return [name, grouped(x.count), cell(x.mean), cell(x.p50), cell(x.p95), cell(x.p99), cell(x.max)];
      }),
      ["left", "right", "right", "right", "right", "right", "right"],
    ),
  );
  out.push("");
  for (const name of SEGMENTS) out.push(`  ${name}: ${SEGMENT_DEFINITIONS[name]}`);
  if (r.missingTiming > 0) {
    out.push(`  (${r.missingTiming} successful responses had no readable X-Timing header)`);
  }
  out.push("");
  const providers = Object.entries(r.providers).sort((a, b) => b[1] - a[1]);
  if (providers.length > 0) {
    out.push(
      table(
        ["Provider (X-Provider-Id)", "Requests"],
        providers.map(([id, n]) => [id, grouped(n)]),
        ["left", "right"],
      ),
    );
    out.push("");
  }
  if (r.users.length > 1) {
    out.push(
      table(
        ["User", "Requests", "Errors"],
        r.users.map((u) => [`#${u.user + 1}`, grouped(u.requests), grouped(u.errors)]),
        ["left", "right", "right"],
      ),
    );
    out.push("");
  }
  out.push("Errors");
  out.push(
    r.errorCounts.length === 0
      ? "(none)"
      : table(
          ["Error", "Count", "First message"],
          r.errorCounts.map((e) => [e.key, grouped(e.count), e.example.slice(0, 100)]),
          ["left", "right", "left"],
        ),
  );
  out.push("");
  if (report.assertions.length === 0) {
    out.push("Assertion Report: none (--assert EXPR or --default-asserts)");
  } else {
    out.push(`Assertion Report: ${assertionsPassed(report.assertions) ? "PASS" : "FAIL"}`);
    out.push(
      table(
        ["Assertion", "Result", "Detail"],
        report.assertions.map((a) => [a.assertion, a.pass ? "PASS" : "FAIL", a.detail]),
        ["left", "left", "left"],
      ),
    );
  }
  return `${out.join("\n")}\n`;
}

/** Microseconds to 0.1 µs; NaN (no samples) as null. */
function us(v: number): number | null {
  return Number.isFinite(v) ? Math.round(v * 10) / 10 : null;
}

function summaryJson(x: Summary) {
  return { count: x.count, mean: us(x.mean), p50: us(x.p50), p95: us(x.p95), p99: us(x.p99), max: us(x.max) };
}

/** The same data as renderText, as one JSON-ready object; every duration in microseconds. */
export function renderJson(report: Report) {
  const { summary: r, scenario: s } = report;
  return {
    units: "microseconds",
    machine: machineLine(),
    scenario: {
      ...s,
      providers: s.providers ?? Object.keys(r.providers).length,
      total: s.total ?? null,
      durationMs: s.durationMs ?? null,
      line: scenarioLine(report),
    },
    interrupted: report.interrupted,
    cpuPressure: report.cpuPressure === undefined ? null : Math.round(report.cpuPressure * 10_000) / 10_000,
    summary: {
      totalRequests: r.totalRequests,
      success: r.success,
      errors: r.errors,
      durationUs: us(r.durationUs),
      throughputRps: Math.round(r.throughput * 1000) / 1000,
      completionTokens: r.completionTokens,
      tokenThroughput: Math.round(r.tokenThroughput * 1000) / 1000,
      missingTiming: r.missingTiming,
    },
    segments: Object.fromEntries(SEGMENTS.map((name) => [name, summaryJson(r.segments[name])])),
    definitions: SEGMENT_DEFINITIONS,
    errors: r.errorCounts,
    statusCounts: r.statusCounts,
    providers: r.providers,
    users: r.users,
    assertions: {
      pass: assertionsPassed(report.assertions),
      results: report.assertions.map((a) => ({
        ...a,
        actual: a.actual === null ? null : a.unit === "us" ? us(a.actual) : a.actual,
      })),
    },
  };
}
