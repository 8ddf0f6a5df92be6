import { mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { readAccountToken } from "./config/account-token.js";
import { ConfigError, type ProviderConfig } from "./config/config.js";
import { coordinatorTransportProblem } from "./config/coordinator-transport.js";
import { selectModels } from "./config/model-inventory.js";
import { pidFileOf } from "./config/paths.js";
import type { Engine, EngineDevice, ModelFile } from "./engine/engine.js";
import { ProviderLink, type ProviderLinkOptions } from "./link/link.js";
import { describeHardware } from "./machine/hardware.js";
import { loadOrCreateIdentity, type ProviderIdentity } from "./machine/identity.js";
import { listenForMetrics, type MetricsListenOptions, type MetricsServer } from "./metrics/metrics-server.js";
import { ProviderMetrics } from "./metrics/provider-metrics.js";
import { acquirePidFile, type PidFile } from "./service/pid-file.js";
import {
  AttestationKeyError,
  type Attestor,
  createDaemonAttestor,
  type DaemonAttestationOptions,
} from "./trust/index.js";

/** The daemon's version, from the provider package's package.json (src/ and dist/ both sit beside it). */
export const DAEMON_VERSION: string = (
  createRequire(import.meta.url)("../package.json") as { version: string }
).version;

/** How long SIGTERM lets in-flight requests run before failing them. */
export const DEFAULT_DRAIN_DEADLINE_MS = 30_000;

export interface DaemonOptions {
  /** The engine to serve with; the daemon owns it from now on and closes it when it stops. */
  engine: Engine;
  logger: Logger;
  /** From `darkbloom login` (not implemented yet). */
  accountToken?: string;
  /** Link overrides, e.g. a faster reconnect backoff in tests. */
  link?: Partial<Pick<ProviderLinkOptions, "backoff" | "random" | "warmWindowMs">>;
  /** Skip loading the models before connecting (they load on first use). Default false. */
  lazyLoad?: boolean;
  /**
   * Attestation overrides (tests: a fixed signer, posture or binary hash), or false to register
   * without attestation (trust level none). Default: the machine's signer and state.
   */
  attestation?: DaemonAttestationOptions | false;
  /**
   * Serve GET /metrics and GET /healthz on this address. Off when unset: several daemons in one
   * process or on one machine (tests, the local network) must not contend for a port they did not
   * ask for; `darkbloom serve` sets it (127.0.0.1:9464 unless --metrics-listen says otherwise).
   */
  metrics?: MetricsListenOptions | undefined;
  /**
   * Dial the coordinator (default true). `serve --no-join` sets false: the engine loads the models
   * and the metrics/health listener runs, but no link is made, no attestation key is touched and no
   * account token is read, so a machine can be measured or inspected without joining the network.
   */
  join?: boolean;
}

export interface RunningDaemon {
  readonly config: ProviderConfig;
  /** The models registered with the coordinator. */
  readonly models: ModelFile[];
  readonly identity: ProviderIdentity;
  /** The coordinator link; undefined for a daemon started with `join: false`. */
  readonly link: ProviderLink | undefined;
  /** This daemon's metrics (its own registry), whether or not they are served. */
  readonly metrics: ProviderMetrics;
  /** http://host:port of the metrics listener; undefined when none was asked for or it could not bind. */
  readonly metricsUrl: string | undefined;
  /**
   * Graceful stop: no new work, in-flight requests finish (failed after `deadlineMs`), the stream is
   * closed, the engine closed and the PID file removed. Idempotent; resolves when done.
   */
  stop(options?: { deadlineMs?: number }): Promise<void>;
  /** Resolves once the daemon has stopped. */
  readonly stopped: Promise<void>;
  /** Why the daemon stopped on its own (the coordinator refused its registration); unset otherwise. */
  readonly failure: string | undefined;
}

/**
 * The models the engine can serve: one of a format it does not load (an MLX checkpoint with a GGUF
 * engine, or the reverse) is logged with the reason and left out; none left is a configuration
 * problem (exit 64 from `serve`), never a load failure.
 */
function servable(models: ModelFile[], engine: Engine, log: Logger): ModelFile[] {
  const refusals: string[] = [];
  const kept = models.filter((model) => {
    const reason = engine.unsupported?.(model);
    if (reason === undefined) return true;
    refusals.push(reason);
    log.error({ model: model.id, path: model.path, err: reason }, "model cannot be served by this engine");
    return false;
  });
  if (kept.length === 0 && refusals.length > 0) throw new ConfigError(refusals.join("; "));
  return kept;
}

/** A failure to start that is not a configuration problem (exit status 1). */
export class DaemonStartError extends Error {
  override readonly name = "DaemonStartError";
}

/**
 * A daemon joining the network on the CPU is refused unless --allow-cpu (before any model loads):
 * node-llama-cpp falls back to the CPU without a word (GPU binaries missing, a driver it cannot
 * use), and consumers would be routed to a machine serving at a fraction of what its hardware
 * promises.
 */
async function refuseCpu(engine: Engine): Promise<void> {
  let device: EngineDevice;
  try {
    device = await engine.device();
  } catch (error) {
    throw new DaemonStartError(`the engine could not start: ${(error as Error).message}`);
  }
  if (device.accelerator !== "cpu") return;
  throw new ConfigError(
    "the engine would compute on the CPU (it found no GPU it can use; `darkbloom doctor` says why): " +
      "pass --allow-cpu (DARKBLOOM_ALLOW_CPU=1) to serve anyway",
  );
}

/**
 * Starts the provider daemon: takes the data directory's PID file (AlreadyRunningError when another
 * daemon holds it), loads the X25519 identity, resolves the models to serve (ConfigError when one is
 * missing), loads them into the engine, and connects to the coordinator. Signals are the caller's:
 * on SIGTERM/SIGINT call stop().
 */
export async function startDaemon(config: ProviderConfig, options: DaemonOptions): Promise<RunningDaemon> {
  const { engine, logger: log } = options;
  let pidFile: PidFile;
  try {
    // The CLI's preflight says so first; this holds for any other caller.
    const transport = options.join === false ? undefined : coordinatorTransportProblem(config);
    if (transport) throw new ConfigError(transport);
    await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
    await mkdir(config.modelsDir, { recursive: true });
    await mkdir(dirname(config.logFile), { recursive: true });
    pidFile = await acquirePidFile(pidFileOf(config.dataDir));
  } catch (error) {
    await engine.close().catch(() => undefined);
    throw error;
  }
  const onExit = () => pidFile.releaseSync();
  process.once("exit", onExit);
  let metricsServer: MetricsServer | undefined;
  try {
    const identity = await loadOrCreateIdentity(config.dataDir);
    const candidates = servable(await selectModels(config.modelsDir, config.models), engine, log);
    if (options.join !== false && !config.allowCpu) await refuseCpu(engine);
    // Before the models load: their loads are counted, and an address the operator chose that
    // cannot be bound stops the start before minutes of loading.
    const metrics = new ProviderMetrics({
      engine,
      models: candidates.map((m) => m.id),
      version: DAEMON_VERSION,
      logger: log,
      defaultMetrics: options.metrics !== undefined,
    });
    engine.observe?.(metrics);
    if (options.metrics) {
      try {
        metricsServer = await listenForMetrics(metrics, options.metrics, log);
      } catch (error) {
        throw new DaemonStartError((error as Error).message);
      }
    }
    const models: ModelFile[] = [];
    if (options.lazyLoad) models.push(...candidates);
    else {
      for (const model of candidates) {
        const started = performance.now();
        try {
          await engine.load(model);
          // The engine may have lowered the context to fit memory: advertise what it accepts.
          const limit = engine.contextLimit?.(model.id);
          models.push(
            limit !== undefined && limit < model.contextLength ? { ...model, contextLength: limit } : model,
          );
          log.info(
            { model: model.id, sizeBytes: model.sizeBytes, ms: Math.round(performance.now() - started) },
            "model loaded",
          );
        } catch (error) {
          log.error(
            { model: model.id, path: model.path, err: (error as Error).message },
            "model failed to load",
          );
        }
      }
      if (models.length === 0) {
        throw new DaemonStartError(
          `none of the models could be loaded (${candidates.map((m) => m.id).join(", ")}); see the log for why`,
        );
      }
    }

    // The end of every stop, after the link (if any) drained: the engine, then the metrics listener
    // (last, so that a scrape during the drain still sees it), then the PID file.
    const closeLocal = async (): Promise<void> => {
      await engine
        .close()
        .catch((e: unknown) => log.warn({ err: (e as Error).message }, "engine close failed"));
      await metricsServer?.close();
      await pidFile.release();
      process.off("exit", onExit);
      log.info("darkbloom provider stopped");
    };

    if (options.join === false) {
      log.info(
        {
          version: DAEMON_VERSION,
          pid: process.pid,
          models: models.map((m) => m.id),
          engine: engine.backend,
        },
        "darkbloom provider started without joining the network",
      );
      let stopping: Promise<void> | undefined;
      let resolveStopped!: () => void;
      const stopped = new Promise<void>((resolve) => {
        resolveStopped = resolve;
      });
      // Nothing was accepted from a network, so there is nothing to drain: close in order.
      const stop = (): Promise<void> => {
        stopping ??= closeLocal().then(resolveStopped);
        return stopping;
      };
      return {
        config,
        models,
        identity,
        link: undefined,
        metrics,
        metricsUrl: metricsServer?.url,
        stop,
        stopped,
        failure: undefined,
      };
    }

    const hardware = describeHardware(await engine.device());
    let attestor: Attestor | undefined;
    if (options.attestation !== false) {
      try {
        attestor = await createDaemonAttestor(
          {
            dataDir: config.dataDir,
            machineId: identity.machineId,
            daemonVersion: DAEMON_VERSION,
            hardware,
            encryptionPublicKey: identity.encryptionKey.publicKey,
            logger: log,
            tpm: config.tpm,
          },
          options.attestation,
        );
      } catch (error) {
        if (error instanceof AttestationKeyError) throw new DaemonStartError(error.message);
        throw error;
      }
      log.info(
        {
          signer: attestor.signer.kind,
          persistent: attestor.signer.persistent,
          publicKey: Buffer.from(attestor.signer.publicKey()).toString("hex"),
        },
        "attestation key ready",
      );
    }

    const link = new ProviderLink({
      coordinatorUrl: config.coordinatorUrl,
      engine,
      models,
      machineId: identity.machineId,
      encryptionKey: identity.encryptionKey.box,
      // `darkbloom login` links the installation to an account; earnings are paid there.
      accountToken: options.accountToken ?? (await readAccountToken(config.dataDir)) ?? "",
      daemonVersion: DAEMON_VERSION,
      hardware,
      attestor,
      // Responses are signed with the attestation key: the key the coordinator verified at register.
      responseSigner: attestor?.signer,
      knobs: {
        kvBits: config.kvBits ?? 0,
        maxContext: config.maxContext,
        maxBatch: config.maxBatch,
        idleTimeoutMinutes: config.idleTimeoutMinutes,
        // "auto" is chosen per model at load; the register reports the largest choice (0: none loaded yet).
        threads:
          config.threads === "auto"
            ? Math.max(0, ...models.map((m) => engine.threadsFor?.(m.id) ?? 0))
            : config.threads,
      },
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      observer: metrics,
      logger: log,
      ...options.link,
    });
    metrics.attachLink(link);
    link.on("disconnected", (d) => metrics.linkDisconnected(d.reason));
    link.start();
    log.info(
      {
        version: DAEMON_VERSION,
        pid: process.pid,
        coordinator: config.coordinatorUrl,
        machineId: identity.machineId,
        models: models.map((m) => m.id),
        engine: engine.backend,
        maxBatch: config.maxBatch,
        maxContext: config.maxContext,
        kvBits: config.kvBits ?? 0,
        threads: Object.fromEntries(models.map((m) => [m.id, engine.threadsFor?.(m.id) ?? config.threads])),
      },
      "darkbloom provider started",
    );

    let resolveStopped!: () => void;
    const stopped = new Promise<void>((resolve) => {
      resolveStopped = resolve;
    });
    let stopping: Promise<void> | undefined;
    const stop = (opts: { deadlineMs?: number } = {}): Promise<void> => {
      stopping ??= (async () => {
        const deadlineMs = opts.deadlineMs ?? DEFAULT_DRAIN_DEADLINE_MS;
        log.info({ deadlineMs, inFlight: link.inFlight }, "draining");
        try {
          await link.stop(deadlineMs);
        } finally {
          await closeLocal();
          resolveStopped();
        }
      })();
      return stopping;
    };
    // A refused registration cannot succeed by retrying: stop, and say why.
    let failure: string | undefined;
    link.on("disconnected", (d) => {
      if (d.reason !== "rejected") return;
      failure = `the coordinator refused this provider: ${d.error instanceof ConnectError ? d.error.rawMessage : String(d.error)}`;
      void stop({ deadlineMs: 0 });
    });
    return {
      config,
      models,
      identity,
      link,
      metrics,
      metricsUrl: metricsServer?.url,
      stop,
      stopped,
      get failure() {
        return failure;
      },
    };
  } catch (error) {
    await metricsServer?.close();
    await engine.close().catch(() => undefined);
    await pidFile.release();
    process.off("exit", onExit);
    throw error;
  }
}
