// Drill 1: many simulated providers connected to one coordinator process, registering and then
// heartbeating at the coordinator's interval. Measures registration, the coordinator's steady-state
// CPU and memory against its idle figures, heartbeats applied per second, that nobody is evicted, and
// what routing a request costs while they are all connected.
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
  sleep,
  spread,
} from "./figures.js";
import { expectedText, type StreamResult, streamChat } from "./sse-client.js";
import { SwarmProcess } from "./swarm-link.js";

/** The model only the routed subset serves, and the one every provider serves. */
export const ROUTED_MODEL = "scale-routed";
export const FLEET_MODEL = "scale-fleet";
const REQUEST_TOKENS = 16;

export interface ProviderDrillOptions {
  databaseUrl: string;
  /** Providers connected in all (the routed subset included). */
  providers: number;
  /** Told to the coordinator, which tells the providers (RegisterAck); 3 missed evict. */
  heartbeatIntervalMs: number;
  /** Length of the measured steady-state window, in heartbeat periods (at least 3). */
  steadyPeriods: number;
  /** The idle coordinator's window (no provider connected), ms. */
  idleWindowMs: number;
  /** Providers per swarm process. */
  providersPerSwarm: number;
  /** Provider streams per shared HTTP/2 connection. */
  streamsPerConnection: number;
  /** Registrations in flight at once per swarm process. */
  registerConcurrency: number;
  /** Providers that also serve ROUTED_MODEL (connected first, before the rest). */
  routedProviders: number;
  /** Requests per routing measurement (sequential, one client). */
  requests: number;
  billing: boolean;
  cpuProfileDir?: string | undefined;
  /** Progress lines (stderr in the CLI). */
  log?: (line: string) => void;
}

export const PROVIDER_DRILL_DEFAULTS: Omit<ProviderDrillOptions, "databaseUrl"> = {
  providers: 10_000,
  heartbeatIntervalMs: 5_000,
  steadyPeriods: 3,
  idleWindowMs: 5_000,
  providersPerSwarm: 5_000,
  streamsPerConnection: 500,
  registerConcurrency: 500,
  routedProviders: 16,
  requests: 200,
  billing: false,
};

/** One set of routed requests: the same model before and while the whole fleet is connected. */
export interface RoutingFigures {
  label: string;
  model: string;
  /** Providers serving the model / connected in all, when the set ran. */
  candidates: number;
  connected: number;
  requests: number;
  ok: number;
  /** Client-side: request to first body byte (the first token), and to the end, ms. */
  ttfbMs: Spread;
  totalMs: Spread;
  /** The coordinator's own X-Timing: the route phase, and arrival to response headers (first token), µs. */
  routeMicros: Spread;
  toHeadersMicros: Spread;
}

export interface ProviderDrillResult {
  providers: number;
  heartbeatIntervalMs: number;
  swarms: number;
  connections: number;
  registration: {
    registered: number;
    failed: number;
    firstError: string | undefined;
    /** The routed subset registered first, alone; the rest in one burst, timed here. */
    burstProviders: number;
    burstMs: number;
    perSecond: number;
    latencyMs: Spread;
    /** CPU during the burst, % of one core: the coordinator's, and the swarms' together. */
    coordinatorCpuPercent: number;
    swarmCpuPercent: number;
    /** The coordinator's event-loop delay during the burst (the window since the drill began), ms. */
    eventLoopDelayMaxMs: number;
  };
  idle: { windowMs: number; cpuPercent: number; rssMiB: number; heapUsedMiB: number };
  steady: {
    windowMs: number;
    periods: number;
    cpuPercent: number;
    cpuMicrosPerHeartbeat: number;
    rssMiB: number;
    rssPeakMiB: number;
    heapUsedMiB: number;
    heapUsedPeakMiB: number;
    heartbeatsApplied: number;
    heartbeatsPerSecond: number;
    expectedHeartbeatsPerSecond: number;
    heartbeatsSent: number;
    /** darkbloom_providers_connected at each sample of the window (start, every period, end). */
    connectedSamples: number[];
    /** Longest silence of any provider at the end of the window, ms (eviction at 3 × interval). */
    maxHeartbeatAgeMs: number;
    eventLoopDelayP99Ms: number;
    eventLoopDelayMaxMs: number;
    /** Share of the window some task waited for a CPU (Linux PSI), %. */
    cpuPressurePercent: number;
    /** The swarm processes' CPU over the window, % of one core, and RSS (all swarms together). */
    swarmCpuPercent: number;
    swarmRssMiB: number;
  };
  routing: RoutingFigures[];
  evictions: Record<string, number>;
  disconnects: number;
  warnings: string[];
  checks: Check[];
  passed: boolean;
}

export async function runProviderDrill(options: ProviderDrillOptions): Promise<ProviderDrillResult> {
  const o = options;
  const log = o.log ?? (() => undefined);
  const routed = Math.min(o.routedProviders, o.providers);
  const swarmCount = Math.max(1, Math.ceil(o.providers / o.providersPerSwarm));
  const coordinator = await CoordinatorProcess.start({
    databaseUrl: o.databaseUrl,
    heartbeatIntervalMs: o.heartbeatIntervalMs,
    billing: o.billing,
    cpuProfileDir: o.cpuProfileDir,
  });
  const swarms: SwarmProcess[] = [];
  try {
    for (let i = 0; i < swarmCount; i++) swarms.push(await SwarmProcess.start());
    log(`coordinator pid ${coordinator.pid}, ${swarmCount} swarm process(es)`);

    // The idle coordinator, for comparison: same process, nothing connected yet.
    await sleep(1_000);
    const idleStart = await coordinator.stats();
    await sleep(o.idleWindowMs);
    const idleEnd = await coordinator.stats();

    const registerOptions = {
      baseUrl: coordinator.url,
      script: { tokens: REQUEST_TOKENS, firstTokenDelayMs: 0, interTokenDelayMs: 0 },
      streamsPerConnection: o.streamsPerConnection,
      registerConcurrency: o.registerConcurrency,
    };
    // The routed subset first, alone, so that routing can be measured before the fleet arrives.
    const first = await (swarms[0] as SwarmProcess).register({
      ...registerOptions,
      groups: [{ prefix: "scale-routed", count: routed, models: [ROUTED_MODEL, FLEET_MODEL], maxBatch: 8 }],
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const routing: RoutingFigures[] = [];
    const onlyRouted = () => routed;
    const everyone = (connected: number) => connected;
    await routeRequests(coordinator, agent, ROUTED_MODEL, 20, "warm-up", onlyRouted);
    routing.push(
      await routeRequests(coordinator, agent, ROUTED_MODEL, o.requests, "subset alone", onlyRouted),
    );
    routing.push(await routeRequests(coordinator, agent, FLEET_MODEL, o.requests, "subset alone", everyone));

    // The rest in one burst, spread over the swarms.
    const rest = o.providers - routed;
    log(`registering ${rest} providers over ${swarmCount} swarm process(es)`);
    const burstCoordinator = await coordinator.stats();
    const burstSwarms = await Promise.all(swarms.map((s) => s.stats()));
    const burstStart = performance.now();
    const replies = await Promise.all(
      swarms.map((swarm, i) => {
        const from = Math.floor((rest * i) / swarmCount);
        const to = Math.floor((rest * (i + 1)) / swarmCount);
        return swarm.register({
          ...registerOptions,
          groups: [{ prefix: `scale-fleet-${i}`, count: to - from, models: [FLEET_MODEL], maxBatch: 8 }],
        });
      }),
    );
    const burstMs = performance.now() - burstStart;
    const burstCoordinatorEnd = await coordinator.stats();
    const burstSwarmsEnd = await Promise.all(swarms.map((s) => s.stats()));
    const burstSwarmCpu =
      burstSwarmsEnd.reduce((n, s) => n + s.cpuMicros, 0) - burstSwarms.reduce((n, s) => n + s.cpuMicros, 0);
    const latencies = [...first.latenciesMs, ...replies.flatMap((r) => r.latenciesMs)];
    const failed = first.failed + replies.reduce((n, r) => n + r.failed, 0);
    const firstError = first.firstError ?? replies.find((r) => r.firstError)?.firstError;
    log(`registered ${latencies.length} (${failed} failed) in ${round(burstMs / 1000)} s`);

    // Let the registration burst settle for one period, then measure whole heartbeat periods.
    await sleep(o.heartbeatIntervalMs);
    const connectedSamples: number[] = [(await coordinator.fleetMetrics()).connected];
    await coordinator.reset();
    const swarmStart = await Promise.all(swarms.map((s) => s.stats()));
    const steadyStart = await coordinator.stats();
    const pressureStart = cpuPressureMicros();
    for (let period = 0; period < o.steadyPeriods; period++) {
      await sleep(o.heartbeatIntervalMs);
      connectedSamples.push((await coordinator.fleetMetrics()).connected);
    }
    const steadyEnd = await coordinator.stats();
    const pressure = cpuPressureMicros() - pressureStart;
    const swarmEnd = await Promise.all(swarms.map((s) => s.stats()));
    log(`steady window done: ${connectedSamples.join(", ")} connected`);

    routing.push(
      await routeRequests(coordinator, agent, ROUTED_MODEL, o.requests, "fleet connected", onlyRouted),
    );
    routing.push(
      await routeRequests(coordinator, agent, FLEET_MODEL, o.requests, "fleet connected", everyone),
    );
    agent.destroy();

    const fleet = await coordinator.fleetMetrics();
    const finalStats = await coordinator.stats();
    const swarmFinal = await Promise.all(swarms.map((s) => s.stats()));
    const disconnects = swarmFinal.reduce((n, s) => n + s.disconnects, 0);

    const idleWall = idleEnd.atMs - idleStart.atMs;
    const steadyWall = steadyEnd.atMs - steadyStart.atMs;
    const applied = steadyEnd.heartbeats - steadyStart.heartbeats;
    const sent =
      swarmEnd.reduce((n, s) => n + s.heartbeatsSent, 0) -
      swarmStart.reduce((n, s) => n + s.heartbeatsSent, 0);
    const swarmCpu =
      swarmEnd.reduce((n, s) => n + s.cpuMicros, 0) - swarmStart.reduce((n, s) => n + s.cpuMicros, 0);
    const expectedPerSecond = o.providers / (o.heartbeatIntervalMs / 1000);
    const heartbeatsPerSecond = round(applied / (steadyWall / 1000), 1);
    const evictions = { ...fleet.evictionsByReason };
    const maxListeners = finalStats.warnings.filter((w) => w.startsWith("MaxListenersExceeded"));

    const checks: Check[] = [
      check(
        "every provider registered",
        latencies.length === o.providers && failed === 0,
        `${latencies.length}/${o.providers} registered, ${failed} failed${firstError ? ` (${firstError})` : ""}`,
      ),
      check(
        "registry count stays at the fleet size (GET /metrics)",
        connectedSamples.every((c) => c === o.providers) && fleet.connected === o.providers,
        `darkbloom_providers_connected ${[...connectedSamples, fleet.connected].join(", ")}`,
      ),
      check(
        "no provider evicted",
        fleet.evictions === 0 && Object.keys(finalStats.removed).length === 0 && disconnects === 0,
        `darkbloom_provider_evictions_total ${fleet.evictions}, swarm disconnects ${disconnects}`,
      ),
      check(
        "heartbeats applied keep up with the fleet",
        heartbeatsPerSecond >= 0.9 * expectedPerSecond,
        `${heartbeatsPerSecond}/s applied, ${round(expectedPerSecond, 1)}/s expected`,
      ),
      check(
        "every provider heard from within 2 heartbeat periods",
        steadyEnd.maxHeartbeatAgeMs < 2 * o.heartbeatIntervalMs,
        `max silence ${steadyEnd.maxHeartbeatAgeMs} ms; eviction at ${3 * o.heartbeatIntervalMs} ms`,
      ),
      check(
        "no MaxListenersExceededWarning in the coordinator",
        maxListeners.length === 0,
        maxListeners[0] ?? "none",
      ),
      ...routing.map((r) =>
        check(
          `requests to ${r.model} (${r.label}) all served`,
          r.ok === r.requests,
          `${r.ok}/${r.requests} complete with ${REQUEST_TOKENS} tokens and one [DONE]`,
        ),
      ),
    ];
    const result: ProviderDrillResult = {
      providers: o.providers,
      heartbeatIntervalMs: o.heartbeatIntervalMs,
      swarms: swarmCount,
      connections: swarmFinal.reduce((n, s) => n + s.connections, 0),
      registration: {
        registered: latencies.length,
        failed,
        firstError,
        burstProviders: rest,
        burstMs: round(burstMs, 0),
        perSecond: round(rest / (burstMs / 1000), 0),
        latencyMs: spread(latencies),
        coordinatorCpuPercent: cpuPercent(
          burstCoordinatorEnd.cpuMicros - burstCoordinator.cpuMicros,
          burstCoordinatorEnd.atMs - burstCoordinator.atMs,
        ),
        swarmCpuPercent: cpuPercent(burstSwarmCpu, burstMs),
        eventLoopDelayMaxMs: round(burstCoordinatorEnd.eventLoopDelayMaxMs),
      },
      idle: {
        windowMs: round(idleWall, 0),
        cpuPercent: cpuPercent(idleEnd.cpuMicros - idleStart.cpuMicros, idleWall),
        rssMiB: mib(idleEnd.rssBytes),
        heapUsedMiB: mib(idleEnd.heapUsedBytes),
      },
      steady: {
        windowMs: round(steadyWall, 0),
        periods: o.steadyPeriods,
        cpuPercent: cpuPercent(steadyEnd.cpuMicros - steadyStart.cpuMicros, steadyWall),
        cpuMicrosPerHeartbeat: round((steadyEnd.cpuMicros - steadyStart.cpuMicros) / Math.max(1, applied), 1),
        rssMiB: mib(steadyEnd.rssBytes),
        rssPeakMiB: mib(steadyEnd.rssPeakBytes),
        heapUsedMiB: mib(steadyEnd.heapUsedBytes),
        heapUsedPeakMiB: mib(steadyEnd.heapUsedPeakBytes),
        heartbeatsApplied: applied,
        heartbeatsPerSecond,
        expectedHeartbeatsPerSecond: round(expectedPerSecond, 1),
        heartbeatsSent: sent,
        connectedSamples,
        maxHeartbeatAgeMs: steadyEnd.maxHeartbeatAgeMs,
        eventLoopDelayP99Ms: round(steadyEnd.eventLoopDelayP99Ms),
        eventLoopDelayMaxMs: round(steadyEnd.eventLoopDelayMaxMs),
        cpuPressurePercent: cpuPercent(pressure, steadyWall),
        swarmCpuPercent: cpuPercent(swarmCpu, steadyWall),
        swarmRssMiB: mib(swarmEnd.reduce((n, s) => n + s.rssBytes, 0)),
      },
      routing,
      evictions,
      disconnects,
      warnings: finalStats.warnings,
      checks,
      passed: checks.every((c) => c.ok),
    };
    return result;
  } finally {
    await Promise.all(swarms.map((s) => s.stop().catch(() => s.kill())));
    await coordinator.stop().catch(() => coordinator.kill());
  }
}

/** `n` streamed requests to `model`, one at a time, on one keep-alive connection. */
async function routeRequests(
  coordinator: CoordinatorProcess,
  agent: http.Agent,
  model: string,
  n: number,
  label: string,
  candidates: (connected: number) => number,
): Promise<RoutingFigures> {
  const fleet = await coordinator.stats();
  const results: StreamResult[] = [];
  for (let i = 0; i < n; i++) {
    results.push(
      await streamChat({
        agent,
        url: coordinator.url,
        apiKey: coordinator.apiKey,
        model,
        maxTokens: REQUEST_TOKENS,
        timeoutMs: 30_000,
      }),
    );
  }
  const expected = expectedText(REQUEST_TOKENS);
  const good = results.filter(
    (r) =>
      r.error === undefined &&
      r.errorEvent === undefined &&
      r.doneEvents === 1 &&
      r.doneLast &&
      r.text === expected,
  );
  const timings = results.flatMap((r) => (r.timing ? [r.timing] : []));
  return {
    label,
    model,
    candidates: candidates(fleet.providers),
    connected: fleet.providers,
    requests: n,
    ok: good.length,
    ttfbMs: spread(results.map((r) => r.ttfbMs)),
    totalMs: spread(results.map((r) => r.totalMs)),
    routeMicros: spread(
      timings.map((t) => t.route ?? Number.NaN),
      0,
    ),
    toHeadersMicros: spread(
      timings.map((t) => t.total ?? Number.NaN),
      0,
    ),
  };
}
