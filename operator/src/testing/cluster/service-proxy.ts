/**
 * kube-proxy, one Service port at a time: a TCP listener on 127.0.0.1 that sends each new connection
 * to the next ready endpoint (round robin) of the Service port, as read from the Endpoints at that
 * moment, so it follows pods coming and going. As with iptables rules, a connection that reaches a
 * dead endpoint is not retried elsewhere, and a Service with no ready endpoint resets connections
 * (where real kube-proxy rejects them).
 */
import net from "node:net";
import { ENDPOINTS, SERVICES } from "./client.js";
import type { InformerFactory } from "./informer.js";
import type { Endpoints, Service } from "./types.js";

export interface Backend {
  host: string;
  port: number;
}

/** The ready endpoints of a Service port, given by port number or by port name. */
export function serviceBackends(
  svc: Service | undefined,
  ep: Endpoints | undefined,
  port: string | number,
): Backend[] {
  if (!svc || !ep) return [];
  const ports = svc.spec.ports ?? [];
  const sp =
    typeof port === "number" || /^\d+$/.test(port)
      ? ports.find((p) => p.port === Number(port))
      : ports.find((p) => p.name === port);
  if (!sp) return [];
  const backends: Backend[] = [];
  for (const subset of ep.subsets ?? []) {
    const epPort = (subset.ports ?? []).find((p) => (p.name ?? "") === (sp.name ?? ""));
    if (!epPort) continue;
    for (const address of subset.addresses ?? []) backends.push({ host: address.ip, port: epPort.port });
  }
  return backends.sort((a, b) => `${a.host}:${a.port}`.localeCompare(`${b.host}:${b.port}`));
}

export class ServiceProxy {
  private readonly services;
  private readonly endpoints;
  private readonly listeners = new Map<string, Promise<{ server: net.Server; address: Backend }>>();
  private readonly sockets = new Set<net.Socket>();
  private readonly turns = new Map<string, number>();

  constructor(
    informers: InformerFactory,
    private readonly log: (line: string) => void,
  ) {
    this.services = informers.get<Service>(SERVICES);
    this.endpoints = informers.get<Endpoints>(ENDPOINTS);
  }

  async address(namespace: string, service: string, port: string | number): Promise<Backend> {
    const key = `${namespace}/${service}:${port}`;
    let listener = this.listeners.get(key);
    if (!listener) {
      listener = new Promise((resolve, reject) => {
        const server = net.createServer({ allowHalfOpen: true }, (socket) =>
          this.forward(socket, key, namespace, service, port),
        );
        server.once("error", reject);
        server.listen({ host: "127.0.0.1", port: 0 }, () => {
          const addr = server.address() as net.AddressInfo;
          resolve({ server, address: { host: "127.0.0.1", port: addr.port } });
        });
      });
      this.listeners.set(key, listener);
    }
    return (await listener).address;
  }

  private forward(
    client: net.Socket,
    key: string,
    namespace: string,
    service: string,
    port: string | number,
  ): void {
    const backends = serviceBackends(
      this.services.get(namespace, service),
      this.endpoints.get(namespace, service),
      port,
    );
    if (backends.length === 0) {
      this.log(`service-proxy: ${key}: no ready endpoints`);
      client.resetAndDestroy();
      return;
    }
    const turn = this.turns.get(key) ?? 0;
    this.turns.set(key, turn + 1);
    const backend = backends[turn % backends.length] as Backend;
    const upstream = net.connect({ host: backend.host, port: backend.port, allowHalfOpen: true });
    this.sockets.add(client);
    this.sockets.add(upstream);
    const close = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on("error", close);
    upstream.on("error", () => {
      // Pass a refused or reset upstream on as a reset, as a client would see it without a proxy.
      if (!client.destroyed) client.resetAndDestroy();
      close();
    });
    client.on("close", close);
    upstream.on("close", close);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    const listeners = await Promise.allSettled(this.listeners.values());
    await Promise.all(
      listeners.map((l) =>
        l.status === "fulfilled"
          ? new Promise<void>((resolve) => l.value.server.close(() => resolve()))
          : undefined,
      ),
    );
    this.listeners.clear();
  }
}
