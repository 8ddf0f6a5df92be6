import { randomUUID } from "node:crypto";
import type pg from "pg";
import { AccountStore } from "./accounts/account-store.js";
import { DeviceLogin } from "./accounts/device-login.js";
import { InviteStore } from "./accounts/invites.js";
import { ReferralStore } from "./accounts/referrals.js";
import { UsageStore } from "./accounts/usage.js";
import { Authenticator } from "./auth/authenticator.js";
import { FailedAuthLimiter } from "./auth/failed-auth-limiter.js";
import { RateLimiter } from "./auth/rate-limiter.js";
import { Billing, type BillingOptions } from "./billing/billing.js";
import { CatalogTokenizers } from "./catalog/catalog-tokenizers.js";
import { CATALOG_CHANNEL, ModelCatalog } from "./catalog/model-catalog.js";
import { readVocabulary, VocabularyStore } from "./catalog/vocabulary-store.js";
import { Closers } from "./closers.js";
import { ClusterView } from "./cluster/cluster-view.js";
import { DirectoryReader } from "./cluster/directory-reader.js";
import { DirectoryWriter } from "./cluster/directory-writer.js";
import { ForwardingPool } from "./cluster/forwarding-pool.js";
import { Notifications } from "./cluster/notifications.js";
import { PeerClients } from "./cluster/peer-clients.js";
import { Rebalancer } from "./cluster/rebalancer.js";
import { RemoteProviders } from "./cluster/remote-providers.js";
import { type CoordinatorConfig, type CoordinatorConfigInput, resolveConfig } from "./config.js";
import { serviceShuttingDown } from "./errors/index.js";
import { clientAddress } from "./http/client-address.js";
import { listenMetrics } from "./http/metrics-listener.js";
import type { HttpRequest } from "./http/types.js";
import { InferencePipeline } from "./inference/pipeline.js";
import { TimingLog } from "./inference/timing-log.js";
import { ModelPlacement } from "./link/model-placement.js";
import { SessionManager } from "./link/session-manager.js";
import { serverCertificate, startListeners } from "./listeners.js";
import { createLogger, type Logger } from "./log.js";
import { CoordinatorMetrics } from "./metrics.js";
import { ReleaseStore } from "./releases/release-store.js";
import { metricsRoute, type RouteTargets } from "./routes.js";
import { LocalProviderPool, type ProviderPool } from "./routing/provider-pool.js";
import { ProviderRegistry } from "./routing/provider-registry.js";
import { Router } from "./routing/router.js";
import { openDatabase } from "./store/database.js";
import { assertSchemaCurrent, migrate } from "./store/migrate.js";
import { KeyQuarantineStore } from "./trust/key-quarantine.js";
import { MachineBindingStore } from "./trust/machine-bindings.js";
import { trustOptionsFrom } from "./trust/trust-config.js";
import { TrustManager } from "./trust/trust-manager.js";

export interface RunningCoordinator {
  /**
   * http://host:port (https:// with TLS) of the main port: the OpenAI routes and every Connect
   * service (PeerService too, unless it has a port of its own).
   */
  url: string;
  /** The peer port's URL, when PeerService is served there and not on the main port. */
  peerUrl: string | undefined;
  /** http://host:port of the metrics listener, when /metrics has a port of its own. */
  metricsUrl: string | undefined;
  adminKey: string;
  config: CoordinatorConfig;
  registry: ProviderRegistry;
  /** Every provider in the cluster: this replica's sessions and the directory's other rows. */
  cluster: ClusterView;
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

/**
 * Starts a coordinator: database (embedded unless a URL is given), migrations, the parts that serve
 * requests, and the HTTP server on its ports (listeners.ts, routes.ts). Each part that needs stopping
 * registers its closer as it starts (closers.ts): a start that fails closes what had started, and
 * close() closes everything, both in reverse order.
 */
export async function startCoordinator(
  input: CoordinatorConfigInput,
  options: { logger?: Logger } = {},
): Promise<RunningCoordinator> {
  const config = resolveConfig(input);
  const log = options.logger ?? createLogger(config.logLevel);
  const closers = new Closers(log);
  try {
    return await start(config, log, closers);
  } catch (e) {
    await closers.close().catch(() => undefined); // each failure is logged; the start's error is the one to report
    throw e;
  }
}

async function start(config: CoordinatorConfig, log: Logger, closers: Closers): Promise<RunningCoordinator> {
  const certificate = await serverCertificate(config);
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger: log });
  closers.add("database", () => db.close());
  if (config.schema === "check") await assertSchemaCurrent(db.pool);
  else await migrate(db.pool, { logger: log });

  // Each catalog model's vocabulary, loaded, follows the catalog (the start waits for the first
  // loads, so usage is counted, not only bounded, from the first request).
  const tokenizers = new CatalogTokenizers({ read: (sha256) => readVocabulary(db.pool, sha256) }, log, {
    threads: config.tokenizerThreads,
  });
  const catalog = new ModelCatalog(db.pool, { onRefresh: (models) => tokenizers.sync(models) });
  const vocabularies = new VocabularyStore(db.pool, catalog);
  await catalog.start();
  closers.add("model catalog", () => catalog.stop());
  closers.add("tokenizers", () => tokenizers.close());
  const billing = config.billingEnabled ? new Billing(db.pool, billingOptions(config), log) : undefined;
  if (billing) {
    await billing.start();
    closers.add("billing", () => billing.stop());
  }
  // Settled requests' phases, for the account's usage (with billing: that is what settles them).
  const timings = billing ? new TimingLog(db.pool, log) : undefined;
  if (timings) {
    timings.start();
    closers.add("request timings", () => timings.stop());
  }
  const instanceId = billing?.instanceId ?? `coord_${randomUUID()}`;
  // Shared-state changes other replicas announce (the catalog, the provider directory); the
  // connection opens with the directory reader.
  const notifications = new Notifications(db.url, `darkbloom-listen:${instanceId}`, log);
  closers.add("notifications", () => notifications.stop());
  const refreshCatalog = () =>
    void catalog
      .refresh()
      .catch((e: Error) => log.warn({ err: e.message }, "could not refresh the model catalog"));
  notifications.on(CATALOG_CHANNEL, refreshCatalog);
  notifications.onReconnect(refreshCatalog);
  const registry = new ProviderRegistry();
  // Every provider of the cluster, the other replicas' included, once the pool exists (below).
  let providers: ProviderPool | undefined;
  const metrics = new CoordinatorMetrics({
    modelOrigin: (model) =>
      catalog.get(model) !== undefined
        ? "catalog"
        : (providers?.serves(model) ?? registry.serving(model).size > 0)
          ? "served"
          : undefined,
    maxModelLabels: config.metricsMaxModels,
  });
  metrics.observeFleet({
    providers: () => registry.all(),
    *measuredRates(kind) {
      const { fleet } = registry.performance;
      const now = Date.now();
      for (const model of fleet.models(kind)) {
        const rate = fleet.rate(model, kind, now);
        if (rate !== undefined) yield [model, rate];
      }
    },
  });
  const releases = new ReleaseStore(db.pool);
  const quarantines = new KeyQuarantineStore(db.pool);
  const trust = new TrustManager(
    { ...trustOptionsFrom(config), quarantineStore: quarantines },
    releases,
    log,
    (result) => metrics.attestationChallenges.inc({ result }),
  );
  await trust.start();
  closers.add("trust", async () => {
    trust.close();
    await trust.flush(); // quarantine writes in flight reach the database before it closes
  });
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
  closers.add("provider sessions", () => sessions.close());
  const {
    cluster,
    writer: directoryWriter,
    reader: directoryReader,
  } = await startDirectory(config, db, { instanceId, notifications }, registry, trust, billing, log, closers);
  // A machine that reconnected to another replica ends its older session here.
  const unsubscribeSupersede = directoryReader.subscribe((entries) =>
    sessions.supersede(
      entries.map((e) => ({
        machineId: e.machineId,
        connectedAt: e.connectedAt,
        attested: e.attested,
        signingKeyHex: e.dispatch?.signingKey || undefined,
      })),
    ),
  );
  closers.add("machine supersession", async () => unsubscribeSupersede());
  const rebalancer = new Rebalancer(
    db.pool,
    sessions,
    directoryReader,
    { intervalMs: config.rebalanceIntervalMs, staleMs: config.instanceStaleMs },
    log,
  );
  rebalancer.start();
  closers.add("rebalancer", () => rebalancer.stop());

  const rateLimiter = new RateLimiter({
    perSecond: config.rateLimitPerSecond,
    burst: config.rateLimitBurst,
    tier: "inference",
  });
  closers.add("inference rate limiter", () => rateLimiter.close());
  // Money endpoints (balances, invites, referrals, device approval) have their own, tighter buckets.
  const moneyLimiter = new RateLimiter({
    perSecond: config.moneyRateLimitPerSecond,
    burst: config.moneyRateLimitBurst,
    tier: "money",
  });
  closers.add("money rate limiter", () => moneyLimiter.close());
  const addressOf = (req: HttpRequest) => clientAddress(req, config.trustProxyHops);
  const authFailures = new FailedAuthLimiter({
    perSecond: config.authFailuresPerSecond,
    burst: config.authFailureBurst,
    maxAddresses: config.authFailureAddresses,
  });
  const accounts = new AccountStore(db.pool);
  const auth = new Authenticator((secret) => accounts.authenticateApiKey(secret), {
    ttlMs: config.authCacheTtlMs,
    failures: authFailures,
    addressOf,
  });
  const router = new Router(registry, config, metrics);
  const placement = new ModelPlacement(
    registry,
    router,
    sessions,
    () => catalog.list().flatMap((m) => (m.enabled ? [m.id] : [])),
    { intervalMs: config.placementIntervalMs, cooldownMs: config.placementCooldownMs },
    log,
  );
  placement.start();
  closers.add("model placement", () => placement.stop());
  const catalogView = {
    lookup: (id: string) => catalog.get(id),
    list: () => catalog.list(),
    tokenizer: (id: string) => tokenizers.get(id),
  };
  // Clients of the other replicas, with a peer token: forwarding, and drains of their providers.
  const peers =
    config.peerToken === undefined
      ? undefined
      : new PeerClients({ current: config.peerToken, previous: config.previousPeerToken }, log);
  providers = providerPool(new LocalProviderPool(registry, router, sessions), directoryReader, {
    config,
    peers,
    log,
    closers,
    metrics,
  });
  const pipeline = new InferencePipeline({
    config,
    providers,
    catalog: catalogView,
    metrics,
    log,
    billing,
    timings,
  });

  let shuttingDown = false;
  const targets: RouteTargets = {
    config,
    log,
    metrics,
    pool: db.pool,
    accounts,
    invites: new InviteStore(db.pool),
    referrals: new ReferralStore(db.pool),
    usage: new UsageStore(db.pool),
    deviceLogin: new DeviceLogin(db.pool, {
      ttlSeconds: config.deviceCodeTtlSeconds,
      intervalSeconds: config.deviceCodePollIntervalSeconds,
    }),
    catalog,
    vocabularies,
    releases,
    bindings,
    quarantines,
    registry,
    router,
    peers,
    placement,
    cluster,
    sessions,
    trust,
    pipeline,
    auth,
    authFailures,
    rateLimiter,
    moneyLimiter,
    addressOf,
    ready: async () => {
      if (shuttingDown) return { ready: false, reason: "shutting down" };
      await db.pool.query("SELECT 1");
      return { ready: true };
    },
  };
  const listeners = await startListeners(targets, certificate, closers);
  directoryWriter.advertise(listeners.advertiseUrl);
  const metricsListener =
    config.metricsPort === undefined
      ? undefined
      : await listenMetrics(metricsRoute(targets), config.metricsHost, config.metricsPort, log);
  if (metricsListener) closers.add("metrics listener", () => metricsListener.close());
  // Closed before the server: requests still waiting for a provider get their 503 while their
  // connections are open.
  closers.add("routing queues", () => router.close(serviceShuttingDown()));
  log.info(
    {
      url: listeners.url,
      peerUrl: listeners.peerUrl,
      metricsUrl: metricsListener?.url,
      embeddedDatabase: db.embedded,
    },
    "coordinator listening",
  );

  let drainMs = config.drainTimeoutMs;
  let closing: Promise<void> | undefined;
  // Runs first: providers are asked to drain and their in-flight work may finish (up to drainMs)
  // while everything it needs is still up; readiness reports the shutdown from here on. Then the
  // ports stop accepting, and what the connections accepted until then still bring is served: a
  // request that arrived just after the pipeline was found idle would otherwise meet closed routing
  // queues or a closing socket (behind a balancer that has not yet seen the readiness).
  closers.add("provider drain", async () => {
    shuttingDown = true;
    listeners.drain();
    const until = Date.now() + drainMs;
    const left = () => Math.max(0, until - Date.now());
    await Promise.all([sessions.drainAll("coordinator_shutdown", drainMs), pipeline.quiesce(drainMs)]);
    await listeners.stopAccepting(left());
    await pipeline.quiesce(left());
  });
  return {
    url: listeners.url,
    peerUrl: listeners.peerUrl,
    metricsUrl: metricsListener?.url,
    adminKey: config.adminKey,
    config,
    registry,
    cluster,
    sessions,
    trust,
    metrics,
    accounts,
    catalog,
    billing,
    databaseUrl: db.url,
    close: (opts = {}) => {
      closing ??= (async () => {
        drainMs = opts.drainMs ?? drainMs;
        await closers.close();
        log.info("coordinator stopped");
      })();
      return closing;
    },
  };
}

/**
 * The cluster-wide provider directory: this replica's sessions written to it, the other replicas'
 * read from it. Its rows are deleted at shutdown after the providers were drained (the closer runs
 * before the sessions'), and its liveness is billing's heartbeat when billing runs.
 */
async function startDirectory(
  config: CoordinatorConfig,
  db: { pool: pg.Pool; url: string },
  { instanceId, notifications }: { instanceId: string; notifications: Notifications },
  registry: ProviderRegistry,
  trust: TrustManager,
  billing: Billing | undefined,
  log: Logger,
  closers: Closers,
): Promise<{ cluster: ClusterView; writer: DirectoryWriter; reader: DirectoryReader }> {
  const writer = new DirectoryWriter(
    db.pool,
    registry,
    trust,
    {
      instanceId,
      // The listen URL replaces it once the server listens (the port may be 0 until then).
      advertiseUrl: config.advertiseUrl ?? `http://${config.host}:${config.port}`,
      flushMs: config.directoryFlushMs,
      refreshMs: config.instanceHeartbeatMs,
      ownsLiveness: billing === undefined,
    },
    log,
  );
  await writer.start();
  closers.add("provider directory writer", () => writer.stop());
  const reader = new DirectoryReader(
    db.pool,
    notifications,
    { instanceId, pollMs: config.directoryPollMs, staleMs: config.instanceStaleMs },
    log,
  );
  await reader.start();
  closers.add("provider directory reader", () => reader.stop());
  return { cluster: new ClusterView(registry, writer, reader), writer, reader };
}

/**
 * The providers requests are served with: with a peer token, every provider in the cluster (the
 * other replicas' from the directory, forwarded to), else this replica's own.
 */
function providerPool(
  local: LocalProviderPool,
  reader: DirectoryReader,
  parts: {
    config: CoordinatorConfig;
    peers: PeerClients | undefined;
    log: Logger;
    closers: Closers;
    metrics: CoordinatorMetrics;
  },
): ProviderPool {
  const { peers, config, metrics } = parts;
  if (peers === undefined) return local;
  const remote = new RemoteProviders(peers, local.registry.performance, config, parts.log, (result, model) =>
    metrics.forwarded.inc({ direction: "sent", model, result }),
  );
  const unsubscribe = reader.subscribe((entries) => remote.sync(entries));
  remote.sync(reader.remote());
  parts.closers.add("forwarding", () => {
    unsubscribe();
    remote.close(serviceShuttingDown());
    peers.close();
  });
  return new ForwardingPool(local, remote);
}

function billingOptions(config: CoordinatorConfig): BillingOptions {
  return {
    providerShareBps: config.providerShareBps,
    referralShareBps: config.referralShareBps,
    reservationTtlSeconds: config.reservationTtlSeconds,
    reservationMaxSeconds: config.reservationMaxSeconds,
    heartbeatMs: config.instanceHeartbeatMs,
    ownerStaleMs: config.instanceStaleMs,
  };
}
