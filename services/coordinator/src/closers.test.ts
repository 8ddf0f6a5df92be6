import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Closers } from "./closers.js";
import { startCoordinator } from "./coordinator.js";
import { createTestDatabase, startTestPostgres, type TestPostgres } from "./testing/test-database.js";

const silent = pino({ level: "silent" });

describe("Closers", () => {
  it("closes in reverse order of registration, each after the previous one finished", async () => {
    const closers = new Closers(silent);
    const order: string[] = [];
    for (const name of ["database", "server", "drain"]) {
      closers.add(name, async () => {
        await new Promise((r) => setTimeout(r, 5));
        order.push(name);
      });
    }
    await closers.close();
    expect(order).toEqual(["drain", "server", "database"]);
  });

  it("runs every closer when one fails, then throws the first failure; closing twice closes once", async () => {
    const closers = new Closers(silent);
    const order: string[] = [];
    closers.add("a", () => {
      order.push("a");
    });
    closers.add("b", () => {
      order.push("b");
      throw new Error("b failed");
    });
    closers.add("c", () => {
      order.push("c");
      throw new Error("c failed");
    });
    const first = closers.close();
    expect(closers.close()).toBe(first);
    await expect(first).rejects.toThrow("c failed");
    expect(order).toEqual(["c", "b", "a"]);
    expect(() => closers.add("late", () => undefined)).toThrow(/while the coordinator was closing/);
  });
});

describe("a coordinator whose start fails", () => {
  let server: TestPostgres;
  beforeAll(async () => {
    server = await startTestPostgres();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("closes what it had started: no connection to its database is left open", async () => {
    const db = await createTestDatabase(server.url);
    const dataDir = await mkdtemp(join(tmpdir(), "darkbloom-failed-start-"));
    // The port is taken, so the server is the part that fails, after the database, the catalog,
    // billing, trust and the sessions have started.
    const taken: Server = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      await expect(
        startCoordinator(
          { dataDir, databaseUrl: db.url, adminKey: "failed-start-admin-key", host: "127.0.0.1", port },
          { logger: silent },
        ),
      ).rejects.toThrow(/EADDRINUSE/);
      // A backend ends a moment after its client hung up: poll rather than read once.
      const coordinatorConnections = async () => {
        const client = new pg.Client({ connectionString: db.url });
        await client.connect();
        try {
          const { rows } = await client.query<{ n: string }>(
            "SELECT count(*)::text AS n FROM pg_stat_activity WHERE application_name = 'darkbloom-coordinator'",
          );
          return rows[0]?.n;
        } finally {
          await client.end();
        }
      };
      await expect.poll(coordinatorConnections, { timeout: 5_000 }).toBe("0");
    } finally {
      await new Promise((resolve) => taken.close(resolve));
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
