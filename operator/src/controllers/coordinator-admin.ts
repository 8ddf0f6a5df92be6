import { Agent } from "node:https";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import type { AdminTls } from "./tls-secret.js";

/** Where a Service's port is reached from the operator: cluster DNS in a cluster, a proxy in tests. */
export type ServiceResolver = (
  namespace: string,
  service: string,
  port: number,
) => Promise<{ host: string; port: number }>;

/** `<service>.<namespace>.svc`: the Service's cluster DNS name. */
export const clusterDns: ServiceResolver = async (namespace, service, port) => ({
  host: `${service}.${namespace}.svc`,
  port,
});

/** An admin call must not hold a reconcile (and its key) for long: the queue retries it. */
const CALL_TIMEOUT_MS = 10_000;

/**
 * Clients of coordinators' admin API (the only way the operator changes a coordinator's state: never
 * SQL, so the coordinator's own validation and its fleet re-check run on every change). One client
 * per (URL, key, TLS settings), reused: each holds its HTTP connection pool.
 *
 * A coordinator serving TLS is called over https and its certificate is verified, always: against
 * the TLS Secret's ca.crt when it has one (cert-manager's CA and self-signed issuers write it), else
 * against Node's CA store, and for `tls.serverName` (default the Service's DNS name), which is also
 * the SNI sent. There is no switch that skips verification: the calls carry the admin key.
 */
export class CoordinatorAdmin {
  private readonly clients = new Map<string, { client: Client<typeof AdminService>; agent?: Agent }>();

  constructor(private readonly resolve: ServiceResolver) {}

  async client(
    namespace: string,
    service: string,
    port: number,
    adminKey: string,
    tls?: AdminTls,
  ): Promise<Client<typeof AdminService>> {
    const at = await this.resolve(namespace, service, port);
    const host = at.host.includes(":") ? `[${at.host}]` : at.host;
    const baseUrl = `${tls ? "https" : "http"}://${host}:${at.port}`;
    const cacheKey = [baseUrl, adminKey, tls?.serverName ?? "", tls?.ca ?? ""].join("\u0000");
    let entry = this.clients.get(cacheKey);
    if (entry === undefined) {
      const agent = tls
        ? new Agent({
            keepAlive: true,
            servername: tls.serverName,
            ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
          })
        : undefined;
      const transport = createConnectTransport({
        baseUrl,
        httpVersion: "1.1",
        defaultTimeoutMs: CALL_TIMEOUT_MS,
        ...(agent ? { nodeOptions: { agent } } : {}),
        interceptors: [
          (next) => (request) => {
            request.header.set("authorization", `Bearer ${adminKey}`);
            return next(request);
          },
        ],
      });
      // A rotated key or CA, or a moved Service, leaves an entry that is never used again: keep the
      // map small, and close the connections kept alive for the ones dropped.
      if (this.clients.size >= 64) {
        for (const dropped of this.clients.values()) dropped.agent?.destroy();
        this.clients.clear();
      }
      entry = { client: createClient(AdminService, transport), ...(agent ? { agent } : {}) };
      this.clients.set(cacheKey, entry);
    }
    return entry.client;
  }
}
