import {
  type ConnectResponse,
  type Hardware,
  type Heartbeat,
  MemoryPressure,
  type ModelFeature,
  type ModelInfo,
  ProviderState,
  ThermalState,
  type TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import { BATCH_DEGRADATION } from "./cost-model.js";
import { FleetBaseline, ProviderPerformance } from "./provider-performance.js";

/** What the registry knows about one connected provider; the link session keeps it current. */
export interface ProviderHandleInit {
  id: string;
  machineId: string;
  daemonVersion: string;
  /** Register.usage_version: 1 when its usage is the count of its text (default 0). */
  usageVersion?: number;
  engineBackend: string;
  hardware: Hardware | undefined;
  models: ModelInfo[];
  maxBatch: number;
  maxContext: number;
  trustLevel: TrustLevel;
  connectedAt: number;
  /** The ledger account earnings are paid into (default: one per machine). */
  payoutAccount?: string;
  /** Sends a message down the provider's stream; returns false when the stream is closed. */
  send: (message: ConnectResponse) => boolean;
  /** The machine's measured behaviour (kept across its reconnects); default: a fresh record. */
  performance?: ProviderPerformance;
  /** Register.encryption_public_key (X25519; empty: none). */
  encryptionKey?: Uint8Array;
  /** The P-256 key (SEC1) its response signatures verify with, once it attested one. */
  signingKey?: Uint8Array | undefined;
}

/**
 * How trust management judges the provider now (trust/provider-trust.ts), as routing reads it: see
 * the getters of the same names on ProviderHandle.
 */
export interface HandleJudgement {
  trustLevel: TrustLevel;
  deRouted: boolean;
  attestedUntil: number;
  latestChallengePassed: boolean;
}

/**
 * One connected provider as routing sees it. Its live state changes only through the methods below,
 * each owned by one module: the judgement by trust management, heartbeats and draining by the link
 * session, slots by the router, closing by the registry. Everything else reads it.
 */
export class ProviderHandle {
  readonly id: string;
  readonly machineId: string;
  readonly daemonVersion: string;
  /** What its usage figures mean (Register.usage_version; USAGE_VERSION: the count of its text). */
  readonly usageVersion: number;
  readonly engineBackend: string;
  readonly hardware: Hardware | undefined;
  readonly models: ReadonlyMap<string, ModelInfo>;
  readonly maxBatch: number;
  readonly maxContext: number;
  readonly connectedAt: number;
  readonly send: (message: ConnectResponse) => boolean;
  /** The ledger account the provider's earnings are paid into. */
  readonly payoutAccount: string;
  /** What the coordinator measured of this machine: what routing scores on (routing/provider-performance.ts). */
  readonly performance: ProviderPerformance;
  /** See ProviderHandleInit: the keys other replicas seal to and verify with (the directory). */
  readonly encryptionKey: Uint8Array;
  readonly signingKey: Uint8Array | undefined;

  #judgement: HandleJudgement;
  #inFlight = 0;
  /** Slots taken by work this replica did not lease (see setExternalLoad). */
  #external = 0;
  #draining = false;
  #closed = false;
  #lastHeartbeatAt: number;
  #state: ProviderState = ProviderState.IDLE;
  #loadedModels: ReadonlySet<string>;
  #queueDepth = 0;
  #busySlots = 0;
  #kvCacheUsage = 0;
  #decodeTokensPerSecond = 0;
  #prefillTokensPerSecond = 0;
  #memoryPressure: MemoryPressure = MemoryPressure.NORMAL;
  #thermalState: ThermalState = ThermalState.NOMINAL;
  #requestsCompleted = 0n;
  #requestsFailed = 0n;
  #lastUsed = new Map<string, number>();

  constructor(init: ProviderHandleInit) {
    this.id = init.id;
    this.machineId = init.machineId;
    this.daemonVersion = init.daemonVersion;
    this.usageVersion = init.usageVersion ?? 0;
    this.engineBackend = init.engineBackend;
    this.hardware = init.hardware;
    this.models = new Map(init.models.map((m) => [m.id, m]));
    this.maxBatch = Math.max(1, init.maxBatch);
    this.maxContext = init.maxContext;
    this.#judgement = {
      trustLevel: init.trustLevel,
      deRouted: false,
      attestedUntil: 0,
      latestChallengePassed: false,
    };
    this.connectedAt = init.connectedAt;
    this.#lastHeartbeatAt = init.connectedAt;
    this.send = init.send;
    // Until providers link an account (device-code login), earnings accrue to the machine.
    this.payoutAccount = init.payoutAccount ?? `provider:${init.machineId || init.id}`;
    this.performance = init.performance ?? new ProviderPerformance(new FleetBaseline(), BATCH_DEGRADATION);
    this.encryptionKey = init.encryptionKey ?? new Uint8Array(0);
    this.signingKey = init.signingKey;
    // Until the first heartbeat says otherwise, assume every advertised model is loaded.
    this.#loadedModels = new Set(this.models.keys());
  }

  /** The trust level the coordinator grants now (none while the provider is untrusted). */
  get trustLevel(): TrustLevel {
    return this.#judgement.trustLevel;
  }

  /**
   * Not routed at all, whatever the requested trust (daemon below the minimum version, evidence of
   * misbehaviour on the data path).
   */
  get deRouted(): boolean {
    return this.#judgement.deRouted;
  }

  /**
   * Until when (ms since the epoch) the latest passed challenge counts as fresh (0: none has).
   * Routing above trust level none needs it in the future.
   */
  get attestedUntil(): number {
    return this.#judgement.attestedUntil;
  }

  /** Whether the latest completed challenge passed. */
  get latestChallengePassed(): boolean {
    return this.#judgement.latestChallengePassed;
  }

  /** Slots the coordinator has reserved on this provider (dispatched and not finished). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Takes no new work: asked to drain, draining by its own account, or caught misbehaving. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Removed from the registry: its session has ended. */
  get closed(): boolean {
    return this.#closed;
  }

  // Live state from the latest heartbeat.
  get lastHeartbeatAt(): number {
    return this.#lastHeartbeatAt;
  }

  get state(): ProviderState {
    return this.#state;
  }

  get loadedModels(): ReadonlySet<string> {
    return this.#loadedModels;
  }

  get queueDepth(): number {
    return this.#queueDepth;
  }

  get busySlots(): number {
    return this.#busySlots;
  }

  get kvCacheUsage(): number {
    return this.#kvCacheUsage;
  }

  /** Advertised decode rate (a claim): only a clamped prior for routing, see `performance`. */
  get decodeTokensPerSecond(): number {
    return this.#decodeTokensPerSecond;
  }

  /** Advertised prefill rate (a claim), like `decodeTokensPerSecond`. */
  get prefillTokensPerSecond(): number {
    return this.#prefillTokensPerSecond;
  }

  get memoryPressure(): MemoryPressure {
    return this.#memoryPressure;
  }

  get thermalState(): ThermalState {
    return this.#thermalState;
  }

  get requestsCompleted(): bigint {
    return this.#requestsCompleted;
  }

  get requestsFailed(): bigint {
    return this.#requestsFailed;
  }

  /** Whether a challenge passed within the freshness window: the routing gate above trust none. */
  freshlyAttested(now = Date.now()): boolean {
    return this.attestedUntil > now;
  }

  /** Freshly attested and the latest challenge passed (X-Provider-Attested). */
  attested(now = Date.now()): boolean {
    return this.latestChallengePassed && this.attestedUntil > now;
  }

  get freeSlots(): number {
    return this.maxBatch - this.#inFlight - this.#external;
  }

  /**
   * Slots busy with work this replica did not lease: for a provider another replica holds, what the
   * directory says is busy beyond this replica's own forwarded requests (a view up to a flush old;
   * the holder admits or refuses each forwarded request against the provider's real slots).
   */
  setExternalLoad(slots: number): void {
    this.#external = Math.max(0, Math.min(this.maxBatch, slots));
  }

  /** Whether the provider registered `model` with `feature` (its engine enforces it). */
  hasFeature(model: string, feature: ModelFeature): boolean {
    return this.models.get(model)?.features.includes(feature) ?? false;
  }

  /** Largest prompt plus completion the provider serves for a model. */
  contextLimit(model: string): number {
    const info = this.models.get(model);
    const modelLimit = info?.contextLength ?? 0;
    if (modelLimit > 0 && this.maxContext > 0) return Math.min(modelLimit, this.maxContext);
    return modelLimit || this.maxContext || Number.MAX_SAFE_INTEGER;
  }

  /** Trust management's judgement of the provider (trust level, de-routing, challenge freshness). */
  applyJudgement(judgement: HandleJudgement): void {
    this.#judgement = { ...judgement };
  }

  /** The router reserves a slot for a dispatch. */
  reserveSlot(): void {
    this.#inFlight++;
  }

  /** The router frees a slot its dispatch no longer holds. */
  releaseSlot(): void {
    if (this.#inFlight > 0) this.#inFlight--;
  }

  /** The models another replica's heartbeats say it has loaded (a remote provider's, from the directory). */
  setLoadedModels(models: Iterable<string>): void {
    this.#loadedModels = new Set(models);
  }

  /** A request for `model` was dispatched to it now (model placement unloads what goes unused). */
  noteUse(model: string, now = Date.now()): void {
    this.#lastUsed.set(model, now);
  }

  /** When a request for `model` was last dispatched to it (0: never, here). */
  lastUsed(model: string): number {
    return this.#lastUsed.get(model) ?? 0;
  }

  /** No new work from now on (Drain sent, or the provider caught misbehaving); never undone. */
  markDraining(): void {
    this.#draining = true;
  }

  /** The registry removed the provider: its session has ended. */
  close(): void {
    this.#closed = true;
  }

  applyHeartbeat(hb: Heartbeat, now: number): void {
    this.#lastHeartbeatAt = now;
    this.#state = hb.state;
    if (hb.loadedModels.length > 0 || hb.state !== ProviderState.UNSPECIFIED) {
      this.#loadedModels = new Set(hb.loadedModels);
    }
    this.#queueDepth = hb.queueDepth;
    this.#busySlots = hb.busySlots;
    this.#kvCacheUsage = hb.kvCacheUsage;
    if (hb.decodeTokensPerSecond > 0) this.#decodeTokensPerSecond = hb.decodeTokensPerSecond;
    if (hb.prefillTokensPerSecond > 0) this.#prefillTokensPerSecond = hb.prefillTokensPerSecond;
    this.#memoryPressure = hb.memoryPressure;
    this.#thermalState = hb.thermalState;
    this.#requestsCompleted = hb.requestsCompleted;
    this.#requestsFailed = hb.requestsFailed;
    if (hb.state === ProviderState.DRAINING) this.#draining = true;
  }
}
