// Every route the coordinator serves on its main port, with its method and handler: the HTTP routes
// (OpenAI-compatible, account, device login, public trust and release information, operations) and
// the Connect services (Connect, gRPC and gRPC-Web under /darkbloom.<package>.<Service>/<Method>);
// the replicas' PeerService there too, or alone on the peer port (listeners.ts).
// startCoordinator builds the parts; this file only says which path reaches which of them.

import type { ConnectRouter } from "@connectrpc/connect";
import { loadConsole } from "@darkbloom/console";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { PeerService } from "@darkbloom/protocol/cluster/v1";
import { InferenceService } from "@darkbloom/protocol/inference/v1";
import { Endpoint, ProviderService } from "@darkbloom/protocol/provider/v1";
import type pg from "pg";
import type { AccountStore } from "./accounts/account-store.js";
import type { DeviceLogin } from "./accounts/device-login.js";
import type { InviteStore } from "./accounts/invites.js";
import type { ReferralStore } from "./accounts/referrals.js";
import type { UsageStore } from "./accounts/usage.js";
import type { Authenticator } from "./auth/authenticator.js";
import type { FailedAuthLimiter } from "./auth/failed-auth-limiter.js";
import type { RateLimiter } from "./auth/rate-limiter.js";
import type { ModelCatalog } from "./catalog/model-catalog.js";
import type { VocabularyStore } from "./catalog/vocabulary-store.js";
import type { ClusterProviders } from "./cluster/cluster-view.js";
import type { PeerClients } from "./cluster/peer-clients.js";
import { createPeerService } from "./cluster/peer-service.js";
import type { CoordinatorConfig } from "./config.js";
import type { Route } from "./http/app.js";
import { accountMachinesHandler } from "./http/handlers/account-machines.js";
import {
  accountHandler,
  applyReferralHandler,
  createKeyHandler,
  earningsHandler,
  listKeysHandler,
  redeemInviteHandler,
  referralCodeHandler,
  revokeKeyHandler,
  usageHandler,
} from "./http/handlers/accounts.js";
import { completionsHandler } from "./http/handlers/completions.js";
import { consoleRoutes } from "./http/handlers/console.js";
import {
  deviceApproveHandler,
  deviceCodeHandler,
  deviceDenyHandler,
  deviceRevokeHandler,
  deviceTokenHandler,
} from "./http/handlers/device.js";
import { embeddingsHandler } from "./http/handlers/embeddings.js";
import { modelsHandler } from "./http/handlers/models.js";
import { healthHandler, metricsHandler, readinessHandler } from "./http/handlers/operational.js";
import { attestationsHandler, latestReleaseHandler, versionHandler } from "./http/handlers/trust.js";
import type { Handler, HttpRequest } from "./http/types.js";
import type { InferencePipeline } from "./inference/pipeline.js";
import type { ModelPlacement } from "./link/model-placement.js";
import { createProviderService } from "./link/provider-service.js";
import type { SessionManager } from "./link/session-manager.js";
import type { Logger } from "./log.js";
import type { CoordinatorMetrics } from "./metrics.js";
import type { ReleaseStore } from "./releases/release-store.js";
import type { ProviderRegistry } from "./routing/provider-registry.js";
import type { Router } from "./routing/router.js";
import { createAdminService } from "./rpc/admin-service.js";
import { createInferenceService } from "./rpc/inference-service.js";
import { LiveProviderDirectory } from "./rpc/live-provider-directory.js";
import type { KeyQuarantineStore } from "./trust/key-quarantine.js";
import type { MachineBindingStore } from "./trust/machine-bindings.js";
import type { TrustManager } from "./trust/trust-manager.js";

/** The parts of a coordinator the routes hand requests to. */
export interface RouteTargets {
  config: CoordinatorConfig;
  log: Logger;
  metrics: CoordinatorMetrics;
  pool: pg.Pool;
  accounts: AccountStore;
  invites: InviteStore;
  referrals: ReferralStore;
  usage: UsageStore;
  deviceLogin: DeviceLogin;
  catalog: ModelCatalog;
  vocabularies: VocabularyStore;
  releases: ReleaseStore;
  bindings: MachineBindingStore;
  /** Quarantined signing keys (shown and lifted by the admin service). */
  quarantines: KeyQuarantineStore;
  registry: ProviderRegistry;
  /** Routes this replica's providers (a peer's forwarded request takes a slot through it). */
  router: Router;
  /** Clients of the other replicas, when this one has the peer token. */
  peers: PeerClients | undefined;
  /** Demand-driven model placement on this replica's providers (and administrators' load/unload). */
  placement: ModelPlacement;
  /** Every provider in the cluster (this replica's sessions and the directory's other rows). */
  cluster: ClusterProviders;
  sessions: SessionManager;
  trust: TrustManager;
  pipeline: InferencePipeline;
  auth: Authenticator;
  /** Failed API keys, admin keys, metrics tokens and account tokens, per client address. */
  authFailures: FailedAuthLimiter;
  /** The per-account bucket of inference requests. */
  rateLimiter: RateLimiter;
  /** The tighter per-account bucket of money endpoints (balances, invites, referrals, device approval). */
  moneyLimiter: RateLimiter;
  addressOf: (req: HttpRequest) => string;
  /** Readiness: the database answers and the coordinator is not shutting down. */
  ready: () => Promise<{ ready: boolean; reason?: string }>;
}

/**
 * The HTTP routes. GET /metrics is here unless it has a listener of its own (`metricsPort`); paths
 * under /darkbloom. go to the Connect services (connectRoutes).
 */
export function httpRoutes(t: RouteTargets): Route[] {
  const { config, auth, rateLimiter, moneyLimiter, pipeline, metrics, log } = t;
  const completion = { config, auth, rateLimiter, pipeline, metrics, log };
  const account = {
    auth,
    limiter: moneyLimiter,
    log,
    invites: t.invites,
    referrals: t.referrals,
    usage: t.usage,
    keys: t.accounts,
    onKeysChanged: () => auth.forgetAll(),
  };
  const device = {
    auth,
    limiter: moneyLimiter,
    log,
    deviceLogin: t.deviceLogin,
    verificationUri: config.deviceVerificationUri,
  };
  const routes: Route[] = [
    // OpenAI-compatible (API key)
    r("POST", "/v1/chat/completions", completionsHandler(Endpoint.CHAT_COMPLETIONS, completion)),
    r("POST", "/v1/completions", completionsHandler(Endpoint.COMPLETIONS, completion)),
    r("POST", "/v1/embeddings", embeddingsHandler(completion)),
    r("GET", "/v1/models", modelsHandler(t.auth, t.cluster, t.catalog)),
    // The account's money (API key)
    r("GET", "/v1/account", accountHandler(account)),
    r("GET", "/v1/account/usage", usageHandler(account)),
    r("GET", "/v1/account/earnings", earningsHandler(account)),
    r("GET", "/v1/account/keys", listKeysHandler(account)),
    r("POST", "/v1/account/keys", createKeyHandler(account)),
    r("POST", "/v1/account/keys/revoke", revokeKeyHandler(account)),
    r("GET", "/v1/account/machines", accountMachinesHandler({ ...account, cluster: t.cluster })),
    r("POST", "/v1/invites/redeem", redeemInviteHandler(account)),
    r("GET", "/v1/referrals/code", referralCodeHandler(account)),
    r("POST", "/v1/referrals/apply", applyReferralHandler(account)),
    // Device-code login of provider daemons (RFC 8628)
    r("POST", "/v1/device/code", deviceCodeHandler(device)),
    r("POST", "/v1/device/token", deviceTokenHandler(device)),
    r("POST", "/v1/device/approve", deviceApproveHandler(device)),
    r("POST", "/v1/device/deny", deviceDenyHandler(device)),
    r("POST", "/v1/device/revoke", deviceRevokeHandler(device)),
    // Public: attestations, releases, versions
    r("GET", "/v1/providers/attestation", attestationsHandler(t.cluster)),
    r("GET", "/v1/releases/latest", latestReleaseHandler(t.releases, t.log)),
    r("GET", "/api/version", versionHandler(t.trust)),
    // Operations
    r("GET", "/healthz", healthHandler()),
    r("GET", "/readyz", readinessHandler(t.ready)),
    // The web console (static files; it talks to the routes above like any client)
    ...consoleRoutes(loadConsole()),
  ];
  if (config.metricsPort === undefined) {
    routes.push(r("GET", "/metrics", metricsRoute(t)));
  }
  return routes;
}

/** GET /metrics, on the main port (httpRoutes) or on a listener of its own. */
export function metricsRoute(t: RouteTargets): Handler {
  return metricsHandler(t.metrics, {
    token: t.config.metricsToken,
    failures: t.authFailures,
    addressOf: t.addressOf,
  });
}

/**
 * The Connect services: the providers' stream, the typed consumer API, the admin API, and the
 * replicas' PeerService unless it has a port of its own (peerRoutes).
 */
export function connectRoutes(t: RouteTargets): (router: ConnectRouter) => void {
  return (router) => {
    router.service(
      ProviderService,
      createProviderService(t.sessions, t.log, {
        resolveAccountToken: (token) => t.deviceLogin.resolveProviderToken(token),
        authFailures: t.authFailures,
        requireEncryption: t.config.requireEncryption,
      }),
    );
    router.service(
      InferenceService,
      createInferenceService({
        auth: t.auth,
        rateLimiter: t.rateLimiter,
        pipeline: t.pipeline,
        registry: t.registry,
        cluster: t.cluster,
        catalog: t.catalog,
        limits: t.config,
        onCut: (limit) => t.metrics.connectionLimits.inc({ limit }),
      }),
    );
    router.service(
      AdminService,
      createAdminService({
        accounts: t.accounts,
        catalog: t.catalog,
        vocabularies: t.vocabularies,
        releases: t.releases,
        invites: t.invites,
        usage: t.usage,
        providers: new LiveProviderDirectory(
          t.registry,
          t.sessions,
          t.trust,
          t.cluster,
          t.peers,
          t.placement,
        ),
        bindings: t.bindings,
        onMachineRebound: (machineId, keyHex) => t.sessions.disconnectMachine(machineId, keyHex),
        quarantines: t.quarantines,
        onQuarantineLifted: (keyHex) => t.trust.forgetQuarantine(keyHex),
        pool: t.pool,
        adminKey: t.config.adminKey,
        authFailures: t.authFailures,
        onKeysChanged: () => t.auth.forgetAll(),
        // The release is stored either way; a failed reload is retried by the periodic one.
        onReleasesChanged: () =>
          t.trust
            .refreshPolicy()
            .catch((e: Error) => t.log.warn({ err: e.message }, "could not reload the release policy")),
        logger: t.log,
      }),
    );
    if (t.config.peerPort === undefined) peerRoutes(t)(router);
  };
}

/** Replica to replica: forwarded requests and trust findings (refused without the peer token). */
export function peerRoutes(t: RouteTargets): (router: ConnectRouter) => void {
  return (router) => {
    router.service(
      PeerService,
      createPeerService({
        peerToken: t.config.peerToken,
        previousPeerToken: t.config.previousPeerToken,
        sessions: t.sessions,
        router: t.router,
        log: t.log,
        onForward: (result, model) => t.metrics.forwarded.inc({ direction: "received", model, result }),
      }),
    );
  };
}

function r(method: Route["method"], path: string, handler: Handler): Route {
  return { method, path, handler };
}
