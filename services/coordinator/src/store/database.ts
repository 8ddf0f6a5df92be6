import { access } from "node:fs/promises";
import { join, resolve } from "node:path";
import pg from "pg";
import type { Logger } from "pino";
import { ensureDataDir } from "./data-dir.js";
import { startEmbeddedPostgres } from "./embedded-postgres.js";
import { readOrCreateSecretFile } from "./secret-file.js";

/** The database the coordinator keeps its state in, inside the embedded cluster. */
export const EMBEDDED_DATABASE_NAME = "darkbloom";

export interface OpenDatabaseOptions {
  /** An external PostgreSQL server; when absent, an embedded one runs from `dataDir`. */
  databaseUrl?: string;
  /** Holds the embedded cluster (`postgres/`) and its password file (`postgres.password`). */
  dataDir: string;
  logger: Logger;
  /** The pool's size (default 20). */
  maxConnections?: number;
  /** The embedded server's loopback port; a free one when absent. */
  embeddedPort?: number;
}

export interface Database {
  pool: pg.Pool;
  /** The connection URL. It holds the password: never log it (see `redactDatabaseUrl`). */
  url: string;
  /** Whether the server is the embedded one, stopped by `close()`. */
  embedded: boolean;
  /** Ends the pool and stops the embedded server; safe to call more than once. */
  close(): Promise<void>;
}

/**
 * Connects to `databaseUrl`, or starts the embedded PostgreSQL whose cluster persists in
 * `<dataDir>/postgres` (created with a generated password on first use), and checks the connection.
 * Migrations are not applied here: call `migrate(database.pool)`.
 */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  const logger = options.logger;
  if (options.databaseUrl) {
    const pool = createPool(options.databaseUrl, options, logger);
    await checkConnection(pool, options.databaseUrl);
    logger.info({ database: redactDatabaseUrl(options.databaseUrl) }, "connected to PostgreSQL");
    return { pool, url: options.databaseUrl, embedded: false, close: once(() => pool.end()) };
  }

  const dataDir = resolve(options.dataDir);
  await ensureDataDir(dataDir);
  const clusterDir = join(dataDir, "postgres");
  const passwordFile = join(dataDir, "postgres.password");
  if ((await exists(join(clusterDir, "PG_VERSION"))) && !(await exists(passwordFile))) {
    throw new Error(
      `${passwordFile} is missing: the embedded PostgreSQL cluster in ${clusterDir} cannot be used`,
    );
  }
  const password = await readOrCreateSecretFile(passwordFile);
  const server = await startEmbeddedPostgres({
    dir: clusterDir,
    password,
    logger,
    ...(options.embeddedPort ? { port: options.embeddedPort } : {}),
  });
  try {
    await ensureDatabaseExists(server.url("postgres"), EMBEDDED_DATABASE_NAME);
  } catch (error) {
    await server.stop();
    throw error;
  }
  const url = server.url(EMBEDDED_DATABASE_NAME);
  const pool = createPool(url, options, logger);
  return {
    pool,
    url,
    embedded: true,
    close: once(async () => {
      try {
        await pool.end();
      } finally {
        await server.stop();
      }
    }),
  };
}

/** Creates `name` on the server at `serverUrl` unless it exists. */
export async function ensureDatabaseExists(serverUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (rowCount === 0) {
      await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`).catch((error: unknown) => {
        // Created concurrently: 42P04 duplicate_database, or 23505 when both inserts race in the catalog.
        const code = (error as { code?: string }).code;
        if (code !== "42P04" && code !== "23505") throw error;
      });
    }
  } finally {
    await client.end();
  }
}

/** The URL with its password replaced by "***", for logs and messages. */
export function redactDatabaseUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable database URL)";
  }
}

function createPool(url: string, options: OpenDatabaseOptions, logger: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.maxConnections ?? 20,
    application_name: "darkbloom-coordinator",
    connectionTimeoutMillis: 10_000,
  });
  // An idle client whose server connection drops emits "error"; unhandled, it would crash the process.
  pool.on("error", (error) => logger.warn({ err: error.message }, "idle PostgreSQL connection failed"));
  return pool;
}

async function checkConnection(pool: pg.Pool, url: string): Promise<void> {
  try {
    await pool.query("SELECT 1");
  } catch (error) {
    await pool.end();
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`cannot connect to PostgreSQL at ${redactDatabaseUrl(url)}: ${reason}`, { cause: error });
  }
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let result: Promise<void> | undefined;
  return () => {
    result ??= fn();
    return result;
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
