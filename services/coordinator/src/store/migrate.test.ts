import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { ensureDatabaseExists } from "./database.js";
import { assertSchemaCurrent, migrate, migrationLabel, SchemaBehindError } from "./migrate.js";
import { migrations } from "./migrations/index.js";

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

async function freshPool(name: string): Promise<pg.Pool> {
  await ensureDatabaseExists(server.url, name);
  const url = new URL(server.url);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 4 });
  pool.on("error", () => undefined);
  return pool;
}

describe("assertSchemaCurrent", () => {
  it("names every pending migration, on an empty database and on one a migration behind", async () => {
    const pool = await freshPool("schema_check");
    try {
      const empty = await assertSchemaCurrent(pool).catch((e: unknown) => e);
      expect(empty).toBeInstanceOf(SchemaBehindError);
      expect((empty as SchemaBehindError).pending).toEqual(migrations.map(migrationLabel));
      await migrate(pool, { migrations: migrations.slice(0, -1) });
      const behind = await assertSchemaCurrent(pool).catch((e: unknown) => e);
      const last = migrationLabel(migrations.at(-1)!);
      expect((behind as SchemaBehindError).pending).toEqual([last]);
      expect((behind as Error).message).toContain(`1 migration(s) pending (${last})`);
      await migrate(pool);
      await expect(assertSchemaCurrent(pool)).resolves.toBeUndefined();
    } finally {
      await pool.end();
    }
  });
});

describe("migrate", () => {
  it("applies every migration once and records it", async () => {
    const pool = await freshPool("migrate_once");
    try {
      const first = await migrate(pool);
      expect(first.map((m) => m.version)).toEqual(migrations.map((m) => m.version));
      expect(await migrate(pool)).toEqual([]);
      const { rows } = await pool.query("SELECT version, name FROM schema_migrations ORDER BY version");
      expect(rows).toEqual(migrations.map(({ version, name }) => ({ version, name })));
    } finally {
      await pool.end();
    }
  });

  it("is safe when several coordinators migrate at once", async () => {
    const pools = await Promise.all([0, 1, 2, 3].map(() => freshPool("migrate_concurrent")));
    try {
      const results = await Promise.all(pools.map((pool) => migrate(pool)));
      const applied = results.flat().map((m) => m.version);
      expect(applied.sort((x, y) => x - y)).toEqual(migrations.map((m) => m.version));
      const { rows } = await pools[0]!.query("SELECT count(*)::int AS n FROM schema_migrations");
      expect(rows[0].n).toBe(migrations.length);
    } finally {
      await Promise.all(pools.map((pool) => pool.end()));
    }
  });

  it("rolls a failed migration back entirely and reports which one failed", async () => {
    const pool = await freshPool("migrate_failure");
    try {
      const latest = migrations.at(-1)?.version ?? 0;
      const broken = [
        ...migrations,
        {
          version: latest + 1,
          name: "broken",
          sql: "CREATE TABLE half_done (x int); SELECT 1/0;",
        },
      ];
      const label = migrationLabel({ version: latest + 1, name: "broken" });
      await expect(migrate(pool, { migrations: broken })).rejects.toThrow(
        new RegExp(`${label} failed: division by zero`),
      );
      const { rows } = await pool.query(
        "SELECT to_regclass('half_done') AS t, max(version) AS v FROM schema_migrations",
      );
      expect(rows[0]).toEqual({ t: null, v: latest });
    } finally {
      await pool.end();
    }
  });

  it("refuses an unbalanced ledger transaction and any change to posted entries", async () => {
    const pool = await freshPool("migrate_ledger");
    try {
      await migrate(pool);
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
        const tx = await client.query("INSERT INTO ledger_transactions (kind) VALUES ('test') RETURNING id");
        await client.query(
          "INSERT INTO ledger_entries (transaction_id, account, amount_micro_usd, bucket) VALUES ($1, 'acct_a', 5, 'credited')",
          [tx.rows[0].id],
        );
        await expect(client.query("COMMIT")).rejects.toThrow(/unbalanced: its entries sum to 5/);
      } finally {
        client.release();
      }
      const tx = await pool.query(
        `WITH t AS (INSERT INTO ledger_transactions (kind) VALUES ('test') RETURNING id)
         INSERT INTO ledger_entries (transaction_id, account, amount_micro_usd, bucket)
         SELECT id, account, amount, 'credited' FROM t, (VALUES ('acct_a', 5), ('platform:x', -5)) v(account, amount)
         RETURNING transaction_id`,
      );
      expect(tx.rowCount).toBe(2);
      await expect(pool.query("UPDATE ledger_entries SET amount_micro_usd = 6")).rejects.toThrow(
        /append-only/,
      );
      await expect(pool.query("DELETE FROM ledger_transactions")).rejects.toThrow(/append-only/);
    } finally {
      await pool.end();
    }
  });
});
