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
import { isDatabaseUnavailable } from "../store/errors.js";
import type { RegistrationVerdict } from "../trust/attestation.js";
import type { MachineBinding, MachineBindingStore, MachineClaim } from "../trust/machine-bindings.js";
import type { TrustManager } from "../trust/trust-manager.js";
import { ProviderSession } from "./provider-session.js";

export interface SessionManagerOptions {
  heartbeatIntervalMs: number;
  /** Verifies attestations, runs challenges and judges trust; without it every provider is trust none. */
  trust?: TrustManager | undefined;
  /**
   * Which signing key each machine id belongs to (PostgreSQL). Without it (tests without a database)
   * machine ids are not bound, and a session with another key than an attested holder's replaces it.
   */
  bindings?: MachineBindingStore | undefined;
  /**
   * How often the connected sessions are checked against the bindings, so that a re-bind made through
   * another coordinator sharing the database disconnects the old key here too (default 10 s).
   */
  bindingCheckMs?: number | undefined;
}

/** Why a session was removed when its machine id was re-bound to another key. */
const REBOUND = "machine_rebound";

/**
 * How long the stream of a session caught misbehaving stays open (removed, routed nothing) while its
 * key's quarantine is written, at most.
 */
const QUARANTINE_WRITE_WAIT_MS = 5_000;

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
  /** Set by drainAll (the coordinator is stopping): registrations are refused from then on. */
  private shuttingDown = false;
  /**
   * Sessions presenting the signing key of the attested session that holds their machine id (the
   * machine reconnecting over a half-open stream), by their provider id: they replace it only once
   * they pass a challenge with that key (see open()).
   */
  private readonly contenders = new Map<string, { machineId: string; holder: string; keyHex: string }>();
  private readonly watchdog: NodeJS.Timeout;
  private readonly bindingCheck: NodeJS.Timeout | undefined;
  private checkingBindings = false;
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
    if (options.bindings) {
      this.bindingCheck = setInterval(() => void this.checkBindings(), options.bindingCheckMs ?? 10_000);
      this.bindingCheck.unref();
    }
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
   * Checks a Register's claim on its machine id against the bindings, and binds the machine id to the
   * Register's verified attestation key when no key holds it yet and the key is persistent (the first
   * attestation wins, once, across coordinators and restarts; an ephemeral key would lock its machine
   * out at its next restart). Refuses, with PermissionDenied naming the binding, a machine id
   * bound to another key, or to any key when the Register proves none; with Unavailable when the
   * database cannot be asked, rather than admit a key it could not check. Nothing of a session that
   * holds the machine id is touched by a refusal. Then loads the quarantine of the verified key from the
   * database (a finding made on any replica, or before a restart), which open() applies; refuses with
   * Unavailable when it cannot be read. Returns the attestation verdict for open().
   */
  async admit(register: Register): Promise<RegistrationVerdict | undefined> {
    if (this.shuttingDown) {
      // A provider drained by this replica's shutdown reconnects: to another replica, not here.
      throw new ConnectError(
        "this coordinator is shutting down; reconnect (to another replica)",
        Code.Unavailable,
      );
    }
    const verdict = this.trust?.verify(register);
    await this.claimMachineId(register, verdict);
    try {
      await this.trust?.loadQuarantine(verdict);
    } catch (e) {
      const machineId = register.machineId;
      if (isDatabaseUnavailable(e)) {
        this.log.warn({ machineId, err: (e as Error).message }, "provider refused: quarantine unavailable");
        throw new ConnectError(
          "the coordinator cannot check whether this attestation signing key is quarantined now (its " +
            "database is unavailable); retry later",
          Code.Unavailable,
        );
      }
      this.log.error({ machineId, err: e }, "key quarantine check failed");
      throw new ConnectError("internal error checking the signing key's quarantine", Code.Internal);
    }
    return verdict;
  }

  private async claimMachineId(register: Register, verdict: RegistrationVerdict | undefined): Promise<void> {
    const bindings = this.options.bindings;
    const machineId = register.machineId;
    if (!bindings || machineId === "") return;
    let claim: MachineClaim;
    try {
      const attestation = verdict?.attestation;
      claim = await bindings.claim(machineId, attestation?.publicKey, attestation?.document.key_persistent);
    } catch (e) {
      if (isDatabaseUnavailable(e)) {
        this.log.warn({ machineId, err: (e as Error).message }, "provider refused: bindings unavailable");
        throw new ConnectError(
          `the coordinator cannot check the binding of machine_id ${machineId} now (its database is ` +
            "unavailable); retry later",
          Code.Unavailable,
        );
      }
      this.log.error({ machineId, err: e }, "machine binding check failed");
      throw new ConnectError("internal error checking the machine_id binding", Code.Internal);
    }
    if (claim.outcome === "refused") {
      this.log.warn(
        { machineId, proven: verdict?.attestation !== undefined },
        "provider refused: its machine id is bound to another signing key",
      );
      throw new ConnectError(refusal(claim.binding, verdict), Code.PermissionDenied);
    }
    if (claim.outcome === "bound") this.log.info({ machineId }, "machine id bound to its first signing key");
  }

  /**
   * Opens a session for a validated (and admitted) Register; the returned channel is the stream's
   * outbound half. `payoutAccount` is the account its account_token resolved to (default: one per
   * machine); `verdict` is admit()'s.
   */
  open(
    register: Register,
    options: { payoutAccount?: string | undefined; verdict?: RegistrationVerdict | undefined } = {},
  ): { session: ProviderSession; outbound: Channel<ConnectResponse> } {
    const verdict = options.verdict ?? this.trust?.verify(register);
    const previous = register.machineId ? this.byMachine.get(register.machineId) : undefined;
    // The same key reconnecting while its old session still looks alive (a half-open stream) waits as
    // a contender and replaces the holder once it passes a challenge: the attestation is published,
    // so presenting the key proves nothing until it signs a fresh nonce. Any other admitted session
    // replaces the holder at once: the holder had no attested key to protect, or the machine id was
    // re-bound to the newcomer's key (admit() refused every other key).
    const guardedKey = previous !== undefined ? this.attestedKeyOf(previous) : undefined;
    const contend = guardedKey !== undefined && guardedKey === verdict?.attestation?.publicKeyHex;
    if (previous && !contend) this.evict(previous, "replaced_by_new_session");

    const id = `prov_${randomBytes(9).toString("base64url")}`;
    const outbound = new Channel<ConnectResponse>();
    // Response signatures verify with the attestation's key: a SEC1 uncompressed P-256 point.
    const attestedKey = register.attestation?.publicKey;
    const signingKey = attestedKey?.length === 65 ? attestedKey : undefined;
    const handle = new ProviderHandle({
      id,
      machineId: register.machineId,
      daemonVersion: register.daemonVersion,
      usageVersion: register.usageVersion,
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
      encryptionKey: register.encryptionPublicKey,
      signingKey,
    });
    const trust = this.trust?.attach(
      handle,
      register,
      (m) => outbound.offer(m),
      () => {
        this.registry.capacityChanged(handle);
        this.settleContender(id);
      },
      verdict,
    );
    if (previous && contend) {
      this.contenders.set(id, { machineId: register.machineId, holder: previous, keyHex: guardedKey });
    }
    const session = new ProviderSession({
      handle,
      outbound,
      log: this.log,
      encryptionKey: register.encryptionPublicKey,
      signingKey,
      onHeartbeat: () => this.registry.capacityChanged(handle),
      // Evidence from the data path: untrusted (remembered for its signing key once proven, so
      // reconnecting does not clear it), then evicted so its in-flight requests fail over at once.
      // Its stream ends once the quarantine is stored, so that however fast the daemon reconnects, and
      // to whichever replica, its key is found quarantined.
      onUntrusted: (code, message) => {
        trust?.markUntrusted(code, message);
        this.evict(id, code, undefined, trust && this.trust?.flush());
      },
      onAttestationResponse: trust && ((response) => trust.onChallengeResponse(response)),
    });
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
   * its stream with the given error (or cleanly when none), once `endAfter` settled when given (at
   * most QUARANTINE_WRITE_WAIT_MS later).
   */
  evict(providerId: string, reason: string, error?: ConnectError, endAfter?: Promise<unknown>): void {
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
    const end = () => {
      if (error) outbound.fail(error);
      else outbound.close();
    };
    if (endAfter) {
      let timer: NodeJS.Timeout | undefined;
      const cap = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, QUARANTINE_WRITE_WAIT_MS);
        timer.unref();
      });
      void Promise.race([endAfter.catch(() => undefined), cap]).then(() => {
        clearTimeout(timer);
        end();
      });
    } else {
      end();
    }
    this.metrics?.providersConnected.set(this.sessions.size);
    this.metrics?.providerEvictions.inc({ reason });
    this.log.info({ providerId, reason }, "provider removed");
  }

  /**
   * Disconnects every session of `machineId` whose signing key is not `keyHex` (an administrator
   * re-bound the machine id to it): their streams end with PermissionDenied, so the old key's daemon
   * stops rather than retries. Returns how many were disconnected.
   */
  disconnectMachine(machineId: string, keyHex: string): number {
    let count = 0;
    for (const [id, { session }] of [...this.sessions]) {
      if (session.handle.machineId !== machineId || this.trust?.get(id)?.publicKeyHex === keyHex) continue;
      if (!this.sessions.has(id)) continue;
      this.evict(id, REBOUND, reboundError(machineId));
      count++;
    }
    if (count > 0) this.log.warn({ machineId, sessions: count }, "machine id re-bound: old sessions removed");
    return count;
  }

  /**
   * Compares the sessions with the bindings in the database and disconnects those whose machine id is
   * bound to another key now (re-bound through another coordinator). Only sessions opened before the
   * read are judged: a session admitted after it may hold a binding the read predates.
   */
  async checkBindings(): Promise<void> {
    const bindings = this.options.bindings;
    if (!bindings || this.checkingBindings) return;
    this.checkingBindings = true;
    try {
      const before = [...this.sessions].filter(([, s]) => s.session.handle.machineId !== "");
      if (before.length === 0) return;
      const bound = await bindings.boundKeys([...new Set(before.map(([, s]) => s.session.handle.machineId))]);
      for (const [id, { session }] of before) {
        const key = bound.get(session.handle.machineId);
        if (key === undefined || !this.sessions.has(id) || this.trust?.get(id)?.publicKeyHex === key)
          continue;
        this.log.warn(
          { providerId: id, machineId: session.handle.machineId },
          "machine id re-bound elsewhere",
        );
        this.evict(id, REBOUND, reboundError(session.handle.machineId));
      }
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "could not check machine bindings; will retry");
    } finally {
      this.checkingBindings = false;
    }
  }

  /** The hex signing key of a session whose attestation verified and whose challenge passed lately. */
  private attestedKeyOf(providerId: string): string | undefined {
    const trust = this.trust?.get(providerId);
    return trust?.judgement().attested ? trust.publicKeyHex : undefined;
  }

  /**
   * Ends this replica's sessions of machines whose newer session another replica holds (as the
   * provider directory shows them): a machine has one session in the cluster, its latest, as it has
   * on one replica. Where the session here proved an attested key, the newer one must have proved
   * the same key (the same rule as a contender here: presenting a published key proves nothing); a
   * session without one is replaced by any newer admitted session, the binding having been checked
   * where it registered.
   */
  supersede(
    elsewhere: ReadonlyArray<{
      machineId: string;
      connectedAt: number;
      attested: boolean;
      signingKeyHex: string | undefined;
    }>,
  ): void {
    for (const e of elsewhere) {
      const id = e.machineId ? this.byMachine.get(e.machineId) : undefined;
      const held = id === undefined ? undefined : this.sessions.get(id);
      if (id === undefined || !held || e.connectedAt <= held.session.handle.connectedAt) continue;
      const key = this.attestedKeyOf(id);
      if (key !== undefined && !(e.attested && e.signingKeyHex === key)) continue;
      this.log.info({ providerId: id, machineId: e.machineId }, "machine reconnected to another replica");
      this.evict(id, "replaced_by_new_session");
    }
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
    this.shuttingDown = true;
    for (const { session } of this.sessions.values()) session.drain(reason, deadlineMs);
    const until = Date.now() + deadlineMs;
    while (Date.now() < until && this.all().some((s) => s.activeCalls > 0)) {
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const id of [...this.sessions.keys()]) this.evict(id, reason);
  }

  close(): void {
    clearInterval(this.watchdog);
    clearInterval(this.bindingCheck);
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

/** The refusal of a Register whose machine id is bound to another key: names the binding, not the key. */
function refusal(binding: MachineBinding, verdict: RegistrationVerdict | undefined): string {
  const since = binding.firstAttestedAt.toISOString();
  const rebind =
    "if the machine's key was replaced, an administrator must re-bind it (admin machines rebind)";
  if (verdict?.attestation === undefined) {
    const why = verdict?.violations[0]?.code ?? "no attestation";
    return (
      `machine_id ${binding.machineId} is bound to an attestation signing key (since ${since}); a ` +
      `registration without a verified attestation (${why}) cannot claim it`
    );
  }
  return (
    `machine_id ${binding.machineId} is bound to another attestation signing key (since ${since}); ` +
    `only that key may register it; ${rebind}`
  );
}

function reboundError(machineId: string): ConnectError {
  return new ConnectError(
    `machine_id ${machineId} was re-bound to another attestation signing key by an administrator`,
    Code.PermissionDenied,
  );
}
