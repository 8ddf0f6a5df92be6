import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { pino } from "pino";
import { startEmbeddedPostgres } from "../store/embedded-postgres.js";
import { migrate } from "../store/migrate.js";

/** A throwaway PostgreSQL server for one test file. */
export interface TestPostgres {
  /** The server's URL (database "postgres"), to pass to `createTestDatabase`. */
  url: string;
  /** Stops the server and deletes its files. */
  stop(): Promise<void>;
}

/** A fresh, migrated database on a test server. */
export interface TestDatabase {
  url: string;
  pool: pg.Pool;
  /** Ends the pool and drops the database. */
  drop(): Promise<void>;
}

/**
 * Starts one real PostgreSQL server in a temporary directory (fsync off). Start one per test file in
 * `beforeAll` and stop it in `afterAll`; create databases on it per test or per describe block.
 */
export async function startTestPostgres(): Promise<TestPostgres> {
  const root = await mkdtemp(join(tmpdir(), "darkbloom-test-pg-"));
  // As root the server runs as the "postgres" user, which must be able to enter the directory.
  if (process.getuid?.() === 0) await chmod(root, 0o755);
  try {
    const server = await startEmbeddedPostgres({
      dir: join(root, "cluster"),
      password: randomBytes(18).toString("base64url"),
      logger: pino({ level: "silent" }),
      unsafeFast: true,
    });
    return {
      url: server.url("postgres"),
      stop: async () => {
        await server.stop();
        await rm(root, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(root, { recursive: true, force: true });
    throw error;
  }
}

/** Creates a uniquely named database on the server at `serverUrl` and applies every migration. */
export async function createTestDatabase(serverUrl: string): Promise<TestDatabase> {
  const name = `test_${randomBytes(8).toString("hex")}`;
  await withClient(serverUrl, (client) => client.query(`CREATE DATABASE ${name}`));
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 10 });
  pool.on("error", () => undefined); // connections are cut when the database is dropped
  try {
    await migrate(pool);
  } catch (error) {
    await pool.end();
    throw error;
  }
  return {
    url: url.toString(),
    pool,
    drop: async () => {
      await pool.end();
      await withClient(serverUrl, (client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}
