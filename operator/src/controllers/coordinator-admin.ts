import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "@darkbloom/protocol/admin/v1";

/** Where a Service's port is reached from the operator: cluster DNS in a cluster, a proxy in tests. */
export type ServiceResolver = (namespace: string, service: string, port: number) => Promise<string>;

/** `http://<service>.<namespace>.svc:<port>`: the Service's cluster DNS name. */
export const clusterDns: ServiceResolver = async (namespace, service, port) =>
  `http://${service}.${namespace}.svc:${port}`;

/** An admin call must not hold a reconcile (and its key) for long: the queue retries it. */
const CALL_TIMEOUT_MS = 10_000;

/**
 * Clients of coordinators' admin API (the only way the operator changes a coordinator's state: never
 * SQL, so the coordinator's own validation and its fleet re-check run on every change). One client
 * per (URL, key), reused: each holds its HTTP connection pool.
 */
export class CoordinatorAdmin {
  private readonly clients = new Map<string, Client<typeof AdminService>>();

  constructor(private readonly resolve: ServiceResolver) {}

  async client(
    namespace: string,
    service: string,
    port: number,
    adminKey: string,
  ): Promise<Client<typeof AdminService>> {
    const baseUrl = await this.resolve(namespace, service, port);
    const cacheKey = `${baseUrl}\u0000${adminKey}`;
    let client = this.clients.get(cacheKey);
    if (client === undefined) {
      const transport = createConnectTransport({
        baseUrl,
        httpVersion: "1.1",
        defaultTimeoutMs: CALL_TIMEOUT_MS,
        interceptors: [
          (next) => (request) => {
            request.header.set("authorization", `Bearer ${adminKey}`);
            return next(request);
          },
        ],
      });
      client = createClient(AdminService, transport);
      // A rotated key or a moved Service leaves an entry that is never used again: keep the map small.
      if (this.clients.size >= 64) this.clients.clear();
      this.clients.set(cacheKey, client);
    }
    return client;
  }
}
