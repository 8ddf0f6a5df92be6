import { resolve } from "node:path";
import type { Command } from "commander";
import { pino } from "pino";
import { openDatabase } from "../store/database.js";
import { migrate, migrationLabel } from "../store/migrate.js";
import { migrations } from "../store/migrations/index.js";
import type { CliIo } from "./io.js";
import { databaseUrl, defaultDataDir, fromEnv, logLevel } from "./parse.js";

/** `migrate`: brings a database's schema up to date and says what it applied. */
export function addMigrateCommand(program: Command, io: CliIo): void {
  program
    .command("migrate")
    .description("apply pending database migrations")
    .option(
      "--database-url <url>",
      "external PostgreSQL (env DATABASE_URL; default: the embedded one)",
      databaseUrl,
    )
    .option("--data-dir <dir>", "state directory of the embedded PostgreSQL (env DARKBLOOM_DATA_DIR)")
    .option("--log-level <level>", "log level on stderr (default warn)", logLevel)
    .option("--json", "print one JSON document")
    .action(async (opts: { databaseUrl?: string; dataDir?: string; logLevel?: string; json?: boolean }) => {
      const logger = pino({ level: opts.logLevel ?? "warn" }, pino.destination(2));
      const url = opts.databaseUrl ?? fromEnv(io.env, "DATABASE_URL", databaseUrl);
      const database = await openDatabase({
        ...(url ? { databaseUrl: url } : {}),
        dataDir: opts.dataDir ? resolve(opts.dataDir) : defaultDataDir(io.env),
        logger,
        maxConnections: 2,
      });
      try {
        const applied = await migrate(database.pool, { logger });
        const version = migrations.at(-1)?.version ?? 0;
        if (opts.json) {
          io.stdout(`${JSON.stringify({ applied, version }, null, 2)}\n`);
        } else if (applied.length === 0) {
          io.stdout(`schema is up to date (version ${version})\n`);
        } else {
          for (const migration of applied) io.stdout(`applied ${migrationLabel(migration)}\n`);
        }
      } finally {
        await database.close();
      }
    });
}
