import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  ATTESTATION_SIGNERS,
  type AttestationSignerName,
  CHALLENGE_NONCE_BYTES,
  compareSemver,
  isSemver,
  trustLevelName,
  trustRank,
} from "@darkbloom/protocol";
import {
  type AttestationResponse,
  type ConnectResponse,
  ConnectResponseSchema,
  type Register,
  type SignedAttestation,
  type SignerKind,
  TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import type { Logger } from "../log.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { RegistrationVerdict, VerifiedAttestation } from "./attestation.js";
import { checkChallengeResponse, STICKY_FINDINGS } from "./challenge.js";
import type { NonceBook } from "./nonce-book.js";
import { TrustCode, type TrustFinding } from "./reasons.js";
import { type TpmPolicy, TpmSessionTrust } from "./tpm-session.js";

/** The timings and thresholds of challenges and the routing gate. */
export interface TrustTimings {
  /** A challenge is issued at registration and then this often (default 5 minutes). */
  challengeIntervalMs: number;
  /** A challenge unanswered this long has expired (default 30 s). */
  challengeTimeoutMs: number;
  /** After a failed or expired challenge the next one comes this soon (default 60 s, at most the interval). */
  challengeRetryMs: number;
  /** Routing (above trust none) needs a passed challenge younger than this (default 6 minutes). */
  challengeFreshnessMs: number;
  /** This many failed or expired challenges in a row make a provider untrusted (default 3). */
  maxFailedChallenges: number;
}

/** What every provider's trust state reads from the coordinator. */
export interface TrustContext {
  timings: TrustTimings;
  /** The coordinator's minimum trust level for routing. */
  minTrust: TrustLevel;
  /** The active releases' binary hashes (empty: any binary is accepted). */
  binaryAllowlist(): ReadonlySet<string>;
  /** The effective minimum daemon version ("" for none). */
  minProviderVersion(): string;
  nonces: NonceBook;
  /** What TPM-signed sessions are held to. */
  tpmPolicy: TpmPolicy;
  log: Logger;
  /** Counts challenge outcomes (metrics). */
  onChallengeResult?: (result: ChallengeResult) => void;
  /** Told when the data path marks a provider untrusted (to remember it across reconnects). */
  onMarkedUntrusted?: (trust: ProviderTrust, code: string, message: string) => void;
}

export type ChallengeResult = "passed" | "failed" | "expired";

/** The latest challenge of a provider, as published. */
export interface ChallengeRecord {
  issuedAt: number;
  completedAt: number | undefined;
  result: ChallengeResult | "pending";
  reason: TrustFinding | undefined;
}

/** How the coordinator judges a provider now. */
export interface Judgement {
  trustLevel: TrustLevel;
  routable: boolean;
  /** Whether a challenge passed within the freshness window (the routing gate above trust none). */
  fresh: boolean;
  /** Fresh, and the latest completed challenge passed (X-Provider-Attested). */
  attested: boolean;
  reasons: TrustFinding[];
}

interface Outstanding {
  nonce: Uint8Array;
  nonceHex: string;
  timestampMs: bigint;
  timer: NodeJS.Timeout;
  /** The secret of the TPM credential this challenge carried. */
  tpmSecret?: Uint8Array | undefined;
}

/**
 * One provider session's trust: the verdict on its Register, its challenges (single-use nonce,
 * deadline, signature and status checks, strikes), the findings from the data path, and the
 * judgement (trust level, routable, reasons) kept on its routing handle and sent to the provider as
 * RuntimeStatus whenever it changes.
 *
 * Rules:
 * - trust level: what the attestation earns (none / self_signed / hardware; a TPM-signed session
 *   rises from self_signed to tpm once its TPM checks pass, see TpmSessionTrust), or none while any
 *   violation stands, the binary is not allowlisted, or `maxFailedChallenges` challenges in a row
 *   failed or expired;
 * - violations are sticky for the session: SIP or Secure Boot disabled, a model hash that is not the
 *   registered one, a bad challenge signature, a replayed nonce, a duplicate key, and whatever the data
 *   path reports through markUntrusted (which also de-routes);
 * - routable: not de-routed (data-path findings, daemon below the minimum version), trust level at
 *   least the coordinator's minimum, and, when that minimum is above none, a passed challenge younger
 *   than the freshness window.
 */
export class ProviderTrust {
  readonly attestation: VerifiedAttestation | undefined;
  /** The attestation as presented at registration (verified or not), for publication. */
  readonly presented: SignedAttestation | undefined;
  readonly machineId: string;
  /** A TPM-signed session's TPM state. */
  readonly tpm: TpmSessionTrust | undefined;
  lastChallenge: ChallengeRecord | undefined;
  lastPassedAt: number | undefined;

  private readonly level: TrustLevel;
  private readonly notes: TrustFinding[];
  private readonly violations = new Map<string, string>();
  private readonly models: ReadonlyMap<string, string>;
  private binarySha256: string | undefined;
  private strikes = 0;
  /** The result of the latest completed challenge. */
  private latestResult: ChallengeResult | undefined;
  private strikeCode: string = TrustCode.challengeFailed;
  private deRouted = false;
  private outstanding: Outstanding | undefined;
  private nextChallenge: NodeJS.Timeout | undefined;
  private staleTimer: NodeJS.Timeout | undefined;
  private sentKey: string | undefined;
  /** RuntimeStatus is sent only after start() (the RegisterAck goes first). */
  private started = false;
  private closed = false;

  constructor(
    readonly handle: ProviderHandle,
    register: Register,
    verdict: RegistrationVerdict,
    private readonly ctx: TrustContext,
    private readonly send: (message: ConnectResponse) => boolean,
    private readonly onChange: () => void,
  ) {
    this.attestation = verdict.attestation;
    this.presented = register.attestation;
    this.machineId = register.machineId;
    this.level = verdict.level;
    this.notes = verdict.notes;
    for (const v of verdict.violations) this.violations.set(v.code, v.message);
    this.models = new Map(register.models.map((m) => [m.id, m.weightSha256]));
    this.binarySha256 = verdict.attestation?.document.binary_sha256;
    this.tpm = verdict.tpm && new TpmSessionTrust(verdict.tpm, ctx.tpmPolicy);
    this.evaluate();
  }

  get providerId(): string {
    return this.handle.id;
  }

  /** The signing key as lowercase hex, when the attestation verified. */
  get publicKeyHex(): string | undefined {
    return this.attestation?.publicKeyHex;
  }

  /** Sends the first RuntimeStatus and, for a verified attestation, the first challenge. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.evaluate();
    if (this.attestation) this.issueChallenge();
  }

  /**
   * Marks the provider untrusted for the rest of its session and stops routing to it (the data path
   * calls this on evidence: a plaintext or wrongly keyed chunk, a bad response signature).
   */
  markUntrusted(code: string, message: string): void {
    if (this.closed) return;
    this.ctx.log.warn({ providerId: this.providerId, code, reason: message }, "provider marked untrusted");
    this.ctx.onMarkedUntrusted?.(this, code, message);
    this.quarantine(code, message);
  }

  /** Untrusted and de-routed for this session (a finding carried over from an earlier session). */
  quarantine(code: string, message: string): void {
    if (this.closed) return;
    this.violations.set(code, message);
    this.deRouted = true;
    this.evaluate();
  }

  /** Records a violation without de-routing (e.g. a duplicate key found on another session). */
  addViolation(code: string, message: string): void {
    if (this.closed || this.violations.get(code) === message) return;
    this.violations.set(code, message);
    this.evaluate();
  }

  /** Re-evaluates against the current policy (releases changed). */
  recheck(): void {
    if (!this.closed) this.evaluate();
  }

  /**
   * Judges a TPM session's EK certificate again (the EK CAs changed). A session certified now is
   * challenged at once, with the credential, rather than at its next interval (up to 5 minutes).
   */
  recertifyTpm(): void {
    if (this.closed || !this.tpm?.recertify()) return;
    this.evaluate();
    if (this.started && this.tpm.ekCertified && !this.tpm.activatedKey && !this.outstanding) {
      clearTimeout(this.nextChallenge);
      this.issueChallenge();
    }
  }

  /** The judgement now, without side effects. */
  judgement(now = Date.now()): Judgement {
    return this.judge(now);
  }

  /** Handles an AttestationResponse from the provider. */
  onChallengeResponse(response: AttestationResponse): void {
    if (this.closed) return;
    const nonceHex = Buffer.from(response.nonce).toString("hex");
    const entry = this.ctx.nonces.get(nonceHex);
    if (!entry) {
      this.ctx.log.warn({ providerId: this.providerId }, "attestation response to no challenge ignored");
      return;
    }
    if (entry.providerId !== this.providerId || entry.state === "answered") {
      this.addViolation(
        TrustCode.replayedNonce,
        entry.providerId !== this.providerId
          ? "an attestation response carried a nonce issued to another provider"
          : "an attestation response carried a nonce that was already answered",
      );
      return;
    }
    if (entry.state === "expired" || this.outstanding?.nonceHex !== nonceHex) {
      this.ctx.log.info({ providerId: this.providerId }, "late answer to an expired challenge ignored");
      return;
    }
    const challenge = this.outstanding;
    this.outstanding = undefined;
    clearTimeout(challenge.timer);
    this.ctx.nonces.set(nonceHex, this.providerId, "answered");
    this.complete(this.check(challenge, response));
  }

  /** Stops the challenges; the session has ended. */
  close(): void {
    this.closed = true;
    clearTimeout(this.nextChallenge);
    clearTimeout(this.staleTimer);
    if (this.outstanding) {
      clearTimeout(this.outstanding.timer);
      this.ctx.nonces.set(this.outstanding.nonceHex, this.providerId, "expired");
      this.outstanding = undefined;
    }
  }

  private check(challenge: Outstanding, response: AttestationResponse): TrustFinding[] {
    const attestation = this.attestation;
    if (!attestation) return [{ code: TrustCode.challengeFailed, message: "no attestation key" }];
    const { findings, status } = checkChallengeResponse(
      challenge,
      response,
      attestation.publicKey,
      this.models,
    );
    for (const f of findings) if (STICKY_FINDINGS.has(f.code)) this.violations.set(f.code, f.message);
    if (status && this.tpm) {
      const tpm = this.tpm.check(challenge, response);
      for (const f of tpm.sticky) this.violations.set(f.code, f.message);
      findings.push(...tpm.findings);
    }
    if (status) {
      this.binarySha256 = status.binary_sha256;
      const unknown = this.unknownBinary();
      if (unknown) findings.push(unknown);
    }
    return findings;
  }

  private complete(findings: TrustFinding[]): void {
    const now = Date.now();
    const passed = findings.length === 0;
    const record = this.lastChallenge;
    if (record) {
      record.completedAt = now;
      record.result = passed ? "passed" : "failed";
      record.reason = findings[0];
    }
    this.latestResult = passed ? "passed" : "failed";
    if (passed) {
      this.strikes = 0;
      this.lastPassedAt = now;
    } else {
      this.strikes++;
      this.strikeCode = TrustCode.challengeFailed;
    }
    this.ctx.onChallengeResult?.(passed ? "passed" : "failed");
    if (!passed) {
      this.ctx.log.warn(
        { providerId: this.providerId, reasons: findings.map((f) => f.code), strikes: this.strikes },
        "attestation challenge failed",
      );
    }
    this.evaluate();
    this.schedule(passed);
  }

  private expire(challenge: Outstanding): void {
    if (this.closed || this.outstanding !== challenge) return;
    this.outstanding = undefined;
    this.ctx.nonces.set(challenge.nonceHex, this.providerId, "expired");
    const record = this.lastChallenge;
    if (record) {
      record.completedAt = Date.now();
      record.result = "expired";
      record.reason = {
        code: TrustCode.challengeExpired,
        message: `no answer within ${this.ctx.timings.challengeTimeoutMs} ms`,
      };
    }
    this.latestResult = "expired";
    this.strikes++;
    this.strikeCode = TrustCode.challengeExpired;
    this.ctx.onChallengeResult?.("expired");
    this.ctx.log.warn(
      { providerId: this.providerId, strikes: this.strikes },
      "attestation challenge expired",
    );
    this.evaluate();
    this.schedule(false);
  }

  private issueChallenge(): void {
    if (this.closed || this.outstanding) return;
    const nonce = new Uint8Array(randomBytes(CHALLENGE_NONCE_BYTES));
    const nonceHex = Buffer.from(nonce).toString("hex");
    const issuedAt = Date.now();
    const timestampMs = BigInt(issuedAt);
    const offer = this.tpm?.credentialOffer();
    const challenge: Outstanding = {
      nonce,
      nonceHex,
      timestampMs,
      timer: setTimeout(() => this.expire(challenge), this.ctx.timings.challengeTimeoutMs),
      tpmSecret: offer?.secret,
    };
    challenge.timer.unref?.();
    this.outstanding = challenge;
    this.ctx.nonces.set(nonceHex, this.providerId, "outstanding");
    this.lastChallenge = { issuedAt, completedAt: undefined, result: "pending", reason: undefined };
    this.send(
      create(ConnectResponseSchema, {
        message: {
          case: "attestationChallenge",
          value: { nonce, timestampMs, ...(offer ? { tpmCredential: offer.credential } : {}) },
        },
      }),
    );
  }

  private schedule(passed: boolean): void {
    if (this.closed) return;
    clearTimeout(this.nextChallenge);
    const { challengeIntervalMs, challengeRetryMs } = this.ctx.timings;
    const delay = passed ? challengeIntervalMs : Math.min(challengeRetryMs, challengeIntervalMs);
    this.nextChallenge = setTimeout(() => this.issueChallenge(), delay);
    this.nextChallenge.unref?.();
  }

  private unknownBinary(): TrustFinding | undefined {
    const allowlist = this.ctx.binaryAllowlist();
    if (!this.attestation || allowlist.size === 0 || this.binarySha256 === undefined) return undefined;
    if (allowlist.has(this.binarySha256)) return undefined;
    return {
      code: TrustCode.unknownBinary,
      message: `binary ${this.binarySha256.slice(0, 12)}… is not in an active release`,
    };
  }

  private versionFinding(): TrustFinding | undefined {
    const min = this.ctx.minProviderVersion();
    if (min === "") return undefined;
    const version = this.handle.daemonVersion;
    if (isSemver(version) && compareSemver(version, min) >= 0) return undefined;
    return {
      code: TrustCode.versionBelowMinimum,
      message: `daemon ${version || "(no version)"} is below the minimum provider version ${min}`,
    };
  }

  private judge(now: number): Judgement {
    const reasons: TrustFinding[] = [...this.notes, ...(this.tpm?.notes() ?? [])];
    for (const [code, message] of this.violations) reasons.push({ code, message });
    const max = this.ctx.timings.maxFailedChallenges;
    const struckOut = this.strikes >= max;
    if (struckOut) {
      reasons.push({
        code: this.strikeCode,
        message: `${this.strikes} challenges in a row ${this.strikeCode === TrustCode.challengeExpired ? "expired" : "failed"}`,
      });
    }
    const unknown = this.unknownBinary();
    if (unknown) reasons.push(unknown);
    const version = this.versionFinding();
    if (version) reasons.push(version);
    const fresh =
      this.attestation !== undefined &&
      this.lastPassedAt !== undefined &&
      now - this.lastPassedAt < this.ctx.timings.challengeFreshnessMs;
    const attested = fresh && this.latestResult === "passed";
    if (this.attestation && !fresh) {
      reasons.push({
        code: TrustCode.attestationStale,
        message: `no passed challenge in the last ${Math.round(this.ctx.timings.challengeFreshnessMs / 1000)} s`,
      });
    }
    const untrusted = this.violations.size > 0 || struckOut || unknown !== undefined;
    const earned = this.level === TrustLevel.SELF_SIGNED && this.tpm?.earned ? TrustLevel.TPM : this.level;
    const trustLevel = untrusted ? TrustLevel.NONE : earned;
    const routable =
      !this.deRouted &&
      version === undefined &&
      trustRank(trustLevel) >= trustRank(this.ctx.minTrust) &&
      (trustRank(this.ctx.minTrust) <= trustRank(TrustLevel.NONE) || fresh);
    return { trustLevel, routable, fresh, attested, reasons };
  }

  /** Applies the judgement to the routing handle; returns its key (what RuntimeStatus reports). */
  private apply(j: Judgement): string {
    this.handle.applyJudgement({
      trustLevel: j.trustLevel,
      deRouted: this.deRouted || j.reasons.some((r) => r.code === TrustCode.versionBelowMinimum),
      attestedUntil:
        j.fresh && this.lastPassedAt !== undefined
          ? this.lastPassedAt + this.ctx.timings.challengeFreshnessMs
          : 0,
      latestChallengePassed: this.latestResult === "passed",
    });
    return `${j.trustLevel}|${j.routable}|${j.reasons.map((r) => r.code).join(",")}`;
  }

  /**
   * Judges now, applies it to the handle, and (once started) sends RuntimeStatus when the judgement
   * differs from the last one sent.
   */
  private evaluate(): void {
    if (this.closed) return;
    const now = Date.now();
    const j = this.judge(now);
    const key = this.apply(j);
    clearTimeout(this.staleTimer);
    if (j.fresh && this.lastPassedAt !== undefined) {
      // Re-judge when the passed challenge goes stale.
      const wait = this.lastPassedAt + this.ctx.timings.challengeFreshnessMs - now;
      this.staleTimer = setTimeout(() => this.evaluate(), Math.max(1, wait));
      this.staleTimer.unref?.();
    }
    if (!this.started || key === this.sentKey) return;
    this.sentKey = key;
    this.ctx.log.info(
      {
        providerId: this.providerId,
        trustLevel: trustLevelName(j.trustLevel),
        routable: j.routable,
        reasons: j.reasons.map((r) => r.code),
      },
      "provider trust judgement",
    );
    this.send(
      create(ConnectResponseSchema, {
        message: {
          case: "runtimeStatus",
          value: { trustLevel: j.trustLevel, routable: j.routable, reasons: j.reasons },
        },
      }),
    );
    this.onChange();
  }
}

/** The signer kind's public name. */
export function signerName(kind: SignerKind | undefined): AttestationSignerName | null {
  const entry = Object.entries(ATTESTATION_SIGNERS).find(([, k]) => k === kind);
  return entry ? (entry[0] as AttestationSignerName) : null;
}
