import { createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { compileCrd } from "./crd-schema/index.js";
import { Crds } from "./crds.js";
import { Deleter } from "./deletion.js";
import { listenDual } from "./dual-protocol.js";
import { GarbageCollector } from "./garbage-collector.js";
import { Handlers } from "./handlers.js";
import { Registry } from "./registry.js";
import { Resources } from "./resources.js";
import { type AuditEntry, type Fault, requestListener } from "./server.js";
import { Store } from "./store.js";
import { Strategies } from "./strategies.js";
import { TLS_CERT, TLS_KEY } from "./tls.js";
import { Users } from "./users.js";
import { Watches } from "./watch.js";

export type { AuditEntry } from "./server.js";

export interface FakeApiServerOptions {
  /** Watch streams are closed by the server after a random time in [min, max] ms (like the real server's timeouts, default [30000, 60000]); clients must re-watch. */
  watchCloseAfterMs?: [number, number];
  /** How many past events are kept for watches from an old resourceVersion (default 1000); older → 410 Gone. */
  historyLimit?: number;
  /** "rbac" enforces Role/ClusterRole/RoleBinding/ClusterRoleBinding objects stored in the server; "allow-all" authorises every authenticated request (default "rbac"). */
  authorization?: "rbac" | "allow-all";
  /** Bookmark interval for watches with allowWatchBookmarks (default 1000 ms in tests). */
  bookmarkIntervalMs?: number;
}

export interface FakeApiServer {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** Bearer token of a superuser (group system:masters). */
  readonly adminToken: string;
  /** Mints a token for a user (e.g. "system:serviceaccount:ns:name") with groups. */
  addUser(user: string, groups?: string[]): string;
  /**
   * A kubeconfig YAML (server, token, default namespace) for the token's user. Its server is the
   * https:// form of `url` (same port) with the fake's CA, as client-go sends no tokens over http.
   */
  kubeconfig(token: string, namespace?: string): string;
  /** Every request after authentication: user, verb, apiGroup ("" for core), resource, subresource, namespace, name, response code. */
  readonly audit: AuditEntry[];
  /** Drops the event history: every watch from an older resourceVersion then gets 410 Gone. */
  compactHistory(): void;
  /** Closes every open watch stream now. */
  closeWatches(): void;
  /** The next `times` requests matching (verb, resource) answer `code` (e.g. 500) with a Status body. */
  injectFault(fault: { verb?: string; resource?: string; code: number; times: number }): void;
  close(): Promise<void>;
}

/**
 * A strict fake Kubernetes API server on 127.0.0.1: the real server's REST semantics for the
 * built-in kinds this project uses and for CRDs, with RBAC, watches, garbage collection and
 * server-side apply, so the operator and kubectl can be tested without a cluster.
 */
export async function startFakeApiServer(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
  const store = new Store(options.historyLimit ?? 1000);
  const resources = new Resources();
  const crds = new Crds(resources, compileCrd);
  const registry = new Registry(store, new Strategies(), crds);
  const deleter = new Deleter(store, registry);
  const collector = new GarbageCollector(store, resources, registry, deleter);
  const watches = new Watches(store, registry, {
    closeAfterMs: options.watchCloseAfterMs ?? [30_000, 60_000],
    bookmarkIntervalMs: options.bookmarkIntervalMs ?? 1000,
  });
  const users = new Users();
  const adminToken = users.add("kubernetes-admin", ["system:masters"]);
  const audit: AuditEntry[] = [];
  const faults: Fault[] = [];

  const namespaces = resources.find("", "v1", "namespaces")!;
  const system = { manager: "kube-apiserver", validation: "Strict" as const, dryRun: false, warnings: [] };
  for (const name of ["default", "kube-system"])
    registry.create(namespaces, "", { metadata: { name } }, system);

  let address = "";
  const listener = requestListener({
    store,
    resources,
    users,
    handlers: new Handlers(store, registry, deleter, watches),
    audit,
    faults,
    authorization: options.authorization ?? "rbac",
    address: () => address,
  });
  // One port, two protocols: plain HTTP (the `url`, for clients that send tokens over it) and TLS
  // (the kubeconfigs' server, since client-go sends no credentials over plain HTTP).
  // Idle connections are kept as kube-apiserver keeps them, longer than client-go's 90 s idle
  // timeout: with Node's default of 5 s, a busy machine lets kubectl reuse a connection the server is
  // closing at that moment, and a PATCH (never retried) ends in "Unable to connect to the server: EOF".
  const serving = { noDelay: true, keepAliveTimeout: 120_000 };
  const listening = await listenDual(
    createHttpServer(serving, listener),
    createHttpsServer({ key: TLS_KEY, cert: TLS_CERT, ...serving }, listener),
  );
  address = `127.0.0.1:${listening.port}`;
  const url = `http://${address}`;

  return {
    url,
    adminToken,
    audit,
    addUser: (user, groups) => users.add(user, groups),
    kubeconfig: (token, namespace) => users.kubeconfig(`https://${address}`, TLS_CERT, token, namespace),
    compactHistory: () => store.compact(),
    closeWatches: () => watches.closeAll(),
    injectFault: (fault) => {
      faults.push({ ...fault });
    },
    close: async () => {
      watches.closeAll();
      collector.close();
      await listening.close();
    },
  };
}
