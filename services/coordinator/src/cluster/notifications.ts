import pg from "pg";
import type { Logger } from "../log.js";

/**
 * One dedicated LISTEN connection for the channels replicas announce shared-state changes on (the
 * provider directory, the model catalog): whoever wrote NOTIFYs after committing, every replica
 * re-reads at once. A NOTIFY sent while this connection was down is lost, so every subscriber also
 * re-reads when the connection is (re)opened, and polls as the backstop; ensure() re-opens a lost
 * connection (the pollers call it).
 */
export class Notifications {
  private readonly channels = new Map<string, Set<() => void>>();
  private readonly reconnected = new Set<() => void>();
  private client: pg.Client | undefined;
  private connecting: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly databaseUrl: string,
    private readonly name: string,
    private readonly log: Logger,
  ) {}

  /** Calls `handler` on every NOTIFY on `channel`; returns the unsubscribe. */
  on(channel: string, handler: () => void): () => void {
    if (!/^[a-z_]+$/.test(channel)) throw new Error(`not a channel name: ${channel}`);
    let handlers = this.channels.get(channel);
    if (!handlers) {
      handlers = new Set();
      this.channels.set(channel, handlers);
      this.client?.query(`LISTEN ${channel}`).catch(() => this.lost(this.client, "LISTEN failed"));
    }
    handlers.add(handler);
    return () => handlers.delete(handler);
  }

  /** Calls `handler` each time the connection opens (what was announced meanwhile must be re-read). */
  onReconnect(handler: () => void): () => void {
    this.reconnected.add(handler);
    return () => this.reconnected.delete(handler);
  }

  /** Opens the connection unless it is open. */
  ensure(): Promise<void> {
    if (this.client || this.stopped) return Promise.resolve();
    this.connecting ??= this.open().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.connecting;
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  private async open(): Promise<void> {
    const client = new pg.Client({ connectionString: this.databaseUrl, application_name: this.name });
    client.on("error", (e) => this.lost(client, e.message));
    client.on("end", () => this.lost(client, "connection ended"));
    client.on("notification", (n) => {
      for (const handler of this.channels.get(n.channel) ?? []) handler();
    });
    try {
      await client.connect();
      for (const channel of this.channels.keys()) await client.query(`LISTEN ${channel}`);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "could not LISTEN for shared-state changes; polling");
      await client.end().catch(() => undefined);
      return;
    }
    if (this.stopped) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    for (const handler of this.reconnected) handler();
  }

  private lost(client: pg.Client | undefined, why: string): void {
    if (!client || this.client !== client) return;
    this.client = undefined;
    if (!this.stopped) this.log.warn({ err: why }, "LISTEN connection lost; polling until it is re-opened");
    void client.end().catch(() => undefined);
  }
}
