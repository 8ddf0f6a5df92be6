import { compareSemver } from "@darkbloom/protocol";
import type { ConnectResponse, Register, TrustLevel } from "@darkbloom/protocol/provider/v1";
import type { Logger } from "../log.js";
import type { ReleasePolicy } from "../releases/release-store.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import { type RegistrationPolicy, type RegistrationVerdict, verifyRegistration } from "./attestation.js";
import { EkCaFile } from "./ek-ca-file.js";
import type { KeyQuarantineStore } from "./key-quarantine.js";
import { NonceBook } from "./nonce-book.js";
import {
  type ChallengeResult,
  ProviderTrust,
  type TrustContext,
  type TrustTimings,
} from "./provider-trust.js";
import { TrustCode } from "./reasons.js";
import type { EkTrustStore } from "./tpm/index.js";

export interface TrustManagerOptions extends TrustTimings {
  /** The coordinator's minimum trust level for routing. */
  minTrust: TrustLevel;
  /** The coordinator's own minimum daemon version ("" for none); releases may raise it. */
  minProviderVersion: string;
  /** Hex SEC1 keys of Secure Enclave keys enrolled as hardware-bound (the only way to HARDWARE). */
  hardwareKeys: ReadonlySet<string>;
  /** The TPM manufacturers' EK CAs (none: TPM-signed providers stay self_signed). */
  ekRoots?: EkTrustStore | undefined;
  /** Or a PEM file of them, re-read when it changes (EkCaFile); ekRoots wins when both are given. */
  ekCaFile?: string | undefined;
  /** Allowed boot states of TPM providers (hex PCR digests; empty: any). */
  tpmPcrAllowlist?: ReadonlySet<string>;
  /** How often the release policy is reloaded to pick up other replicas' changes (default 10 s). */
  policyRefreshMs?: number;
  /**
   * How long a signing key marked untrusted by the data path stays untrusted, so that reconnecting
   * (under any machine id) does not clear the finding (default one hour).
   */
  quarantineMs?: number;
  /**
   * Where quarantined keys are kept so that every coordinator sharing the database, and this one after
   * a restart, honours them (PostgreSQL). Without it (tests without a database) quarantine holds in
   * this process only.
   */
  quarantineStore?: KeyQuarantineStore | undefined;
}

/** A quarantined key's finding, as this process knows it. */
interface Quarantined {
  code: string;
  message: string;
  /** Until when it holds, by this process's clock. */
  until: number;
  /**
   * Found here and not (yet) known to be stored: a database read that lacks it does not clear it.
   * False once the write committed, and for what was read from the database.
   */
  local: boolean;
}

/** Where the release policy comes from (the release store). */
export interface PolicySource {
  policy(): Promise<ReleasePolicy>;
}

/**
 * The coordinator's trust authority: verifies each Register's attestation, keeps every session's
 * ProviderTrust (challenges, judgement), enforces one signing key per machine, and re-checks the whole
 * connected fleet when the release policy (binary allowlist, minimum version) changes.
 *
 * Duplicate keys: when two live providers with different machine ids present the same signing key,
 * the key is no longer evidence of one machine; both are flagged `duplicate_key` (untrusted), and the
 * key stays flagged for the life of this coordinator process, so later registrations with it are
 * flagged too. A reconnect of the same machine id replaces its old session first and is not a
 * duplicate.
 *
 * Quarantine: a data-path finding (markUntrusted) is remembered for the session's signing key, and only
 * once the session has proven that key by passing a challenge. Never for a machine id: machine ids are
 * public, and anyone could otherwise get a machine's id quarantined by misbehaving under it. Nor for
 * an unproven key: attestations are published and can be replayed by a session that cannot sign.
 * With a quarantine store the finding is written to PostgreSQL (extending a quarantine the key already
 * has), and every registration reads its key's quarantine from there first (loadQuarantine, before the
 * synchronous attach), so that it holds on every replica and across restarts. A finding whose write
 * failed still holds here until it expires.
 */
export class TrustManager {
  private readonly trusts = new Map<string, ProviderTrust>();
  private readonly byKey = new Map<string, Set<ProviderTrust>>();
  private readonly sharedKeys = new Set<string>();
  /**
   * Signing key (hex) → the finding and until when it holds: this process's findings, and what the
   * latest registration with the key read from the quarantine store.
   */
  private readonly quarantined = new Map<string, Quarantined>();
  /** Quarantine writes in flight, by signing key (they never reject: a failure is logged). */
  private readonly writes = new Map<string, Promise<void>>();
  private readonly nonces = new NonceBook();
  private readonly context: TrustContext;
  private readonly registrationPolicy: RegistrationPolicy;
  private policy: ReleasePolicy = { binaryAllowlist: new Set(), minProviderVersion: "" };
  private timer: NodeJS.Timeout | undefined;
  /** The EK CA bundle file, re-read on the policy timer (connected TPM sessions are re-judged). */
  private readonly ekCaFile: EkCaFile | undefined;

  constructor(
    private readonly options: TrustManagerOptions,
    private readonly source: PolicySource | undefined,
    private readonly log: Logger,
    onChallengeResult?: (result: ChallengeResult) => void,
  ) {
    this.ekCaFile =
      options.ekRoots || options.ekCaFile === undefined
        ? undefined
        : new EkCaFile(options.ekCaFile, log, {
            checkEveryMs: options.policyRefreshMs ?? 10_000,
            onChange: () => {
              for (const trust of this.trusts.values()) trust.recertifyTpm();
            },
          });
    const file = this.ekCaFile;
    const ekRoots = (): EkTrustStore | undefined => options.ekRoots ?? file?.current();
    this.registrationPolicy = { hardwareKeys: options.hardwareKeys };
    this.context = {
      timings: options,
      minTrust: options.minTrust,
      binaryAllowlist: () => this.policy.binaryAllowlist,
      minProviderVersion: () => this.minProviderVersion,
      nonces: this.nonces,
      tpmPolicy: { ekRoots, pcrAllowlist: options.tpmPcrAllowlist ?? new Set() },
      log,
      onMarkedUntrusted: (trust, code, message) => this.remember(trust, code, message),
      ...(onChallengeResult ? { onChallengeResult } : {}),
    };
  }

  /** The effective minimum daemon version: the higher of the configured one and the active releases'. */
  get minProviderVersion(): string {
    const a = this.options.minProviderVersion;
    const b = this.policy.minProviderVersion;
    if (a === "") return b;
    if (b === "") return a;
    return compareSemver(a, b) >= 0 ? a : b;
  }

  get binaryAllowlist(): ReadonlySet<string> {
    return this.policy.binaryAllowlist;
  }

  /** Loads the release policy and reloads it, and the EK CA bundle, periodically. */
  async start(): Promise<void> {
    await this.refreshPolicy();
    if ((!this.source && !this.ekCaFile) || this.timer) return;
    this.timer = setInterval(() => {
      this.ekCaFile?.current();
      this.refreshPolicy().catch((e: Error) =>
        this.log.warn({ err: e.message }, "could not reload the release policy; keeping the last one"),
      );
    }, this.options.policyRefreshMs ?? 10_000);
    this.timer.unref();
  }

  /** Reloads the release policy; when it changed, re-checks every connected provider. */
  async refreshPolicy(): Promise<void> {
    if (!this.source) return;
    const next = await this.source.policy();
    const before = this.policy;
    this.policy = next;
    if (
      before.minProviderVersion !== next.minProviderVersion ||
      before.binaryAllowlist.size !== next.binaryAllowlist.size ||
      [...next.binaryAllowlist].some((h) => !before.binaryAllowlist.has(h))
    ) {
      this.log.info(
        { allowlist: next.binaryAllowlist.size, minProviderVersion: this.minProviderVersion },
        "release policy changed; re-checking the connected fleet",
      );
      for (const trust of this.trusts.values()) trust.recheck();
    }
  }

  /** Verifies a Register's attestation (signature, blob, binding to the Register) without side effects. */
  verify(register: Register): RegistrationVerdict {
    return verifyRegistration(register, this.registrationPolicy);
  }

  /**
   * Reads the quarantine of a verdict's signing key from the quarantine store (after this process's own
   * write of it, if one is in flight), so that attach() applies a quarantine another replica or an
   * earlier process made, and no longer applies one that was lifted or expired meanwhile. Does nothing
   * without a store or a verified key. Database errors propagate: the caller refuses the registration
   * rather than admit a key it could not check.
   */
  async loadQuarantine(verdict: RegistrationVerdict | undefined): Promise<void> {
    const store = this.options.quarantineStore;
    const key = verdict?.attestation?.publicKeyHex;
    if (!store || key === undefined) return;
    await this.writes.get(key);
    const stored = await store.get(key);
    const known = this.quarantined.get(key);
    if (known?.local) return; // found here meanwhile, or its write failed: it stands until it expires
    if (stored) {
      this.quarantined.set(key, {
        code: stored.code,
        message: stored.message,
        until: Date.now() + stored.remainingMs,
        local: false,
      });
    } else {
      this.quarantined.delete(key);
    }
  }

  /** Stops applying a quarantine in this process (an administrator lifted it in the store). */
  forgetQuarantine(keyHex: string): void {
    this.quarantined.delete(keyHex);
  }

  /** Resolves once every quarantine write started so far has ended (committed or failed). */
  async flush(): Promise<void> {
    await Promise.all([...this.writes.values()]);
  }

  /**
   * Creates the session's trust state from a Register and its verdict (verified here when not given);
   * the handle gets its judgement at once. Nothing is sent until start() is called on the result
   * (after the RegisterAck).
   */
  attach(
    handle: ProviderHandle,
    register: Register,
    send: (message: ConnectResponse) => boolean,
    onChange: () => void,
    verdict: RegistrationVerdict = this.verify(register),
  ): ProviderTrust {
    const trust = new ProviderTrust(handle, register, verdict, this.context, send, onChange);
    this.trusts.set(handle.id, trust);
    const key = trust.publicKeyHex;
    if (key !== undefined) {
      const holders = this.byKey.get(key) ?? new Set<ProviderTrust>();
      const others = [...holders].filter((t) => t.machineId !== register.machineId);
      if (others.length > 0 || this.sharedKeys.has(key)) {
        this.sharedKeys.add(key);
        const message = "another provider presented the same attestation signing key";
        for (const t of [trust, ...others]) t.addViolation(TrustCode.duplicateKey, message);
        this.log.warn(
          { providerId: handle.id, others: others.map((t) => t.providerId) },
          "attestation key presented by more than one machine",
        );
      }
      holders.add(trust);
      this.byKey.set(key, holders);
    }
    const finding = key === undefined ? undefined : this.quarantined.get(key);
    if (key !== undefined && finding !== undefined) {
      if (finding.until <= Date.now()) this.quarantined.delete(key);
      else trust.quarantine(finding.code, finding.message);
    }
    if (verdict.violations.length > 0) {
      this.log.warn(
        { providerId: handle.id, reasons: verdict.violations.map((v) => v.code) },
        "provider attestation rejected",
      );
    }
    return trust;
  }

  /**
   * Remembers a data-path finding for the session's signing key, when the session proved it (a passed
   * challenge), here at once and in the quarantine store as soon as it can be written; otherwise the
   * finding ends with the session, which is evicted.
   */
  private remember(trust: ProviderTrust, code: string, message: string): void {
    const key = trust.publicKeyHex;
    if (key === undefined || trust.lastPassedAt === undefined) {
      this.log.info(
        { providerId: trust.providerId, code },
        "finding not remembered: the session never proved a signing key",
      );
      return;
    }
    const now = Date.now();
    const durationMs = this.options.quarantineMs ?? 60 * 60_000;
    const previous = this.quarantined.get(key);
    const until = Math.max(now + durationMs, previous && previous.until > now ? previous.until : 0);
    const finding: Quarantined = { code, message, until, local: true };
    this.quarantined.set(key, finding);
    for (const [name, f] of this.quarantined) if (f.until <= now) this.quarantined.delete(name);
    const store = this.options.quarantineStore;
    if (!store) return;
    const write = (this.writes.get(key) ?? Promise.resolve())
      .then(() => store.put(key, code, message, durationMs))
      .then(
        (stored) => {
          // The store's quarantine is the one that counts from now on (it may outlast this one).
          if (this.quarantined.get(key) !== finding) return;
          this.quarantined.set(key, {
            code: stored.code,
            message: stored.message,
            until: Date.now() + stored.remainingMs,
            local: false,
          });
        },
        (e: Error) =>
          this.log.warn(
            { providerId: trust.providerId, code, err: e.message },
            "could not store a signing key's quarantine; it holds on this coordinator only",
          ),
      )
      .finally(() => {
        if (this.writes.get(key) === write) this.writes.delete(key);
      });
    this.writes.set(key, write);
  }

  /** Forgets a session's trust state (its stream ended). */
  detach(providerId: string): void {
    const trust = this.trusts.get(providerId);
    if (!trust) return;
    trust.close();
    this.trusts.delete(providerId);
    const key = trust.publicKeyHex;
    if (key !== undefined) {
      const holders = this.byKey.get(key);
      holders?.delete(trust);
      if (holders?.size === 0) this.byKey.delete(key);
    }
  }

  get(providerId: string): ProviderTrust | undefined {
    return this.trusts.get(providerId);
  }

  all(): ProviderTrust[] {
    return [...this.trusts.values()];
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    for (const id of [...this.trusts.keys()]) this.detach(id);
  }
}
