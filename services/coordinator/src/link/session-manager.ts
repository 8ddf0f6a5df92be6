import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Channel, MISSED_HEARTBEATS_BEFORE_EVICTION } from "@darkbloom/protocol";
import {
  type ConnectResponse,
  ConnectResponseSchema,
  type Register,
  TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import type { Logger } from "../log.js";
import type { CoordinatorMetrics } from "../metrics.js";
import { ProviderHandle } from "../routing/provider-handle.js";
import type { ProviderRegistry } from "../routing/provider-registry.js";
import type { TrustManager } from "../trust/trust-manager.js";
import { ProviderSession } from "./provider-session.js";

export interface SessionManagerOptions {
  heartbeatIntervalMs: number;
  /** Verifies attestations, runs challenges and judges trust; without it every provider is trust none. */
  trust?: TrustManager | undefined;
}

/**
 * Owns the provider sessions: opens one per registered stream, evicts providers whose stream closed
 * or that missed three heartbeats, and drains them all at shutdown.
 */
export class SessionManager {
  private readonly sessions = new Map<
    string,
    { session: ProviderSession; outbound: Channel<ConnectResponse> }
  >();
  private readonly byMachine = new Map<string, string>();
  /**
   * Sessions that claim the machine id of an attested session, by their provider id: they replace it
   * only once they pass a challenge with its signing key (see open()).
   */
  private readonly contenders = new Map<string, { machineId: string; holder: string; keyHex: string }>();
  private readonly watchdog: NodeJS.Timeout;
  private readonly trust: TrustManager | undefined;

  constructor(
    private readonly registry: ProviderRegistry,
    private readonly options: SessionManagerOptions,
    private readonly log: Logger,
    private readonly metrics?: CoordinatorMetrics,
  ) {
    this.trust = options.trust;
    this.watchdog = setInterval(() => this.evictSilent(), Math.max(50, options.heartbeatIntervalMs / 2));
    this.watchdog.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  get(providerId: string): ProviderSession | undefined {
    return this.sessions.get(providerId)?.session;
  }

  all(): ProviderSession[] {
    return [...this.sessions.values()].map((s) => s.session);
  }

  /**
   * Opens a session for a validated Register; the returned channel is the stream's outbound half.
   * `payoutAccount` is the account its account_token resolved to (default: one per machine).
   */
  open(
    register: Register,
    options: { payoutAccount?: string | undefined } = {},
  ): { session: ProviderSession; outbound: Channel<ConnectResponse> } {
    const previous = register.machineId ? this.byMachine.get(register.machineId) : undefined;
    // A machine whose session holds a verified attestation key is only replaced by a session that
    // proves that key (a passed challenge): anyone may send a Register with a machine id, which is
    // published, as the attestation blob and key are. Without an attested key there is nothing to
    // protect, and the newest session wins at once (a reconnect over a half-open stream).
    const guardedKey = previous !== undefined ? this.attestedKeyOf(previous) : undefined;
    if (previous && guardedKey === undefined) this.evict(previous, "replaced_by_new_session");

    const id = `prov_${randomBytes(9).toString("base64url")}`;
    const outbound = new Channel<ConnectResponse>();
    const handle = new ProviderHandle({
      id,
      machineId: register.machineId,
      daemonVersion: register.daemonVersion,
      engineBackend: register.engineBackend,
      hardware: register.hardware,
      models: register.models,
      maxBatch: register.capacity?.maxBatch ?? 1,
      maxContext: register.capacity?.maxContext ?? 0,
      // The trust manager judges the attestation below; until then the provider is untrusted.
      trustLevel: TrustLevel.NONE,
      connectedAt: Date.now(),
      ...(options.payoutAccount ? { payoutAccount: options.payoutAccount } : {}),
      performance: this.registry.performance.of(register.machineId || id),
      send: (m) => outbound.offer(m),
    });
    const session = new ProviderSession(handle, outbound, this.log, () =>
      this.registry.capacityChanged(handle),
    );
    const trust = this.trust?.attach(
      handle,
      register,
      (m) => session.send(m),
      () => {
        this.registry.capacityChanged(handle);
        this.settleContender(id);
      },
    );
    if (previous && guardedKey !== undefined) {
      if (trust?.publicKeyHex !== guardedKey) {
        this.trust?.detach(id);
        session.close("machine_id_in_use");
        this.log.warn(
          { machineId: register.machineId, holder: previous },
          "provider refused: its machine id belongs to an attested session with another key",
        );
        throw new ConnectError(
          `machine_id ${register.machineId} is held by an attested provider session; a new session ` +
            "replaces it only by attesting with the same signing key",
          Code.AlreadyExists,
        );
      }
      this.contenders.set(id, { machineId: register.machineId, holder: previous, keyHex: guardedKey });
    }
    if (trust) {
      // Evidence from the data path: untrusted (remembered for this machine and key, so reconnecting
      // does not clear it), then evicted so its in-flight requests fail over at once.
      session.onUntrusted = (code, message) => {
        trust.markUntrusted(code, message);
        this.evict(id, code);
      };
      session.onAttestationResponse = (response) => trust.onChallengeResponse(response);
    }
    this.sessions.set(id, { session, outbound });
    if (register.machineId && !this.contenders.has(id)) this.byMachine.set(register.machineId, id);
    outbound.push(
      create(ConnectResponseSchema, {
        message: {
          case: "registerAck",
          value: {
            providerId: id,
            trustLevel: handle.trustLevel,
            heartbeatIntervalMs: this.options.heartbeatIntervalMs,
            protocolVersion: register.protocolVersion,
          },
        },
      }),
    );
    this.registry.add(handle);
    trust?.start(); // the first RuntimeStatus and challenge follow the RegisterAck
    this.metrics?.providersConnected.set(this.sessions.size);
    this.log.info(
      {
        providerId: id,
        machineId: register.machineId,
        version: register.daemonVersion,
        models: register.models.map((m) => m.id),
        maxBatch: handle.maxBatch,
        payoutAccount: handle.payoutAccount,
        trustLevel: handle.trustLevel,
      },
      "provider registered",
    );
    return { session, outbound };
  }

  /**
   * Removes a provider: fails its in-flight requests (their dispatchers retry or report), and ends
   * its stream with the given error (or cleanly when none).
   */
  evict(providerId: string, reason: string, error?: ConnectError): void {
    const entry = this.sessions.get(providerId);
    if (!entry) return;
    this.sessions.delete(providerId);
    const { session, outbound } = entry;
    this.contenders.delete(providerId);
    if (this.byMachine.get(session.handle.machineId) === providerId) {
      this.byMachine.delete(session.handle.machineId);
      // The holder is gone (its stream ended, or it went silent): a contender for its machine id
      // takes its place, to be judged by its own challenges like any session.
      for (const [contender, c] of this.contenders) {
        if (c.holder !== providerId) continue;
        this.contenders.delete(contender);
        this.byMachine.set(c.machineId, contender);
        break;
      }
    }
    this.registry.remove(providerId, reason);
    this.trust?.detach(providerId);
    session.close(reason);
    if (error) outbound.fail(error);
    else outbound.close();
    this.metrics?.providersConnected.set(this.sessions.size);
    this.metrics?.providerEvictions.inc({ reason });
    this.log.info({ providerId, reason }, "provider removed");
  }

  /** The hex signing key of a session whose attestation verified and whose challenge passed lately. */
  private attestedKeyOf(providerId: string): string | undefined {
    const trust = this.trust?.get(providerId);
    return trust?.judgement().attested ? trust.publicKeyHex : undefined;
  }

  /** A contender that has proved the holder's key (a passed challenge) replaces the holder. */
  private settleContender(providerId: string): void {
    const c = this.contenders.get(providerId);
    if (!c || this.attestedKeyOf(providerId) !== c.keyHex) return;
    this.contenders.delete(providerId);
    this.evict(c.holder, "replaced_by_new_session");
    this.byMachine.set(c.machineId, providerId);
  }

  /** Sends Drain to every provider, waits for their in-flight work up to the deadline, then closes all. */
  async drainAll(reason: string, deadlineMs: number): Promise<void> {
    for (const { session } of this.sessions.values()) session.drain(reason, deadlineMs);
    const until = Date.now() + deadlineMs;
    while (Date.now() < until && this.all().some((s) => s.activeCalls > 0)) {
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const id of [...this.sessions.keys()]) this.evict(id, reason);
  }

  close(): void {
    clearInterval(this.watchdog);
    for (const id of [...this.sessions.keys()]) this.evict(id, "coordinator_shutdown");
  }

  private evictSilent(): void {
    const limit = this.options.heartbeatIntervalMs * MISSED_HEARTBEATS_BEFORE_EVICTION;
    const now = Date.now();
    for (const [id, { session }] of this.sessions) {
      if (now - session.handle.lastHeartbeatAt > limit) {
        this.log.warn(
          { providerId: id, silentMs: now - session.handle.lastHeartbeatAt },
          "provider missed heartbeats",
        );
        this.evict(
          id,
          "missed_heartbeats",
          new ConnectError(
            `no heartbeat for ${now - session.handle.lastHeartbeatAt} ms`,
            Code.DeadlineExceeded,
          ),
        );
      }
    }
  }
}
