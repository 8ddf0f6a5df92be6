import { spawn } from "node:child_process";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { openDatabase, redactDatabaseUrl } from "./database.js";
import { migrate } from "./migrate.js";

const logger = pino({ level: "silent" });

describe("openDatabase with the embedded server", () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "darkbloom-db-test-"));
    if (process.getuid?.() === 0) await chmod(root, 0o755);
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("keeps its data across stop and start in the same data directory", async () => {
    const dataDir = join(root, "persist");
    const first = await openDatabase({ dataDir, logger });
    expect(first.embedded).toBe(true);
    await migrate(first.pool);
    await first.pool.query("INSERT INTO accounts (id, name) VALUES ('acct_persist', 'kept')");
    await first.close();
    await first.close(); // idempotent

    const passwordFile = join(dataDir, "postgres.password");
    expect((await stat(passwordFile)).mode & 0o777).toBe(0o600);
    const password = (await readFile(passwordFile, "utf8")).trim();
    expect(password.length).toBeGreaterThanOrEqual(32);

    const second = await openDatabase({ dataDir, logger });
    try {
      expect(second.url).toContain(encodeURIComponent(password));
      expect(redactDatabaseUrl(second.url)).not.toContain(password);
      expect(await migrate(second.pool)).toEqual([]);
      const { rows } = await second.pool.query("SELECT name FROM accounts WHERE id = 'acct_persist'");
      expect(rows).toEqual([{ name: "kept" }]);
      const { rows: db } = await second.pool.query("SELECT current_database() AS name");
      expect(db[0].name).toBe("darkbloom");
    } finally {
      await second.close();
    }
  });

  it("starts despite a postmaster.pid left behind by a crash, even when its PID was reused", async () => {
    const dataDir = join(root, "stale");
    const first = await openDatabase({ dataDir, logger });
    await first.close();
    // After a reboot the recorded PID may belong to an unrelated live process; PostgreSQL alone
    // would refuse to start ("lock file already exists").
    const unrelated = spawn("sleep", ["60"]);
    try {
      const pidFile = join(dataDir, "postgres", "postmaster.pid");
      await writeFile(pidFile, `${unrelated.pid}\n${join(dataDir, "postgres")}\n`);
      const second = await openDatabase({ dataDir, logger });
      try {
        const { rows } = await second.pool.query("SELECT 1 AS ok");
        expect(rows).toEqual([{ ok: 1 }]);
      } finally {
        await second.close();
      }
    } finally {
      unrelated.kill();
    }
  });

  it("refuses a data directory whose server another live process is running", async () => {
    const dataDir = join(root, "busy");
    const first = await openDatabase({ dataDir, logger });
    try {
      await expect(openDatabase({ dataDir, logger })).rejects.toThrow(/already running as PID \d+/);
      const { rows } = await first.pool.query("SELECT 1 AS ok");
      expect(rows).toEqual([{ ok: 1 }]);
    } finally {
      await first.close();
    }
  });

  it("refuses a cluster whose password file was lost, naming the file", async () => {
    const dataDir = join(root, "lost");
    const first = await openDatabase({ dataDir, logger });
    await first.close();
    await rm(join(dataDir, "postgres.password"));
    await expect(openDatabase({ dataDir, logger })).rejects.toThrow(/postgres\.password is missing/);
  });
});

describe("openDatabase with a database URL", () => {
  let server: TestPostgres;
  beforeAll(async () => {
    server = await startTestPostgres();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("uses the given server and does not stop it on close", async () => {
    const database = await openDatabase({ databaseUrl: server.url, dataDir: "/nonexistent", logger });
    expect(database.embedded).toBe(false);
    await database.close();
    const again = await openDatabase({ databaseUrl: server.url, dataDir: "/nonexistent", logger });
    await again.close();
  });

  it("fails fast with a redacted URL when the server cannot be reached", async () => {
    const url = new URL(server.url);
    url.port = "1";
    const failure = openDatabase({ databaseUrl: url.toString(), dataDir: "/nonexistent", logger });
    await expect(failure).rejects.toThrow(
      /cannot connect to PostgreSQL at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\//,
    );
  });
});
