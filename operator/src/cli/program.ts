import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { type CliIo, createProgram, runProgram, UsageError } from "@darkbloom/cli-kit";
import { KubeConfig } from "@kubernetes/client-node";
import { type Command, InvalidArgumentError } from "commander";
import { pino } from "pino";
import { renderCrdsYaml } from "../api/v1alpha1/crds.js";
import { startOperator } from "../manager.js";
import { serveHealth, serveMetrics } from "../runtime/http-endpoints.js";

const PROGRAM_NAME = "darkbloom-operator";
const { version } = createRequire(import.meta.url)("../../package.json") as { version: string };
/** Where Kubernetes mounts a pod's service account namespace. */
const SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/** The `darkbloom-operator` command line. */
export function buildProgram(io: CliIo): Command {
  const program = createProgram(io, {
    name: PROGRAM_NAME,
    description: "Darkbloom Kubernetes operator: reconciles Coordinator and ProviderRelease resources",
    version,
  });
  program
    .command("run")
    .description("run the controllers until SIGTERM (with leader election among replicas)")
    .option(
      "--kubeconfig <file>",
      "kubeconfig to use (env KUBECONFIG; default: in-cluster, else ~/.kube/config)",
    )
    .option("--namespace <ns>", "manage one namespace only (env WATCH_NAMESPACE; default: all)")
    .option("--no-leader-elect", "run the controllers without a leader lease (one replica only)")
    .option("--lease-name <name>", "the leader Lease's name (default darkbloom-operator)")
    .option("--lease-namespace <ns>", "the leader Lease's namespace (env POD_NAMESPACE; default: the pod's)")
    .option("--lease-duration <duration>", "how long a lease holds without renewal (default 15s)", duration)
    .option(
      "--renew-deadline <duration>",
      "the leader gives up if it cannot renew for this long (default 10s)",
      duration,
    )
    .option("--retry-period <duration>", "how often to try to acquire or renew (default 2s)", duration)
    .option(
      "--health-addr <host:port>",
      "liveness and readiness: /healthz, /readyz (default 0.0.0.0:8081)",
      address,
    )
    .option("--metrics-addr <host:port>", "Prometheus metrics: /metrics (default 0.0.0.0:8080)", address)
    .option("--log-level <level>", "fatal, error, warn, info, debug or trace (default info)", logLevel)
    .action(async (opts: RunOptions) => {
      const leaseDurationMs = opts.leaseDuration ?? 15_000;
      const renewDeadlineMs = opts.renewDeadline ?? 10_000;
      const retryPeriodMs = opts.retryPeriod ?? 2_000;
      if (renewDeadlineMs >= leaseDurationMs)
        throw new UsageError("--renew-deadline must be shorter than --lease-duration");
      if (retryPeriodMs >= renewDeadlineMs)
        throw new UsageError("--retry-period must be shorter than --renew-deadline");
      const kubeConfig = new KubeConfig();
      const file = opts.kubeconfig ?? io.env.KUBECONFIG;
      if (file) kubeConfig.loadFromFile(file);
      else kubeConfig.loadFromDefault();
      const log = pino({ level: opts.logLevel ?? "info", base: { component: PROGRAM_NAME } });
      const health = opts.healthAddr ?? { host: "0.0.0.0", port: 8081 };
      const metricsAt = opts.metricsAddr ?? { host: "0.0.0.0", port: 8080 };
      let lost = false;
      let stopLost: () => void = () => undefined;
      const lostLeadership = new Promise<string>((resolve) => {
        stopLost = () => resolve("lost leadership");
      });
      const operator = await startOperator({
        kubeConfig,
        log,
        namespace: opts.namespace ?? io.env.WATCH_NAMESPACE,
        leaderElection: opts.leaderElect
          ? {
              name: opts.leaseName ?? "darkbloom-operator",
              namespace: opts.leaseNamespace ?? io.env.POD_NAMESPACE ?? podNamespace() ?? "default",
              leaseDurationMs,
              renewDeadlineMs,
              retryPeriodMs,
            }
          : undefined,
        ...(io.env.POD_NAME ? { identity: io.env.POD_NAME } : {}),
        onLostLeadership: () => {
          lost = true;
          stopLost();
        },
      });
      // Ready: a follower at once (a warm standby); the leader once its caches have synced.
      const probes = await serveHealth(
        health.host,
        health.port,
        () => !lost && (!operator.isLeader() || operator.isReconciling()),
      );
      const metrics = await serveMetrics(metricsAt.host, metricsAt.port, operator.metrics.registry);
      io.stdout(`health on ${probes.url}/healthz, metrics on ${metrics.url}/metrics\n`);
      const reason = await Promise.race([io.shutdownSignal(), lostLeadership]);
      io.stdout(`${reason}: shutting down\n`);
      await operator.close();
      await Promise.all([probes.close(), metrics.close()]);
      // Another replica leads now; this one's caches may be stale: exit non-zero, the pod restarts.
      if (lost) throw new Error("lost the leader lease");
    });
  program
    .command("crds")
    .description("print the CustomResourceDefinitions (YAML) the operator's types define")
    .action(() => io.stdout(renderCrdsYaml()));
  return program;
}

interface RunOptions {
  kubeconfig?: string;
  namespace?: string;
  leaderElect: boolean;
  leaseName?: string;
  leaseNamespace?: string;
  leaseDuration?: number;
  renewDeadline?: number;
  retryPeriod?: number;
  healthAddr?: { host: string; port: number };
  metricsAddr?: { host: string; port: number };
  logLevel?: string;
}

export function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  return runProgram(buildProgram(io), argv, io);
}

function podNamespace(): string | undefined {
  try {
    return readFileSync(SERVICE_ACCOUNT_NAMESPACE, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

function duration(value: string): number {
  const match = /^(\d{1,7})(ms|s|m|h)$/.exec(value);
  const ms = match ? Number(match[1]) * (DURATION_UNITS_MS[match[2] ?? ""] ?? 0) : 0;
  if (!(ms > 0)) throw new InvalidArgumentError("expected a duration such as 500ms, 15s or 1m");
  return ms;
}

function address(value: string): { host: string; port: number } {
  const match = /^(.*):(\d{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || !(port >= 0 && port <= 65_535))
    throw new InvalidArgumentError("expected host:port, e.g. 0.0.0.0:8081");
  return { host: match[1] || "0.0.0.0", port };
}

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

function logLevel(value: string): string {
  if (!LEVELS.includes(value)) throw new InvalidArgumentError(`expected one of ${LEVELS.join(", ")}`);
  return value;
}
