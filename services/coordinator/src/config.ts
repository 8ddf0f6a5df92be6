import { availableParallelism } from "node:os";
import { DEFAULT_HEARTBEAT_INTERVAL_MS, type TrustLevelName } from "@darkbloom/protocol";

/** Everything the coordinator can be told at start; see resolveConfig for the defaults. */
export interface CoordinatorConfig {
  host: string;
  port: number;
  /** Directory for the embedded PostgreSQL cluster and generated secrets. */
  dataDir: string;
  /** An existing PostgreSQL server; when absent the coordinator runs an embedded one in dataDir. */
  databaseUrl?: string | undefined;
  /** Bearer token of the admin service. */
  adminKey: string;
  logLevel: string;
  /** Interval providers are told to heartbeat at; three missed ones evict a provider. */
  heartbeatIntervalMs: number;
  /** Requests that may wait per model when every provider is busy; more get 503 at once. */
  queueDepthPerModel: number;
  /** How long a request waits for a provider slot before 503 model_not_available. */
  queueTimeoutMs: number;
  /** Invisible retries on another provider while nothing was written to the consumer. */
  maxRetries: number;
  /** Largest request body accepted. */
  bodyLimitBytes: number;
  /** max_tokens injected into requests that carry none. */
  defaultMaxTokens: number;
  /** An SSE comment is written when a stream has been silent this long. */
  keepAliveIntervalMs: number;
  /** A provider that sends no first token this long after dispatch is treated as failed. */
  firstTokenTimeoutMs: number;
  /** A provider silent this long between two chunks is treated as failed. */
  interTokenTimeoutMs: number;
  /**
   * Lowest provider trust level requests are routed to (default self_signed; the local quick start
   * may accept none). Above none, routing also needs a passed challenge younger than
   * challengeFreshnessMs.
   */
  minTrustLevel: TrustLevelName;
  /** Daemons older than this semantic version are not routed to ("" for none); active releases may raise it. */
  minProviderVersion: string;
  /** Attestation challenges are issued at registration and then this often. */
  challengeIntervalMs: number;
  /** A challenge unanswered this long has expired. */
  challengeTimeoutMs: number;
  /** After a failed or expired challenge, the next one comes this soon (capped by the interval). */
  challengeRetryMs: number;
  /** Routing above trust none needs a passed challenge younger than this. */
  challengeFreshnessMs: number;
  /** This many failed or expired challenges in a row make a provider untrusted. */
  maxFailedChallenges: number;
  /**
   * Hex SEC1 P-256 public keys of Secure Enclave keys enrolled out of band as hardware-bound: the only
   * keys granted trust level hardware (no Apple attestation chain can be verified by the coordinator).
   */
  hardwareKeys: string[];
  /**
   * A PEM file of the TPM manufacturers' EK CA certificates (roots and intermediates, any of them an
   * anchor), re-read when it changes: a TPM-signed provider whose EK certificate chains to one of
   * them can earn trust level tpm. "" (default): none, TPM providers stay self_signed.
   */
  tpmEkCaFile: string;
  /** Allowed TPM boot states (hex SHA-256 PCR digests, as published per provider); empty: any. */
  tpmPcrAllowlist: string[];
  /** How often the release policy (allowlist, minimum version) is reloaded from the database. */
  releasePolicyRefreshMs: number;
  /**
   * Refuse providers that register without a 32-byte X25519 encryption key, so every request is
   * sealed end to end (default true). false is a development escape hatch: such providers then get
   * plaintext requests; providers with a key are always sent sealed ones.
   */
  requireEncryption: boolean;
  /** How long an API key lookup is cached (a revocation takes at most this long to bite elsewhere). */
  authCacheTtlMs: number;
  /** Per-account inference requests per second (0 disables rate limiting). */
  rateLimitPerSecond: number;
  /** Per-account burst of inference requests. */
  rateLimitBurst: number;
  /**
   * Per-account requests per second to the money endpoints (account, usage, earnings, invites,
   * referrals, device approval; device-code creation per client address); 0 disables the limit.
   */
  moneyRateLimitPerSecond: number;
  /** Per-account burst of requests to the money endpoints. */
  moneyRateLimitBurst: number;
  /** How long a device-login code can be approved and exchanged (RFC 8628 expires_in). */
  deviceCodeTtlSeconds: number;
  /** The least time a provider must wait between two polls of POST /v1/device/token. */
  deviceCodePollIntervalSeconds: number;
  /**
   * The verification_uri device logins show; by default the approval endpoint at the address the
   * provider reached (its Host header).
   */
  deviceVerificationUri?: string | undefined;
  /** Reserve and settle money for every request (off only to measure the bare serving path). */
  billingEnabled: boolean;
  /** The provider's share of each charge, in basis points. */
  providerShareBps: number;
  /** The referrer's share of the platform fee, in basis points. */
  referralShareBps: number;
  /**
   * A reservation's lease: renewed by its coordinator while the request is in flight, refunded by
   * recovery once not renewed for this long.
   */
  reservationTtlSeconds: number;
  /** The hard bound on a reservation's life: past it, even a live coordinator's is refunded. */
  reservationMaxSeconds: number;
  /** How often this coordinator records that it is alive (and sweeps orphaned reservations). */
  instanceHeartbeatMs: number;
  /** A coordinator silent this long is presumed dead and its open reservations refunded. */
  instanceStaleMs: number;
  /**
   * The URL other replicas reach this coordinator's PeerService at, recorded with its providers in
   * the provider directory (default: the URL it listens on, the peer port's with peerPort, which
   * other machines can reach only when host is not loopback). With peerPort, a URL without a port
   * gets the peer port.
   */
  advertiseUrl?: string | undefined;
  /**
   * Serve PeerService on this port (at `host`; 0 picks one) and no longer on the main one, so that
   * a network policy can let only the other replicas reach it. TLS as the main port, unless
   * peerPlaintext.
   */
  peerPort?: number | undefined;
  /**
   * Serve the peer port without TLS (HTTP/1.1 and h2c) even when the main port serves it, and
   * advertise an http:// URL. For replicas that reach each other by pod IP, which a certificate for
   * the public host name does not name: a verifying peer could not connect. Request bodies and
   * chunks on the hop are sealed to the provider's key either way; the peer token and the
   * requests' metadata are not (docs/ARCHITECTURE.md, Forwarding between replicas).
   */
  peerPlaintext?: boolean | undefined;
  /**
   * PEM files of the certificate chain and private key every port (main and peer, unless
   * peerPlaintext) serves TLS with; both or neither. Reloaded when they change (http/tls-certificate.ts); without them the ports
   * speak plain HTTP/1.1 and h2c.
   */
  tlsCertFile?: string | undefined;
  tlsKeyFile?: string | undefined;
  /** Changes of a provider's free slots, trust and drain state reach the directory at most this often. */
  directoryFlushMs: number;
  /** The directory is re-read this often even when no NOTIFY arrives (a lost LISTEN connection). */
  directoryPollMs: number;
  /**
   * How often a replica holding more than its share of the cluster's providers asks one idle
   * provider to reconnect (behind a Service, to wherever it lands); 0: never (cluster/rebalancer.ts).
   */
  rebalanceIntervalMs: number;
  /** How often model placement decides what its providers load and unload; 0: never (link/model-placement.ts). */
  placementIntervalMs: number;
  /** No load or unload of one model on one provider sooner than this after the last; also how long a model goes unused before it may be unloaded. */
  placementCooldownMs: number;
  /**
   * The cluster's peer credential. With it, routing considers the providers other replicas hold and
   * forwards requests to them (cluster/v1 PeerService), and peers' forwarded requests are served;
   * without it, this replica serves only its own providers and refuses every peer call.
   */
  peerToken?: string | undefined;
  /**
   * The peer credential being rotated out: accepted beside peerToken, and sent to a peer that
   * refuses peerToken (a replica started before the rotation), so that the replicas of a rolling
   * rotation keep forwarding to each other. Only with peerToken, and another value.
   */
  previousPeerToken?: string | undefined;

  // Exposure of /metrics, failed-auth limits and proxy trust.
  /**
   * Bearer token GET /metrics requires. Absent: /metrics answers whoever reaches it, so `serve` always
   * sets one for the main port (given, or generated in the data directory).
   */
  metricsToken?: string | undefined;
  /** Serve /metrics on a listener of its own at this port (0 picks one), and not on the main port. */
  metricsPort?: number | undefined;
  /** Listen address of the metrics port (default 127.0.0.1). */
  metricsHost: string;
  /** Distinct model label values the metrics may carry over the process's life; others are "other". */
  metricsMaxModels: number;
  /**
   * Worker threads that run llama.cpp's tokenizer with the catalog's vocabularies
   * (catalog/catalog-tokenizers.ts); 0 runs it on the event loop.
   */
  tokenizerThreads: number;
  /**
   * Failed credential checks (API key, admin key, metrics token) a client address earns back per
   * second; 0 disables the limit.
   */
  authFailuresPerSecond: number;
  /** Failed credential checks a client address may make in a burst before 429. */
  authFailureBurst: number;
  /** Client addresses the failed-auth limiter remembers at once (least recently failing forgotten). */
  authFailureAddresses: number;
  /**
   * Proxies in front of the coordinator that append to X-Forwarded-For; 0 (default) ignores the
   * header, so per-address limits count the socket's peer.
   */
  trustProxyHops: number;
  // Connection and response limits (slow and greedy clients; see http/connection-guard.ts).
  /**
   * A connection must have said which protocol it speaks and sent its first request's complete
   * headers this long after it opened; a kept-alive HTTP/1.1 connection gets the idle timeout plus
   * this for its next request's headers.
   */
  headerTimeoutMs: number;
  /**
   * A request's body (an HTTP/2 stream's END_STREAM) must be complete this long after its headers.
   * Request-streaming RPCs (the provider stream) are exempt while their response is open.
   */
  bodyTimeoutMs: number;
  /** An HTTP/1.1 keep-alive connection, or an HTTP/2 session, with no request open this long is closed. */
  idleTimeoutMs: number;
  /** A response whose bytes the consumer does not read for this long is cut and its connection closed. */
  sendTimeoutMs: number;
  /** Open connections in total; more are closed as they arrive. */
  maxConnections: number;
  /** Open connections per client address (IPv6: per /64); 0 for no per-address cap. */
  maxConnectionsPerAddress: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of each HTTP/2 connection. */
  maxStreamsPerConnection: number;
  /** Bytes a response may hold waiting for a slow consumer before it is cut (the provider is cancelled). */
  maxResponseBufferBytes: number;
  /** Bytes one completion response may reach before it is cut (the provider is cancelled). */
  maxResponseBytes: number;
  /** On shutdown, how long providers and in-flight requests may take to finish before they are cut. */
  drainTimeoutMs: number;
  /**
   * "migrate" applies pending migrations at start (one machine, the local network); "check" refuses
   * to start while any is pending: under an orchestrator a migration job runs them once, before new
   * replicas start, so a replica never changes the schema under the ones still serving.
   */
  schema: "migrate" | "check";
}

export type CoordinatorConfigInput = Partial<CoordinatorConfig> &
  Pick<CoordinatorConfig, "dataDir" | "adminKey">;

export function resolveConfig(input: CoordinatorConfigInput): CoordinatorConfig {
  const config = {
    host: "127.0.0.1",
    port: 8080,
    logLevel: "info",
    heartbeatIntervalMs: DEFAULT_HEARTBEAT_INTERVAL_MS,
    queueDepthPerModel: 1024,
    queueTimeoutMs: 30_000,
    maxRetries: 3,
    bodyLimitBytes: 4 * 1024 * 1024,
    defaultMaxTokens: 1024,
    keepAliveIntervalMs: 15_000,
    firstTokenTimeoutMs: 120_000,
    interTokenTimeoutMs: 60_000,
    minTrustLevel: "self_signed",
    minProviderVersion: "",
    challengeIntervalMs: 5 * 60_000,
    challengeTimeoutMs: 30_000,
    challengeRetryMs: 60_000,
    challengeFreshnessMs: 6 * 60_000,
    maxFailedChallenges: 3,
    hardwareKeys: [],
    tpmEkCaFile: "",
    tpmPcrAllowlist: [],
    releasePolicyRefreshMs: 10_000,
    requireEncryption: true,
    authCacheTtlMs: 5_000,
    rateLimitPerSecond: 50,
    rateLimitBurst: 100,
    moneyRateLimitPerSecond: 5,
    moneyRateLimitBurst: 20,
    deviceCodeTtlSeconds: 900,
    deviceCodePollIntervalSeconds: 5,
    billingEnabled: true,
    providerShareBps: 9_500,
    referralShareBps: 2_000,
    reservationTtlSeconds: 300,
    reservationMaxSeconds: 86_400,
    instanceHeartbeatMs: 5_000,
    instanceStaleMs: 30_000,
    directoryFlushMs: 1_000,
    directoryPollMs: 5_000,
    rebalanceIntervalMs: 30_000,
    placementIntervalMs: 15_000,
    placementCooldownMs: 300_000,
    metricsHost: "127.0.0.1",
    metricsMaxModels: 256,
    // One core is the event loop's; counting a short response costs far less than serving it.
    tokenizerThreads: Math.min(4, Math.max(1, availableParallelism() - 1)),
    authFailuresPerSecond: 1,
    authFailureBurst: 20,
    authFailureAddresses: 100_000,
    trustProxyHops: 0,
    drainTimeoutMs: 10_000,
    schema: "migrate",
    ...CONNECTION_LIMIT_DEFAULTS,
    ...stripUndefined(input),
  } as CoordinatorConfig;
  // Unless set, the directory is re-read at least twice per staleness period, so a live replica's
  // rows are read again before they would look stale (a short --instance-stale shortens it).
  if (input.directoryPollMs === undefined) {
    config.directoryPollMs = Math.max(
      1,
      Math.min(config.directoryPollMs, Math.floor(config.instanceStaleMs / 2)),
    );
  }
  return config;
}

/**
 * The connection and response limits' defaults; why each is what it is: docs/ARCHITECTURE.md,
 * "Connection limits".
 */
export const CONNECTION_LIMIT_DEFAULTS = {
  headerTimeoutMs: 20_000,
  bodyTimeoutMs: 60_000,
  idleTimeoutMs: 65_000,
  sendTimeoutMs: 60_000,
  maxConnections: 10_000,
  maxConnectionsPerAddress: 256,
  maxStreamsPerConnection: 256,
  maxResponseBufferBytes: 1024 * 1024,
  maxResponseBytes: 64 * 1024 * 1024,
} as const satisfies Partial<CoordinatorConfig>;

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
