import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { TrustLevelName } from "@darkbloom/protocol";
import type { Command } from "commander";
import { resolveConfig } from "../config.js";
import { ensureDataDir } from "../store/data-dir.js";
import { readOrCreateSecretFile } from "../store/secret-file.js";
import { EkTrustStore } from "../trust/tpm/index.js";
import { type CliIo, UsageError } from "./io.js";
import {
  databaseUrl,
  defaultDataDir,
  fromEnv,
  hardwareKeys,
  httpUrl,
  logLevel,
  pcrDigests,
  port,
  schemaMode,
  semver,
  trustLevel,
} from "./parse.js";
import { accessFrom, addAccessOptions, metricsTokenFor } from "./serve-access.js";
import { addListenerOptions, listenersFrom } from "./serve-listeners.js";
import { addTuningOptions, tuningFrom } from "./serve-tuning.js";

const DEFAULT_PORT = 8080;

/** `serve`: runs the coordinator in the foreground until SIGINT or SIGTERM. */
export function addServeCommand(program: Command, io: CliIo): void {
  const serve = program
    .command("serve")
    .description("run the coordinator in the foreground")
    .option("--port <port>", `listen port (env PORT, default ${DEFAULT_PORT})`, port)
    .option("--host <host>", "listen address (default 127.0.0.1)")
    .option("--data-dir <dir>", "state directory (env DARKBLOOM_DATA_DIR, default ~/.darkbloom/coordinator)")
    .option("--database-url <url>", "external PostgreSQL (env DATABASE_URL; default: embedded)", databaseUrl)
    .option(
      "--schema <mode>",
      "migrate: apply pending database migrations at start; check: refuse to start while any is pending, for deployments that run `migrate` first (env DARKBLOOM_SCHEMA, default migrate)",
      schemaMode,
    )
    .option(
      "--advertise-url <url>",
      "where other coordinator replicas reach this one's PeerService (env DARKBLOOM_ADVERTISE_URL; " +
        "default: the listen URL, the peer port's with --peer-port); with --peer-port its port must " +
        "be the peer port: name that one or none (it is filled in)",
      httpUrl,
    )
    .option(
      "--admin-key <key>",
      "admin API key (env DARKBLOOM_ADMIN_KEY; default: generated in <data dir>/admin.key)",
    )
    .option(
      "--log-level <level>",
      "fatal, error, warn, info, debug, trace or silent (default info)",
      logLevel,
    )
    .option(
      "--min-trust <level>",
      "lowest provider trust routed to: none, self_signed, tpm or hardware (env DARKBLOOM_MIN_TRUST, default self_signed)",
      trustLevel,
    )
    .option(
      "--min-provider-version <semver>",
      "daemons older than this are not routed to (env DARKBLOOM_MIN_PROVIDER_VERSION; releases may raise it)",
      semver,
    )
    .option(
      "--hardware-key <hex>",
      "a Secure Enclave public key enrolled as hardware-bound (repeatable, comma-separated; env DARKBLOOM_HARDWARE_KEYS)",
      hardwareKeys,
    )
    .option(
      "--tpm-ek-ca <file>",
      "PEM file of TPM manufacturers' EK CA certificates: TPM providers whose EK chains to one earn trust tpm (env DARKBLOOM_TPM_EK_CA)",
    )
    .option(
      "--tpm-pcr-allow <hex>",
      "an allowed TPM boot state, the PCR digest published per provider (repeatable, comma-separated; env DARKBLOOM_TPM_PCR_ALLOW; default any)",
      pcrDigests,
    );
  addAccessOptions(serve);
  addListenerOptions(serve);
  addTuningOptions(serve).action(async (opts: ServeOptions) => {
    const dataDir = opts.dataDir ? resolve(opts.dataDir) : defaultDataDir(io.env);
    const givenKey = opts.adminKey || io.env.DARKBLOOM_ADMIN_KEY;
    // Validated before anything is written (the admin key file).
    const trust = {
      minTrustLevel: opts.minTrust ?? fromEnv(io.env, "DARKBLOOM_MIN_TRUST", trustLevel),
      minProviderVersion:
        opts.minProviderVersion ?? fromEnv(io.env, "DARKBLOOM_MIN_PROVIDER_VERSION", semver),
      hardwareKeys: opts.hardwareKey ?? fromEnv(io.env, "DARKBLOOM_HARDWARE_KEYS", (v) => hardwareKeys(v)),
      tpmEkCaFile: await checkEkCa(opts.tpmEkCa ?? io.env.DARKBLOOM_TPM_EK_CA),
      tpmPcrAllowlist:
        opts.tpmPcrAllow ?? fromEnv(io.env, "DARKBLOOM_TPM_PCR_ALLOW", (v) => pcrDigests(v)) ?? [],
    };
    const tuning = tuningFrom(opts as Record<string, unknown>, io.env);
    const access = accessFrom(opts as Record<string, unknown>, io.env);
    const limits = resolveConfig({ dataDir, adminKey: "", ...tuning });
    // A live coordinator must record itself alive more often than the others presume it dead.
    if (limits.instanceHeartbeatMs >= limits.instanceStaleMs) {
      throw new UsageError("--instance-heartbeat must be shorter than --instance-stale");
    }
    // A live replica's directory rows are re-read before they would look stale.
    if (limits.directoryPollMs >= limits.instanceStaleMs) {
      throw new UsageError("--directory-poll must be shorter than --instance-stale");
    }
    const mainPort = opts.port ?? fromEnv(io.env, "PORT", port) ?? DEFAULT_PORT;
    const advertiseUrl = opts.advertiseUrl ?? fromEnv(io.env, "DARKBLOOM_ADVERTISE_URL", httpUrl);
    const listeners = listenersFrom(opts as Record<string, unknown>, io.env, {
      port: mainPort,
      advertiseUrl,
    });
    const metricsToken = await metricsTokenFor(access, dataDir);
    const config = {
      host: opts.host ?? "127.0.0.1",
      port: mainPort,
      dataDir,
      databaseUrl: opts.databaseUrl ?? fromEnv(io.env, "DATABASE_URL", databaseUrl),
      schema: opts.schema ?? fromEnv(io.env, "DARKBLOOM_SCHEMA", schemaMode) ?? "migrate",
      advertiseUrl,
      ...listeners,
      adminKey: givenKey || (await adminKeyFile(dataDir)),
      logLevel: opts.logLevel ?? "info",
      ...trust,
      ...tuning,
      ...access,
      metricsToken: metricsToken.token,
    };
    // Loaded here so that the other commands do not load the whole server.
    const { startCoordinator } = await import("../coordinator.js");
    const coordinator = await startCoordinator(config);
    io.stdout(`listening on ${coordinator.url}\n`);
    if (coordinator.peerUrl) io.stdout(`peers on ${coordinator.peerUrl}\n`);
    if (!givenKey) io.stdout(`admin key in ${join(dataDir, "admin.key")}\n`);
    if (coordinator.metricsUrl) io.stdout(`metrics on ${coordinator.metricsUrl}/metrics\n`);
    if (metricsToken.file) io.stdout(`metrics token in ${metricsToken.file}\n`);
    const signal = await io.shutdownSignal();
    io.stdout(`${signal}: shutting down\n`);
    await coordinator.close();
  });
}

interface ServeOptions {
  port?: number;
  host?: string;
  dataDir?: string;
  databaseUrl?: string;
  schema?: "migrate" | "check";
  advertiseUrl?: string;
  adminKey?: string;
  logLevel?: string;
  minTrust?: TrustLevelName;
  minProviderVersion?: string;
  hardwareKey?: string[];
  tpmEkCa?: string;
  tpmPcrAllow?: string[];
}

/** The admin key kept in `<dataDir>/admin.key` (mode 0600), generated on first use. */
export async function adminKeyFile(dataDir: string): Promise<string> {
  await ensureDataDir(dataDir);
  return readOrCreateSecretFile(
    join(dataDir, "admin.key"),
    () => `dbadm_${randomBytes(32).toString("base64url")}`,
  );
}

/**
 * The EK CA bundle named by --tpm-ek-ca, as an absolute path, checked now so that a wrong file is a
 * usage error, not a crash (the coordinator re-reads it when it changes).
 */
async function checkEkCa(path: string | undefined): Promise<string> {
  if (path === undefined || path === "") return "";
  let pem: string;
  try {
    pem = await readFile(path, "utf8");
  } catch (error) {
    throw new UsageError(
      `--tpm-ek-ca ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  try {
    EkTrustStore.fromPem(pem);
  } catch (error) {
    throw new UsageError(`--tpm-ek-ca ${path}: ${(error as Error).message}`);
  }
  return resolve(path);
}
