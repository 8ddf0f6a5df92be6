// What a ProviderLink is configured with and what it reports: the contract between the daemon and
// its link to the coordinator, kept apart from the parts that implement it.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { BackoffPolicy } from "@darkbloom/protocol";
import type {
  AttestationChallenge,
  AttestationResponseSchema,
  Cancel,
  Drain,
  Heartbeat,
  InferenceRequest,
  RegisterAck,
  RuntimeStatus,
  SignedAttestationSchema,
  TpmEvidenceSchema,
} from "@darkbloom/protocol/provider/v1";
import type { BoxKeyPair } from "@darkbloom/protocol/sealed-box";
import type { Logger } from "pino";
import type { Engine, ModelFile } from "../engine/engine.js";
import type { HardwareInit } from "../machine/hardware.js";

/** The serving settings reported at register. */
export interface ServingKnobs {
  /** 4 or 8; 0 when the KV cache is unquantized. */
  kvBits: number;
  maxContext: number;
  maxBatch: number;
  idleTimeoutMinutes: number;
  threads: number;
}

export interface ProviderLinkOptions {
  /** The coordinator's base URL, e.g. http://127.0.0.1:8080. */
  coordinatorUrl: string;
  engine: Engine;
  /** The models registered; requests and LoadModel for others are refused. */
  models: ModelFile[];
  /** Stable across reconnects and restarts. */
  machineId: string;
  /**
   * The provider's X25519 key pair: its public key is registered; requests must arrive sealed to it
   * (plaintext ones are refused) and every chunk goes back sealed to the request's ephemeral key.
   */
  encryptionKey: BoxKeyPair;
  /**
   * Signs each response (InferenceComplete.signature) with the attestation key: ECDSA P-256 over
   * SHA-256, DER. The daemon passes its attestation signer; without one responses go unsigned.
   */
  responseSigner?: ResponseSigner | undefined;
  /** From `darkbloom login`; empty when unlinked. */
  accountToken?: string;
  daemonVersion: string;
  hardware: HardwareInit;
  knobs: ServingKnobs;
  /** Overrides the RegisterAck's heartbeat interval. */
  heartbeatIntervalMs?: number | undefined;
  /** Overrides of the reconnect policy (1 s doubling to 30 s, ±20%). */
  backoff?: Partial<BackoffPolicy>;
  /** Jitter source (tests). */
  random?: () => number;
  /** A loaded model that served a request this recently is reported warm (default 5 minutes). */
  warmWindowMs?: number;
  /** Attests the machine at register and answers challenges; without it the provider is trust none. */
  attestor?: LinkAttestor | undefined;
  /** Told how each request ended (the daemon's metrics). */
  observer?: LinkObserver | undefined;
  logger: Logger;
}

/**
 * How a request ended. completed: InferenceComplete sent; refused: an InferenceError before any
 * generation started (draining, a model not served, a body that cannot be opened or read); failed:
 * an InferenceError after it was accepted; cancelled: the coordinator's Cancel; abandoned: the stream
 * ended while it ran. The heartbeat's requests_failed counts refused and failed together.
 */
export type RequestOutcome = "completed" | "refused" | "failed" | "cancelled" | "abandoned";

export const REQUEST_OUTCOMES: readonly RequestOutcome[] = [
  "completed",
  "refused",
  "failed",
  "cancelled",
  "abandoned",
];

/** What the link reports as it serves, beside its counters. Called synchronously; must not throw. */
export interface LinkObserver {
  requestFinished(model: string, outcome: RequestOutcome): void;
}

/** What the link needs to sign responses (the attestation signer implements it). */
export interface ResponseSigner {
  /** ECDSA-SHA256 over `data`, DER encoded. */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

/** What the link needs of attestation (trust/attestor.ts implements it). */
export interface LinkAttestor {
  /** Register.attestation: the blob signed at start, its signature and the signer's public key. */
  readonly attestation: MessageInitShape<typeof SignedAttestationSchema>;
  /** Register.tpm: the EK certificate and attestation key of a TPM signer. */
  readonly tpm?: MessageInitShape<typeof TpmEvidenceSchema> | undefined;
  /** The answer to a challenge; `models` are the loaded models with their registered weight hashes. */
  respond(
    challenge: AttestationChallenge,
    models: ReadonlyArray<{ id: string; sha256: string }>,
  ): Promise<MessageInitShape<typeof AttestationResponseSchema>>;
}

/** rejected: the coordinator refused the registration itself (bad token, protocol version): final. */
export type DisconnectReason = "drained" | "closed_by_coordinator" | "error" | "stopped" | "rejected";

export interface LinkDisconnect {
  reason: DisconnectReason;
  providerId: string | undefined;
  error?: unknown;
  /** Delay before the next attempt; undefined when the link stopped. */
  reconnectInMs?: number | undefined;
}

export interface ProviderLinkEvents {
  registered: [RegisterAck];
  disconnected: [LinkDisconnect];
  request: [InferenceRequest];
  cancel: [Cancel];
  drain: [Drain];
  heartbeat: [Heartbeat];
  runtimeStatus: [RuntimeStatus];
}

/** Counters since the link was created. */
export interface LinkCounters {
  requestsCompleted: number;
  requestsFailed: number;
  requestsCancelled: number;
  registrations: number;
  heartbeatsSent: number;
}
