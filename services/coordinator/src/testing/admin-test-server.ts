import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import type pg from "pg";
import { AccountStore } from "../accounts/account-store.js";
import { InviteStore } from "../accounts/invites.js";
import { UsageStore } from "../accounts/usage.js";
import { FailedAuthLimiter } from "../auth/failed-auth-limiter.js";
import { ModelCatalog } from "../catalog/model-catalog.js";
import { VocabularyStore } from "../catalog/vocabulary-store.js";
import { CLIENT_ADDRESS } from "../http/client-address.js";
import { ReleaseStore } from "../releases/release-store.js";
import { createAdminService } from "../rpc/admin-service.js";
import type { ProviderDirectory } from "../rpc/provider-directory.js";
import { KeyQuarantineStore } from "../trust/key-quarantine.js";
import { MachineBindingStore } from "../trust/machine-bindings.js";

/** An AdminService on a real HTTP server at 127.0.0.1, over the given database (for tests). */
export interface AdminTestServer {
  url: string;
  adminKey: string;
  accounts: AccountStore;
  catalog: ModelCatalog;
  releases: ReleaseStore;
  /** How many times the service reported revoked keys. */
  keyChanges(): number;
  close(): Promise<void>;
}

export async function startAdminTestServer(
  pool: pg.Pool,
  options: { adminKey?: string; providers?: ProviderDirectory } = {},
): Promise<AdminTestServer> {
  const adminKey = options.adminKey ?? "test-admin-key";
  const accounts = new AccountStore(pool);
  const catalog = new ModelCatalog(pool);
  await catalog.start();
  const releases = new ReleaseStore(pool);
  const providers = options.providers ?? {
    list: () => [],
    drain: async () => false,
    modelOperation: async () => undefined,
  };
  let keyChanges = 0;
  const handler = connectNodeAdapter({
    contextValues: (req) => createContextValues().set(CLIENT_ADDRESS, req.socket.remoteAddress ?? "unknown"),
    routes: (router) =>
      router.service(
        AdminService,
        createAdminService({
          accounts,
          catalog,
          vocabularies: new VocabularyStore(pool, catalog),
          releases,
          invites: new InviteStore(pool),
          usage: new UsageStore(pool),
          providers,
          bindings: new MachineBindingStore(pool),
          quarantines: new KeyQuarantineStore(pool),
          pool,
          adminKey,
          // The coordinator's default limits.
          authFailures: new FailedAuthLimiter({ perSecond: 1, burst: 20, maxAddresses: 1_000 }),
          onKeysChanged: () => {
            keyChanges++;
          },
        }),
      ),
  });
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    adminKey,
    accounts,
    catalog,
    releases,
    keyChanges: () => keyChanges,
    close: async () => {
      catalog.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
