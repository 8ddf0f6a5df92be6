import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { pino } from "pino";
import type { CoordinatorConfig } from "../config.js";
import { type RunningCoordinator, startCoordinator } from "../coordinator.js";
import { createTestDatabase } from "./test-database.js";

export const TEST_ADMIN_KEY = "test-admin-key-0123456789";

export interface TestCoordinator {
  coordinator: RunningCoordinator;
  url: string;
  /** An API key of a funded account. */
  apiKey: string;
  accountId: string;
  close(): Promise<void>;
}

/**
 * A coordinator on 127.0.0.1:0 with a fresh database on the given test server, and a funded account.
 * With `database` (another test coordinator's `coordinator.databaseUrl`) it uses that database instead
 * and leaves it in place at close: a restart, or a second replica.
 */
export async function startTestCoordinator(
  pgServerUrl: string,
  overrides: Partial<CoordinatorConfig> = {},
  options: { database?: string } = {},
): Promise<TestCoordinator> {
  const db = options.database
    ? { url: options.database, drop: async () => undefined }
    : await createTestDatabase(pgServerUrl);
  const dataDir = await mkdtemp(join(tmpdir(), "darkbloom-coord-"));
  const coordinator = await startCoordinator(
    {
      dataDir,
      adminKey: TEST_ADMIN_KEY,
      databaseUrl: db.url,
      port: 0,
      heartbeatIntervalMs: 1_000,
      queueTimeoutMs: 2_000,
      // Most tests drive unattested scripted providers; trust tests ask for self_signed explicitly.
      minTrustLevel: "none",
      ...overrides,
    },
    { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }) },
  );
  const created = await coordinator.accounts.createAccount({
    name: "consumer",
    initialCreditMicroUsd: 100_000_000n,
  });
  return {
    coordinator,
    url: coordinator.url,
    apiKey: created.secret,
    accountId: created.account.id,
    close: async () => {
      await coordinator.close({ drainMs: 0 });
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** POSTs JSON to the coordinator with the given API key. */
export function postJson(
  url: string,
  path: string,
  apiKey: string | undefined,
  body: unknown,
  init: RequestInit = {},
): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  return fetch(new URL(path, url), {
    method: "POST",
    headers,
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
}

/** Resolves when `predicate` holds, polling every 10 ms, or rejects after `timeoutMs`. */
export async function waitFor(
  predicate: () => boolean,
  timeoutMs = 5_000,
  what = "condition",
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Test assertions read arbitrary JSON bodies. */
// biome-ignore lint/suspicious/noExplicitAny: response bodies in tests are checked by assertions, not types
export type AnyJson = any;

/** The body of a response as JSON, typed loosely for assertions. */
export async function readJson(res: Response): Promise<AnyJson> {
  return res.json();
}

/** An AdminService client of the coordinator at `baseUrl`, with the admin key (the tests' by default). */
export function adminClient(baseUrl: string, adminKey = TEST_ADMIN_KEY): Client<typeof AdminService> {
  return createClient(
    AdminService,
    createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      interceptors: [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${adminKey}`);
          return next(req);
        },
      ],
    }),
  );
}
