import { AdminService } from "@darkbloom/protocol/admin/v1";
import { InferenceService } from "@darkbloom/protocol/inference/v1";
import { Endpoint, ProviderService } from "@darkbloom/protocol/provider/v1";
import { AccountStore } from "./accounts/account-store.js";
import { DeviceLogin } from "./accounts/device-login.js";
import { InviteStore } from "./accounts/invites.js";
import { ReferralStore } from "./accounts/referrals.js";
import { UsageStore } from "./accounts/usage.js";
import { Authenticator } from "./auth/authenticator.js";
import { FailedAuthLimiter } from "./auth/failed-auth-limiter.js";
import { RateLimiter } from "./auth/rate-limiter.js";
import { Billing } from "./billing/billing.js";
import { ModelCatalog } from "./catalog/model-catalog.js";
import { type CoordinatorConfig, type CoordinatorConfigInput, resolveConfig } from "./config.js";
import { serviceShuttingDown } from "./errors/index.js";
import { createApp, type Route } from "./http/app.js";
import { clientAddress } from "./http/client-address.js";
import { createConnectHandler } from "./http/connect-handler.js";
import {
  accountHandler,
  applyReferralHandler,
  earningsHandler,
  redeemInviteHandler,
  referralCodeHandler,
  usageHandler,
} from "./http/handlers/accounts.js";
import { completionsHandler } from "./http/handlers/completions.js";
import {
  deviceApproveHandler,
  deviceCodeHandler,
  deviceDenyHandler,
  deviceRevokeHandler,
  deviceTokenHandler,
} from "./http/handlers/device.js";
import { modelsHandler } from "./http/handlers/models.js";
import { healthHandler, metricsHandler, readinessHandler } from "./http/handlers/operational.js";
import { attestationsHandler, latestReleaseHandler, versionHandler } from "./http/handlers/trust.js";
import { listenMetrics, type MetricsListener } from "./http/metrics-listener.js";
import { listenHttp } from "./http/protocol-sniffing-server.js";
import type { HttpRequest } from "./http/types.js";
import { InferencePipeline } from "./inference/pipeline.js";
import { createProviderService } from "./link/provider-service.js";
import { SessionManager } from "./link/session-manager.js";
import { createLogger, type Logger } from "./log.js";
import { CoordinatorMetrics } from "./metrics.js";
import { ReleaseStore } from "./releases/release-store.js";
import { ProviderRegistry } from "./routing/provider-registry.js";
import { Router } from "./routing/router.js";
import { createAdminService } from "./rpc/admin-service.js";
import { createInferenceService } from "./rpc/inference-service.js";
import { LiveProviderDirectory } from "./rpc/live-provider-directory.js";
import { openDatabase } from "./store/database.js";
import { migrate } from "./store/migrate.js";
import { MachineBindingStore } from "./trust/machine-bindings.js";
import { trustOptionsFrom } from "./trust/trust-config.js";
import { TrustManager } from "./trust/trust-manager.js";

export interface RunningCoordinator {
  /** http://host:port of the one port serving the OpenAI routes and every Connect service. */
  url: string;
  /** http://host:port of the metrics listener, when /metrics has a port of its own. */
  metricsUrl: string | undefined;
  adminKey: string;
  config: CoordinatorConfig;
  registry: ProviderRegistry;
  sessions: SessionManager;
  /** Attestation verification, challenges and trust judgements of the connected providers. */
  trust: TrustManager;
  metrics: CoordinatorMetrics;
  accounts: AccountStore;
  catalog: ModelCatalog;
  billing: Billing | undefined;
  /** The PostgreSQL URL in use (contains its password: never log it). */
  databaseUrl: string;
  /** Drains providers (up to drainMs), fails queued requests, stops the server and the database. */
  close(options?: { drainMs?: number }): Promise<void>;
}

/** Starts a coordinator: database (embedded unless a URL is given), migrations, and the HTTP server. */
export async function startCoordinator(
  input: CoordinatorConfigInput,
  options: { logger?: Logger } = {},
): Promise<RunningCoordinator> {
  const config = resolveConfig(input);
  const trustOptions = trustOptionsFrom(config);
  const log = options.logger ?? createLogger(config.logLevel);
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger: log });
  try {
    await migrate(db.pool, { logger: log });
  } catch (e) {
    await db.close();
    throw e;
  }
  const accounts = new AccountStore(db.pool);
  const invites = new InviteStore(db.pool);
  const referrals = new ReferralStore(db.pool);
  const usage = new UsageStore(db.pool);
  const deviceLogin = new DeviceLogin(db.pool, {
    ttlSeconds: config.deviceCodeTtlSeconds,
    intervalSeconds: config.deviceCodePollIntervalSeconds,
  });
  const catalog = new ModelCatalog(db.pool);
  await catalog.start();
  const releases = new ReleaseStore(db.pool);
  const billing = config.billingEnabled
    ? new Billing(
        db.pool,
        {
          providerShareBps: config.providerShareBps,
          referralShareBps: config.referralShareBps,
          reservationTtlSeconds: config.reservationTtlSeconds,
          reservationMaxSeconds: config.reservationMaxSeconds,
          heartbeatMs: config.instanceHeartbeatMs,
          ownerStaleMs: config.instanceStaleMs,
        },
        log,
      )
    : undefined;
  await billing?.start();
  const registry = new ProviderRegistry();
  const metrics = new CoordinatorMetrics({
    modelOrigin: (model) =>
      catalog.get(model) !== undefined ? "catalog" : registry.serving(model).size > 0 ? "served" : undefined,
    maxModelLabels: config.metricsMaxModels,
  });
  const trust = new TrustManager(trustOptions, releases, log, (result) =>
    metrics.attestationChallenges.inc({ result }),
  );
  try {
    await trust.start();
  } catch (e) {
    catalog.stop();
    await billing?.stop();
    await db.close();
    throw e;
  }
  const bindings = new MachineBindingStore(db.pool);
  const sessions = new SessionManager(
    registry,
    {
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      trust,
      bindings,
      // Re-binds made through other replicas reach this one as releases do.
      bindingCheckMs: config.releasePolicyRefreshMs,
    },
    log,
    metrics,
  );
  const router = new Router(registry, config, metrics);
  const rateLimiter = new RateLimiter({
    perSecond: config.rateLimitPerSecond,
    burst: config.rateLimitBurst,
    tier: "inference",
  });
  // Money endpoints (balances, invites, referrals, device approval) have their own, tighter buckets.
  const moneyLimiter = new RateLimiter({
    perSecond: config.moneyRateLimitPerSecond,
    burst: config.moneyRateLimitBurst,
    tier: "money",
  });
  const addressOf = (req: HttpRequest) => clientAddress(req, config.trustProxyHops);
  const authFailures = new FailedAuthLimiter({
    perSecond: config.authFailuresPerSecond,
    burst: config.authFailureBurst,
    maxAddresses: config.authFailureAddresses,
  });
  const auth = new Authenticator((secret) => accounts.authenticateApiKey(secret), {
    ttlMs: config.authCacheTtlMs,
    failures: authFailures,
    addressOf,
  });
  const catalogView = { lookup: (id: string) => catalog.get(id), list: () => catalog.list() };
  const pipeline = new InferencePipeline({
    config,
    registry,
    router,
    sessions,
    catalog: catalogView,
    metrics,
    log,
    billing,
  });
  let shuttingDown = false;

  const connect = createConnectHandler({
    // One Connect message (a provider's, or a consumer's typed request) is no larger than an HTTP body;
    // the default (4 GiB) let a 5-byte envelope header allocate gigabytes, and a compressed message
    // inflate to as much, before any authentication or Register.
    readMaxBytes: config.bodyLimitBytes,
    sendTimeoutMs: config.sendTimeoutMs,
    onStall: () => metrics.connectionLimits.inc({ limit: "send_timeout" }),
    log,
    addressOf,
    routes: (r) => {
      r.service(
        ProviderService,
        createProviderService(sessions, log, {
          resolveAccountToken: (token) => deviceLogin.resolveProviderToken(token),
          authFailures,
          requireEncryption: config.requireEncryption,
        }),
      );
      r.service(
        InferenceService,
        createInferenceService({
          auth,
          rateLimiter,
          pipeline,
          registry,
          catalog: catalogView,
          limits: config,
          onCut: (limit) => metrics.connectionLimits.inc({ limit }),
        }),
      );
      r.service(
        AdminService,
        createAdminService({
          accounts,
          catalog,
          releases,
          invites,
          usage,
          providers: new LiveProviderDirectory(registry, sessions, trust),
          bindings,
          onMachineRebound: (machineId, keyHex) => sessions.disconnectMachine(machineId, keyHex),
          pool: db.pool,
          adminKey: config.adminKey,
          authFailures,
          onKeysChanged: () => auth.forgetAll(),
          // The release is stored either way; a failed reload is retried by the periodic one.
          onReleasesChanged: () =>
            trust
              .refreshPolicy()
              .catch((e: Error) => log.warn({ err: e.message }, "could not reload the release policy")),
          logger: log,
        }),
      );
    },
  });
  const metricsRoute: Route = {
    method: "GET",
    path: "/metrics",
    handler: metricsHandler(metrics, { token: config.metricsToken, failures: authFailures, addressOf }),
  };
  const completionDeps = { config, auth, rateLimiter, pipeline, metrics, log };
  const accountDeps = { auth, limiter: moneyLimiter, log, invites, referrals, usage };
  const deviceDeps = {
    auth,
    limiter: moneyLimiter,
    log,
    deviceLogin,
    verificationUri: config.deviceVerificationUri,
  };
  const app = createApp(
    [
      {
        method: "POST",
        path: "/v1/chat/completions",
        handler: completionsHandler(Endpoint.CHAT_COMPLETIONS, completionDeps),
      },
      {
        method: "POST",
        path: "/v1/completions",
        handler: completionsHandler(Endpoint.COMPLETIONS, completionDeps),
      },
      { method: "GET", path: "/v1/models", handler: modelsHandler(auth, registry, catalogView) },
      { method: "GET", path: "/v1/account", handler: accountHandler(accountDeps) },
      { method: "GET", path: "/v1/account/usage", handler: usageHandler(accountDeps) },
      { method: "GET", path: "/v1/account/earnings", handler: earningsHandler(accountDeps) },
      { method: "POST", path: "/v1/invites/redeem", handler: redeemInviteHandler(accountDeps) },
      { method: "GET", path: "/v1/referrals/code", handler: referralCodeHandler(accountDeps) },
      { method: "POST", path: "/v1/referrals/apply", handler: applyReferralHandler(accountDeps) },
      { method: "POST", path: "/v1/device/code", handler: deviceCodeHandler(deviceDeps) },
      { method: "POST", path: "/v1/device/token", handler: deviceTokenHandler(deviceDeps) },
      { method: "POST", path: "/v1/device/approve", handler: deviceApproveHandler(deviceDeps) },
      { method: "POST", path: "/v1/device/deny", handler: deviceDenyHandler(deviceDeps) },
      { method: "POST", path: "/v1/device/revoke", handler: deviceRevokeHandler(deviceDeps) },
      { method: "GET", path: "/v1/providers/attestation", handler: attestationsHandler(trust) },
      { method: "GET", path: "/v1/releases/latest", handler: latestReleaseHandler(releases, log) },
      { method: "GET", path: "/api/version", handler: versionHandler(trust) },
      { method: "GET", path: "/healthz", handler: healthHandler() },
      {
        method: "GET",
        path: "/readyz",
        handler: readinessHandler(async () => {
          if (shuttingDown) return { ready: false, reason: "shutting down" };
          await db.pool.query("SELECT 1");
          return { ready: true };
        }),
      },
      // On the main port unless it has a port of its own.
      ...(config.metricsPort === undefined ? [metricsRoute] : []),
    ],
    connect,
    log,
  );
  let server: Awaited<ReturnType<typeof listenHttp>>;
  let metricsListener: MetricsListener | undefined;
  try {
    let acceptErrors = 0;
    server = await listenHttp(app, config.host, config.port, {
      limits: config,
      isRequestStream: connect.isRequestStream,
      onLimit: (limit) => metrics.connectionLimits.inc({ limit }),
      // Out of file descriptors, accepts fail for every new connection: one line per burst, not each.
      onAcceptError: (e) => {
        if (acceptErrors++ === 0) {
          log.warn({ err: e.message }, "accepting connections failed; lower --max-connections");
          setTimeout(() => {
            if (acceptErrors > 1) log.warn({ count: acceptErrors - 1 }, "more accepts failed");
            acceptErrors = 0;
          }, 10_000).unref();
        }
      },
    });
    if (config.metricsPort !== undefined) {
      metricsListener = await listenMetrics(
        metricsRoute.handler,
        config.metricsHost,
        config.metricsPort,
        log,
      ).catch(async (e: unknown) => {
        await server.close();
        throw e;
      });
    }
  } catch (e) {
    sessions.close();
    trust.close();
    catalog.stop();
    await billing?.stop();
    await db.close();
    throw e;
  }
  log.info(
    { url: server.url, metricsUrl: metricsListener?.url, embeddedDatabase: db.embedded },
    "coordinator listening",
  );

  let closing: Promise<void> | undefined;
  return {
    url: server.url,
    metricsUrl: metricsListener?.url,
    adminKey: config.adminKey,
    config,
    registry,
    sessions,
    trust,
    metrics,
    accounts,
    catalog,
    billing,
    databaseUrl: db.url,
    close: (opts = {}) => {
      closing ??= (async () => {
        shuttingDown = true;
        await sessions.drainAll("coordinator_shutdown", opts.drainMs ?? 10_000);
        router.close(serviceShuttingDown());
        rateLimiter.close();
        moneyLimiter.close();
        await billing?.stop();
        sessions.close();
        trust.close();
        await server.close();
        await metricsListener?.close();
        catalog.stop();
        await db.close();
        log.info("coordinator stopped");
      })();
      return closing;
    },
  };
}
