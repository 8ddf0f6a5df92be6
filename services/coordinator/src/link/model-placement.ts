import { MemoryPressure } from "@darkbloom/protocol/provider/v1";
import type { Logger } from "../log.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { ProviderRegistry } from "../routing/provider-registry.js";
import type { Router } from "../routing/router.js";
import { type ModelOperationOutcome, runModelOperation } from "./provider-commands.js";
import type { ProviderSession } from "./provider-session.js";

/** Loaded copies of a model busier than this (in-flight over slots) call for one more. */
export const BUSY_UTILIZATION = 0.75;

export interface ModelPlacementOptions {
  /** Period between decisions; 0: no placement. */
  intervalMs: number;
  /**
   * No load or unload of one model on one provider sooner than this after the last (whoever made
   * it: this policy or an administrator), and a loaded model must have gone unused this long
   * before it is unloaded: what keeps the policy from thrashing.
   */
  cooldownMs: number;
}

/** A decision the policy made (what tick() returns, for tests and logs). */
export interface PlacementDecision {
  providerId: string;
  model: string;
  kind: "load" | "unload";
  why: string;
}

/**
 * Demand-driven placement of models on this replica's providers (LoadModel/UnloadModel): a provider
 * registers the models it can serve, and loads one into memory on a request's first use, which the
 * request pays for (routing prefers providers with the model loaded, COLD_LOAD_SECONDS otherwise).
 * Every interval, per catalog model that is enabled:
 * - **no loaded copy** among the providers that can serve it: one provider loads it, so the next
 *   request is not the one that pays;
 * - **demand above what is loaded** (requests queued for it, or its loaded copies more than
 *   BUSY_UTILIZATION busy): one more provider loads it, ahead of the requests that would otherwise
 *   spill onto a cold one;
 * and per provider under memory pressure (its heartbeat's WARN or CRITICAL), the model it used
 * least recently, unused for the cooldown and not its model's last loaded copy, is unloaded.
 * Loads go to providers with free slots and normal memory, the most free slots first. At most one
 * decision per model and one per provider a tick, and none for a (provider, model) within the
 * cooldown of the last: never thrash.
 */
export class ModelPlacement {
  private timer: NodeJS.Timeout | undefined;
  /** When each (provider, model) last had an operation. */
  private readonly lastOperation = new Map<string, number>();
  /** Providers with an operation in flight. */
  private readonly busy = new Set<string>();

  constructor(
    private readonly registry: ProviderRegistry,
    private readonly router: Router,
    private readonly sessions: { get(providerId: string): ProviderSession | undefined },
    /** The enabled catalog models. */
    private readonly catalogModels: () => readonly string[],
    private readonly options: ModelPlacementOptions,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.options.intervalMs <= 0) return;
    this.timer = setInterval(() => this.tick(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /**
   * Has a provider load or unload a model and resolves with its outcome: the policy's decisions and
   * an administrator's commands alike, so that either starts the (provider, model) cooldown.
   */
  async operate(
    session: ProviderSession,
    model: string,
    kind: "load" | "unload",
    now = Date.now(),
  ): Promise<ModelOperationOutcome> {
    const id = session.handle.id;
    this.lastOperation.set(key(id, model), now);
    this.busy.add(id);
    try {
      return await runModelOperation(session, model, kind);
    } finally {
      this.busy.delete(id);
    }
  }

  /** One round of decisions; each is carried out in the background. */
  tick(now = Date.now()): PlacementDecision[] {
    const decisions: PlacementDecision[] = [];
    const decided = new Set<string>();
    for (const model of this.catalogModels()) {
      const able = [...this.registry.serving(model)].filter((p) => routable(p));
      if (able.length === 0) continue;
      const loaded = able.filter((p) => p.loadedModels.has(model));
      const slots = loaded.reduce((n, p) => n + p.maxBatch, 0);
      const inFlight = loaded.reduce((n, p) => n + p.inFlight, 0);
      const why =
        loaded.length === 0
          ? "no provider has it loaded"
          : this.router.queueLength(model) > 0
            ? "requests are queued for it"
            : inFlight / slots > BUSY_UTILIZATION
              ? "its loaded copies are busy"
              : undefined;
      if (!why) continue;
      const target = able
        .filter(
          (p) =>
            !p.loadedModels.has(model) &&
            !decided.has(p.id) &&
            p.freeSlots > 0 &&
            !underPressure(p) &&
            this.ready(p.id, model, now),
        )
        .sort((a, b) => b.freeSlots - a.freeSlots)[0];
      if (!target) continue;
      decided.add(target.id);
      decisions.push({ providerId: target.id, model, kind: "load", why });
    }
    for (const p of this.registry.all()) {
      if (decided.has(p.id) || !underPressure(p) || !routable(p)) continue;
      const idle = [...p.loadedModels]
        .filter(
          (model) =>
            p.lastUsed(model) <= now - this.options.cooldownMs &&
            this.ready(p.id, model, now) &&
            [...this.registry.serving(model)].some((q) => q !== p && q.loadedModels.has(model)),
        )
        .sort((a, b) => p.lastUsed(a) - p.lastUsed(b))[0];
      if (idle === undefined) continue;
      decided.add(p.id);
      decisions.push({ providerId: p.id, model: idle, kind: "unload", why: "memory pressure" });
    }
    for (const d of decisions) this.carryOut(d, now);
    return decisions;
  }

  /** Whether (provider, model) may have an operation now. */
  private ready(providerId: string, model: string, now: number): boolean {
    if (this.busy.has(providerId)) return false;
    const last = this.lastOperation.get(key(providerId, model));
    return last === undefined || now - last >= this.options.cooldownMs;
  }

  private carryOut(d: PlacementDecision, now: number): void {
    const session = this.sessions.get(d.providerId);
    if (!session) return;
    this.log.info({ providerId: d.providerId, model: d.model, why: d.why }, `model placement: ${d.kind}`);
    void this.operate(session, d.model, d.kind, now)
      .catch((e: Error): ModelOperationOutcome => ({ succeeded: false, reason: e.message }))
      .then((outcome) => {
        if (!outcome.succeeded) {
          this.log.warn(
            { providerId: d.providerId, model: d.model, reason: outcome.reason },
            `model placement: the ${d.kind} failed`,
          );
        }
      });
  }
}

function key(providerId: string, model: string): string {
  return `${providerId}\u0000${model}`;
}

function routable(p: ProviderHandle): boolean {
  return !p.closed && !p.draining && !p.deRouted;
}

function underPressure(p: ProviderHandle): boolean {
  return p.memoryPressure === MemoryPressure.WARN || p.memoryPressure === MemoryPressure.CRITICAL;
}
