import net from "node:net";

/**
 * A TCP load balancer in front of the coordinator replicas, as a Kubernetes Service is: each new
 * connection goes to the next replica in turn, and to the one after it when that one refuses the
 * connection (stopped, or restarting). Connections are never moved: a replica that closes one
 * (shutting down, `Connection: close`) makes its client open another, which lands elsewhere.
 */
export class TcpBalancer {
  private readonly sockets = new Set<net.Socket>();
  private next = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly backends: readonly number[],
  ) {}

  /** Listens on a free loopback port in front of the replicas listening on `backends` (ports). */
  static async start(backends: readonly number[]): Promise<TcpBalancer> {
    let balancer: TcpBalancer | undefined;
    const server = net.createServer((client) => balancer?.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    balancer = new TcpBalancer(server, (server.address() as net.AddressInfo).port, backends);
    return balancer;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    this.track(client);
    client.pause();
    const start = this.next++ % this.backends.length;
    const attempt = (tried: number) => {
      if (tried === this.backends.length || client.destroyed) {
        client.destroy();
        return;
      }
      const port = this.backends[(start + tried) % this.backends.length] as number;
      const upstream = net.connect(port, "127.0.0.1");
      const refused = () => attempt(tried + 1);
      upstream.once("error", refused);
      upstream.once("connect", () => {
        upstream.off("error", refused);
        this.track(upstream);
        upstream.on("error", () => client.destroy());
        client.on("error", () => upstream.destroy());
        // A side that went away without ending its half: end the other's (its written bytes first).
        upstream.on("close", () => client.end());
        client.on("close", () => upstream.end());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    attempt(0);
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.on("close", () => this.sockets.delete(s));
    s.on("error", () => undefined);
  }
}
