// What a scripted provider is configured with, and what it reports: kept apart from the provider
// itself so that tests and benchmarks can read the contract without the machinery.
import type { KeyObject } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { BackoffPolicy } from "@darkbloom/protocol";
import type {
  AttestationChallenge,
  AttestationResponseSchema,
  Cancel,
  ConnectResponse,
  Drain,
  ModelFeature,
  RegisterAck,
  SignedAttestationSchema,
} from "@darkbloom/protocol/provider/v1";
import type { DialOptions, TransportKind } from "@darkbloom/protocol/provider-client";
import type { ForgedSignature } from "./response-signing.js";
import type { ReceivedRequest, ScriptFn } from "./script.js";
import type { SharedConnection } from "./shared-connection.js";

export interface ScriptedModel {
  id: string;
  /** Context length advertised for the model (default: the provider's maxContext). */
  contextLength?: number;
  /**
   * ModelInfo.features it registers the model with (default none). Its tokens are the script's
   * whatever the request asks: claiming GRAMMAR plays a provider that does not enforce it.
   */
  features?: ModelFeature[];
}

/** Attests a scripted provider with real signing code (security tests inject the daemon's). */
export interface ScriptedAttestor {
  /** Register.attestation, made once at start for this provider's identity and encryption key. */
  attestation(init: {
    machineId: string;
    daemonVersion: string;
    encryptionPublicKey: Uint8Array;
  }): Promise<MessageInitShape<typeof SignedAttestationSchema>>;
  /** The answer to a challenge (undefined: stay silent); `models` are the loaded models and hashes. */
  answer(
    challenge: AttestationChallenge,
    models: Array<{ id: string; weightSha256: string }>,
  ): Promise<MessageInitShape<typeof AttestationResponseSchema> | undefined>;
}

export interface ScriptedProviderOptions {
  /** The coordinator's base URL, e.g. http://127.0.0.1:8080. */
  baseUrl: string;
  /** https: the certificates trusted instead of Node's CA store (DialOptions.ca; not with `connection`). */
  ca?: DialOptions["ca"];
  models: ScriptedModel[];
  /** Capacity.max_batch: concurrent requests admitted (default 4); more are refused with a 503. */
  maxBatch?: number;
  /** Capacity.max_context (default: the largest model context, else 8192). */
  maxContext?: number;
  /** Stable across reconnects (default: a random "scripted-…" id). */
  machineId?: string;
  /** Register.account_token (default empty: unlinked). */
  accountToken?: string;
  /** Reported in heartbeats (default 50). */
  decodeTokensPerSecond?: number;
  /** Reported in heartbeats (default 500). */
  prefillTokensPerSecond?: number;
  /** Overrides RegisterAck.heartbeat_interval_ms. */
  heartbeatIntervalMs?: number;
  /** Default true; false simulates a provider whose stream stays open but that never heartbeats. */
  sendHeartbeats?: boolean;
  /** Reconnect after the stream ends, unless stopped or killed (default false). */
  reconnect?: boolean;
  /** Overrides of the protocol's RECONNECT_BACKOFF (1 s doubling to 30 s, ±20%). */
  reconnectBackoff?: Partial<BackoffPolicy>;
  /** What to answer to each request (default: 16 tokens "tok0 ".."tok15 " at once). */
  script?: ScriptFn;
  /** RPC protocol on the HTTP/2 connection (default "connect"); ignored with `connection`. */
  transport?: TransportKind;
  /**
   * Open the provider's stream on this shared HTTP/2 connection instead of dialing one of its own
   * (scale tests: thousands of providers over a few sockets). kill() and scripted disconnects then
   * reset only this provider's stream instead of destroying a socket.
   */
  connection?: SharedConnection;
  /** Answer AttestationChallenges with an unsigned AttestationResponse (default true). */
  answerChallenges?: boolean;
  /** Signs the Register's attestation and answers challenges; overrides the unsigned answers. */
  attestor?: ScriptedAttestor;
  /** Register.daemon_version (default "0.0.0-test"). */
  daemonVersion?: string;
  /**
   * End-to-end encryption (default true): registers an X25519 key, opens sealed requests, refuses
   * plaintext ones (400 encryption_required) and seals every chunk. false registers without a key
   * and speaks plaintext, for coordinators that allow it (development, benchmarks).
   */
  encryption?: boolean;
  /**
   * A P-256 private key to sign responses with (InferenceComplete.signature); its public key is sent
   * as Register.attestation.public_key. Default: none (unsigned responses).
   */
  responseSigningKey?: KeyObject;
  /** Register.response_signature_version (default 2; 0 registers as a daemon from before it). */
  responseSignatureVersion?: number;
  /**
   * Register.usage_version (default 1: usage is the count of the text; 0 registers as a daemon that
   * reports the tokens sampled).
   */
  usageVersion?: number;
  /** Ways to break the data path's rules, for security tests. */
  misbehave?: Misbehaviour;
  /**
   * Keep received, completed, failed and cancelled (default true). Benchmarks turn it off so that
   * a long run does not hold every request in memory; counters are kept either way.
   */
  recordRequests?: boolean;
}

/** A provider that breaks the data path's rules (security tests). */
export interface Misbehaviour {
  /** Answer sealed requests with plaintext chunks. */
  plaintextChunks?: boolean;
  /** Seal chunks with a key derived from another key pair (the coordinator cannot open them). */
  sealChunksToAnotherKey?: boolean;
  /**
   * Forge the response signature: hash another request body, hash a tampered text, sign another
   * usage, finish reason, model or provider id than the ones sent, sign with another key than the
   * registered one, or sign version 1 (the texts only, as daemons before version 2 did).
   */
  forgeSignature?: ForgedSignature;
}

/** A LoadModel or UnloadModel command the provider received. */
export interface LoadModelCommand {
  kind: "load" | "unload";
  operationId: string;
  modelId: string;
}

/** Why a session ended. "disconnect" is a scripted failure that dropped the connection. */
export type DisconnectReason =
  | "stopped"
  | "killed"
  | "drained"
  | "disconnect"
  | "closed_by_coordinator"
  | "error";

export interface Disconnect {
  reason: DisconnectReason;
  /** The provider id of the session that ended (undefined when it never registered). */
  providerId: string | undefined;
  /** The stream error, when the stream failed rather than ended. */
  error?: unknown;
}

export interface ScriptedProviderEvents {
  /** Every message from the coordinator as it came off the stream, before it is handled. */
  wire: [ConnectResponse];
  request: [ReceivedRequest];
  cancel: [Cancel];
  drain: [Drain];
  disconnected: [Disconnect];
  registered: [RegisterAck];
}
