// Renders the drills' results as text tables.
import type { Check, Spread } from "./figures.js";
import type { ProviderDrillResult } from "./provider-drill.js";
import type { StreamDrillResult } from "./stream-drill.js";

function table(header: string[], rows: Array<Array<string | number>>): string {
  const lines = rows.map((r) => r.map(String));
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? "").length)));
  return `${[header, ...lines]
    .map((l) =>
      l
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n")}\n`;
}

const n = (v: number) => v.toLocaleString("en-US");
const ps = (s: Spread, unit = "") => `${s.p50}${unit} / ${s.p99}${unit}`;

function checks(list: Check[]): string {
  return table(
    ["check", "result", "detail"],
    list.map((c) => [c.name, c.ok ? "PASS" : "FAIL", c.detail]),
  );
}

export function renderProviderDrill(r: ProviderDrillResult): string {
  const reg = r.registration;
  const s = r.steady;
  let out = `\nProvider drill: ${n(r.providers)} simulated providers, heartbeat every ${r.heartbeatIntervalMs} ms `;
  out += `(${r.swarms} swarm process(es), ${r.connections} HTTP/2 connections)\n\n`;
  out += table(
    ["registration", "value"],
    [
      ["registered / failed", `${n(reg.registered)} / ${reg.failed}`],
      [`burst of ${n(reg.burstProviders)}: wall time`, `${n(reg.burstMs)} ms (${n(reg.perSecond)}/s)`],
      [
        "latency p50 / p99 / max (start → RegisterAck)",
        `${ps(reg.latencyMs, " ms")} / ${reg.latencyMs.max} ms`,
      ],
      [
        "CPU during the burst, % of one core: coordinator / swarms",
        `${reg.coordinatorCpuPercent} / ${reg.swarmCpuPercent}`,
      ],
      ["coordinator event-loop delay max (drill start → burst end)", `${reg.eventLoopDelayMaxMs} ms`],
    ],
  );
  out += "\n";
  out += table(
    ["coordinator", "idle (no provider)", `steady state (${n(r.providers)} providers)`],
    [
      ["window", `${n(r.idle.windowMs)} ms`, `${n(s.windowMs)} ms (${s.periods} heartbeat periods)`],
      ["CPU, % of one core", r.idle.cpuPercent, s.cpuPercent],
      ["RSS MiB (peak)", r.idle.rssMiB, `${s.rssMiB} (${s.rssPeakMiB})`],
      ["heap used MiB (peak)", r.idle.heapUsedMiB, `${s.heapUsedMiB} (${s.heapUsedPeakMiB})`],
      ["heartbeats applied/s (expected)", "-", `${s.heartbeatsPerSecond} (${s.expectedHeartbeatsPerSecond})`],
      ["CPU µs per heartbeat", "-", s.cpuMicrosPerHeartbeat],
      ["heartbeats sent in the window", "-", n(s.heartbeatsSent)],
      ["providers connected (GET /metrics)", "-", s.connectedSamples.map(n).join(", ")],
      [
        "longest provider silence at the end",
        "-",
        `${s.maxHeartbeatAgeMs} ms (evicted at ${3 * r.heartbeatIntervalMs})`,
      ],
      ["event-loop delay p99 / max", "-", `${s.eventLoopDelayP99Ms} / ${s.eventLoopDelayMaxMs} ms`],
      ["swarm processes: CPU % of one core, RSS MiB", "-", `${s.swarmCpuPercent}, ${s.swarmRssMiB}`],
      ["CPU pressure (PSI some: time a task waited for a CPU)", "-", `${s.cpuPressurePercent}%`],
    ],
  );
  out += "\n";
  out += table(
    [
      "routed requests",
      "model",
      "serving / connected",
      "ok",
      "TTFB p50 / p99 ms",
      "total p50 / p99 ms",
      "X-Timing route p50 / p99 µs",
      "to headers p50 / p99 µs",
    ],
    r.routing.map((x) => [
      x.label,
      x.model,
      `${n(x.candidates)} / ${n(x.connected)}`,
      `${x.ok}/${x.requests}`,
      ps(x.ttfbMs),
      ps(x.totalMs),
      ps(x.routeMicros),
      ps(x.toHeadersMicros),
    ]),
  );
  out += `\nevictions: ${JSON.stringify(r.evictions)}; warnings: ${r.warnings.length === 0 ? "none" : r.warnings.join("; ")}\n\n`;
  out += checks(r.checks);
  return out;
}

export function renderStreamDrill(r: StreamDrillResult): string {
  const c = r.coordinator;
  let out = `\nStream drill: ${n(r.streams)} simultaneous streamed chat completions, ${r.tokens} tokens `;
  out += `${r.interTokenDelayMs} ms apart, ${r.providers} providers × ${r.slots / r.providers} slots\n\n`;
  out += table(
    ["streams", "value"],
    [
      ["completed / errors / hung", `${n(r.completed)} / ${r.errors} / ${r.hung}`],
      ["all open at once (peak open)", `${r.allOpenAtOnce ? "yes" : "no"} (${n(r.peakOpen)})`],
      ["peak streaming at once (first token → [DONE])", n(r.peakStreaming)],
      ["TTFT p50 / p99 / max", `${ps(r.ttftMs, " ms")} / ${r.ttftMs.max} ms`],
      [
        `inter-token gap p50 / p99 / max (scripted ${r.interTokenDelayMs} ms)`,
        `${ps(r.interTokenGapMs, " ms")} / ${r.interTokenGapMs.max} ms`,
      ],
      ["inter-token gap mean", `${r.interTokenGapMeanMs} ms`],
      ["queue wait (X-Timing) p50 / p99", ps(r.queueMicros, " µs")],
      ...Object.entries(r.timingMicros).map(([phase, v]): [string, string] => [
        `X-Timing ${phase} p50 / p99`,
        ps(v, " µs"),
      ]),
      ["wall time (scripted minimum)", `${n(r.wallMs)} ms (${n(r.scriptedMs)} ms)`],
      ["coordinator CPU, % of one core over the wall time", c.cpuPercent],
      ["coordinator CPU µs per stream (per token)", `${n(c.cpuMicrosPerStream)} (${c.cpuMicrosPerToken})`],
      ["coordinator RSS MiB: before → peak", `${c.rssBeforeMiB} → ${c.rssPeakMiB}`],
      ["coordinator heap used peak MiB", c.heapUsedPeakMiB],
      ["coordinator event-loop delay p99 / max", `${c.eventLoopDelayP99Ms} / ${c.eventLoopDelayMaxMs} ms`],
      ["swarm process CPU, % of one core", r.swarmCpuPercent],
      ["consumers' process CPU, % of one core", r.consumerCpuPercent],
      ["CPU pressure (PSI some: time a task waited for a CPU)", `${r.cpuPressurePercent}%`],
    ],
  );
  out += `\nwarnings: ${r.warnings.length === 0 ? "none" : r.warnings.join("; ")}\n\n`;
  out += checks(r.checks);
  return out;
}
