// The drills' handle on the coordinator process: forks coordinator-child, asks it for its figures, and
// reads the coordinator's own GET /metrics (providers connected, evictions) as an operator would.
import type { CoordinatorReady, CoordinatorRequest, CoordinatorStats } from "./coordinator-child.js";
import { ChildLink, childScript } from "./process-link.js";

export interface CoordinatorOptions {
  databaseUrl: string;
  heartbeatIntervalMs: number;
  billing: boolean;
  /** Write a V8 CPU profile of the coordinator into this directory (node --cpu-prof). */
  cpuProfileDir?: string | undefined;
}

/** What GET /metrics says about the provider fleet. */
export interface FleetMetrics {
  /** darkbloom_providers_connected */
  connected: number;
  /** darkbloom_provider_evictions_total, summed over reasons. */
  evictions: number;
  evictionsByReason: Record<string, number>;
}

export class CoordinatorProcess {
  private constructor(
    private readonly link: ChildLink<CoordinatorRequest, CoordinatorStats, CoordinatorReady>,
  ) {}

  static async start(o: CoordinatorOptions): Promise<CoordinatorProcess> {
    const link = await ChildLink.start<CoordinatorRequest, CoordinatorStats, CoordinatorReady>(
      childScript("coordinator-child"),
      [o.databaseUrl, String(o.heartbeatIntervalMs), o.billing ? "billing" : "no-billing"],
      {
        execArgv: o.cpuProfileDir ? ["--cpu-prof", `--cpu-prof-dir=${o.cpuProfileDir}`] : [],
        timeoutMs: 120_000,
      },
    );
    return new CoordinatorProcess(link);
  }

  get url(): string {
    return this.link.ready.url;
  }

  get apiKey(): string {
    return this.link.ready.apiKey;
  }

  get pid(): number {
    return this.link.pid;
  }

  stats(): Promise<CoordinatorStats> {
    return this.link.request({ type: "stats" });
  }

  /** Starts a new window for the peaks and the event-loop delay. */
  async reset(): Promise<void> {
    await this.link.request({ type: "reset" });
  }

  async fleetMetrics(): Promise<FleetMetrics> {
    const response = await fetch(new URL("/metrics", this.url));
    if (!response.ok) throw new Error(`GET /metrics answered ${response.status}`);
    const text = await response.text();
    const result: FleetMetrics = { connected: Number.NaN, evictions: 0, evictionsByReason: {} };
    for (const line of text.split("\n")) {
      if (line.startsWith("darkbloom_providers_connected ")) {
        result.connected = Number(line.slice(line.indexOf(" ") + 1));
      } else if (line.startsWith("darkbloom_provider_evictions_total{")) {
        const reason = /reason="([^"]*)"/.exec(line)?.[1] ?? "";
        const value = Number(line.slice(line.lastIndexOf(" ") + 1));
        result.evictions += value;
        result.evictionsByReason[reason] = value;
      }
    }
    return result;
  }

  stop(): Promise<void> {
    return this.link.stop({ type: "stop" }, 60_000);
  }

  kill(): void {
    this.link.kill();
  }
}
