import type pg from "pg";
import type { Logger } from "pino";
import { migrations as allMigrations, type Migration } from "./migrations/index.js";

/** A migration this call applied. */
export interface AppliedMigration {
  version: number;
  name: string;
}

export interface MigrateOptions {
  logger?: Logger;
  /** The migrations to apply; the built-in list unless a test passes its own. */
  migrations?: readonly Migration[];
}

/** Session-level advisory lock that serialises migrations across coordinators sharing a database. */
const MIGRATION_LOCK_KEY = 0x44_42_4d_49_47; // "DBMIG"

/**
 * Applies every migration not yet recorded in `schema_migrations`, each in its own transaction, and
 * returns those it applied (none when the schema is current). Coordinators that start together queue
 * on an advisory lock, so each migration runs exactly once.
 */
export async function migrate(pool: pg.Pool, options: MigrateOptions = {}): Promise<AppliedMigration[]> {
  const migrations = options.migrations ?? allMigrations;
  assertOrdered(migrations);
  const client = await pool.connect();
  let failure: unknown;
  try {
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    try {
      await client.query(`
        CREATE TABLE IF NOT EXISTS schema_migrations (
          version     integer PRIMARY KEY,
          name        text NOT NULL,
          applied_at  timestamptz NOT NULL DEFAULT now()
        )`);
      const { rows } = await client.query<{ version: number }>("SELECT version FROM schema_migrations");
      const done = new Set(rows.map((row) => row.version));
      const applied: AppliedMigration[] = [];
      for (const migration of migrations) {
        if (done.has(migration.version)) continue;
        await applyOne(client, migration);
        options.logger?.info({ version: migration.version, name: migration.name }, "applied migration");
        applied.push({ version: migration.version, name: migration.name });
      }
      const newest = migrations.at(-1)?.version ?? 0;
      const unknown = [...done].filter((version) => version > newest);
      if (unknown.length > 0) {
        options.logger?.warn(
          { unknownVersions: unknown },
          "the database has migrations newer than this coordinator knows",
        );
      }
      return applied;
    } finally {
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);
    }
  } catch (error) {
    failure = error;
    throw error;
  } finally {
    // A connection that failed mid-way may still hold the lock or a transaction: discard it.
    client.release(failure instanceof Error ? failure : undefined);
  }
}

/**
 * Throws SchemaBehindError when migrations this coordinator knows are not applied: what a replica
 * started with `--schema check` does instead of migrating.
 */
export async function assertSchemaCurrent(
  pool: pg.Pool,
  migrations: readonly Migration[] = allMigrations,
): Promise<void> {
  // A database never migrated has no table yet (the subquery cannot be planned without it).
  const table = await pool.query<{ exists: boolean }>(
    "SELECT to_regclass('schema_migrations') IS NOT NULL AS exists",
  );
  const done = new Set<number>();
  if (table.rows[0]?.exists) {
    const { rows } = await pool.query<{ version: number }>("SELECT version FROM schema_migrations");
    for (const row of rows) done.add(row.version);
  }
  const pending = migrations.filter((migration) => !done.has(migration.version));
  if (pending.length > 0) throw new SchemaBehindError(pending.map(migrationLabel));
}

/** The database lacks migrations this coordinator needs (and was told not to apply them itself). */
export class SchemaBehindError extends Error {
  constructor(readonly pending: string[]) {
    super(
      `the database schema is behind this coordinator: ${pending.length} migration(s) pending ` +
        `(${pending.join(", ")}); run \`darkbloom-coordinator migrate\` first, or start with --schema migrate`,
    );
    this.name = "SchemaBehindError";
  }
}

async function applyOne(client: pg.PoolClient, migration: Migration): Promise<void> {
  await client.query("BEGIN");
  try {
    await client.query(migration.sql);
    await client.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [
      migration.version,
      migration.name,
    ]);
    await client.query("COMMIT");
  } catch (error) {
    await client.query("ROLLBACK");
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`migration ${migrationLabel(migration)} failed: ${reason}`, { cause: error });
  }
}

/** "0001_init": the label migrations are known by in logs and CLI output. */
export function migrationLabel(migration: { version: number; name: string }): string {
  return `${String(migration.version).padStart(4, "0")}_${migration.name}`;
}

/**
 * Versions must strictly increase from 1. A gap is allowed: work on parallel branches reserves
 * version numbers ahead, and a branch may lack a number another branch holds until they merge.
 */
function assertOrdered(migrations: readonly Migration[]): void {
  let previous = 0;
  for (const migration of migrations) {
    if (!Number.isInteger(migration.version) || migration.version <= previous) {
      throw new Error(
        `migration ${migrationLabel(migration)} is out of order: expected a version above ${previous}`,
      );
    }
    previous = migration.version;
  }
}
