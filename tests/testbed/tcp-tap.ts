import net from "node:net";

/**
 * A TCP relay between a provider daemon and the coordinator that records every byte in both
 * directions: what an observer on the provider's network sees. It can also cut the connections it
 * carries, as a network failure would.
 */
export class TcpTap {
  private readonly sockets = new Set<net.Socket>();
  private readonly upstream: Buffer[] = [];
  private readonly downstream: Buffer[] = [];
  private connectionCount = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /** Listens on a free loopback port and relays each connection to `target` (host:port). */
  static async start(target: { host: string; port: number }): Promise<TcpTap> {
    let tap: TcpTap | undefined;
    const server = net.createServer((client) => tap?.relay(client, target));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    tap = new TcpTap(server, (server.address() as net.AddressInfo).port);
    return tap;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Connections relayed so far. */
  get connections(): number {
    return this.connectionCount;
  }

  /** Everything the provider sent (to the coordinator) and received, in order per direction. */
  captured(): { fromProvider: Buffer; toProvider: Buffer } {
    return { fromProvider: Buffer.concat(this.upstream), toProvider: Buffer.concat(this.downstream) };
  }

  /** Forgets what was captured so far. */
  reset(): void {
    this.upstream.length = 0;
    this.downstream.length = 0;
  }

  /** Resets every relayed connection (both sides see the connection drop). */
  cut(): void {
    for (const s of this.sockets) s.resetAndDestroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: net.Socket, target: { host: string; port: number }): void {
    this.connectionCount++;
    const server = net.connect(target.port, target.host);
    for (const s of [client, server]) {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
      s.on("error", () => {
        client.destroy();
        server.destroy();
      });
    }
    client.on("data", (b: Buffer) => this.upstream.push(b));
    server.on("data", (b: Buffer) => this.downstream.push(b));
    client.pipe(server);
    server.pipe(client);
  }
}
