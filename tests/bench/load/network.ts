// The network under load: one bench:load starts itself (the system testbed: PostgreSQL, the
// coordinator and provider daemons as separate processes) or an existing one at --base-url; either
// way, the API keys of the users to send from.
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { startTestbed, type Testbed } from "../../testbed/index.js";

/** The network could not be started or reached (exit 2). */
export class NetworkError extends Error {
  override readonly name = "NetworkError";
}

export interface Target {
  /** The coordinator's origin, without /v1 (e.g. http://127.0.0.1:8080). */
  baseUrl: string;
  /** One key per user, in rotation order. */
  apiKeys: string[];
  /** Provider daemons started (own network); undefined for an existing one. */
  providers: number | undefined;
  /** "own network: ..." or the URL, for the report. */
  description: string;
  /** Own network: resolves when one of its processes exits on its own. */
  failed: Promise<string> | undefined;
  /** Stops and removes an own network; nothing for an existing one. Safe to call twice. */
  close(): Promise<void>;
  /** Own network: its temporary directory (removed by close()). */
  dataDir: string | undefined;
}

export interface TargetOptions {
  baseUrl: string | undefined;
  apiKeys: readonly string[];
  adminKey: string | undefined;
  users: number;
  providers: number;
  model: string;
  /** Progress lines (stderr). */
  log: (line: string) => void;
}

/** Each account bench:load creates starts with $100 of credit (an existing network's money). */
const USER_CREDIT_MICRO_USD = 100_000_000n;
/** On its own testbed (priced at $100/$200 per million tokens) each account gets $1,000,000. */
const TESTBED_CREDIT_MICRO_USD = 1_000_000_000_000n;

/** The coordinator's origin: trailing slashes and a trailing /v1 removed. */
export function normalizeBaseUrl(url: string): string {
  let u = url.replace(/\/+$/, "");
  if (u.endsWith("/v1")) u = u.slice(0, -3);
  return u.replace(/\/+$/, "");
}

/** Creates `n` funded accounts through the admin API; returns their API keys. */
export async function createUsers(
  baseUrl: string,
  adminKey: string,
  n: number,
  creditMicroUsd = USER_CREDIT_MICRO_USD,
): Promise<string[]> {
  const admin = createClient(
    AdminService,
    createConnectTransport({
      baseUrl: normalizeBaseUrl(baseUrl),
      httpVersion: "1.1",
      interceptors: [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${adminKey}`);
          return next(req);
        },
      ],
    }),
  );
  const tag = Date.now().toString(36);
  const keys: string[] = [];
  // A few at a time: each is a database transaction on the coordinator.
  for (let i = 0; i < n; i += 8) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(8, n - i) }, (_, j) =>
        admin.createAccount(
          { name: `bench-load-${tag}-${i + j}`, initialCreditMicroUsd: creditMicroUsd },
          { timeoutMs: 30_000 },
        ),
      ),
    );
    for (const created of batch) keys.push(created.apiKeySecret);
  }
  return keys;
}

/** Checks that the coordinator answers and accepts the key; warns when the model is not listed. */
async function preflight(
  baseUrl: string,
  apiKeys: readonly string[],
  model: string,
  log: (l: string) => void,
) {
  for (const [i, key] of apiKeys.entries()) {
    let res: Response;
    try {
      res = await fetch(`${baseUrl}/v1/models`, {
        headers: { authorization: `Bearer ${key}` },
        signal: AbortSignal.timeout(15_000),
      });
    } catch (e) {
      throw new NetworkError(`cannot reach ${baseUrl}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const text = await res.text();
    if (!res.ok) {
      throw new NetworkError(
        `${baseUrl}/v1/models answered ${res.status} with API key #${i + 1}: ${text.slice(0, 200)}`,
      );
    }
    if (i > 0) continue;
    try {
      const models = (JSON.parse(text) as { data?: Array<{ id?: unknown }> }).data ?? [];
      if (!models.some((m) => m.id === model)) {
        log(`warning: model ${JSON.stringify(model)} is not in ${baseUrl}/v1/models; requests may fail`);
      }
    } catch {
      log(`warning: ${baseUrl}/v1/models did not answer JSON`);
    }
  }
}

/** Opens the target: an existing network (checked) or a new local one. Throws NetworkError. */
export async function openTarget(o: TargetOptions): Promise<Target> {
  if (o.baseUrl !== undefined) {
    const baseUrl = normalizeBaseUrl(o.baseUrl);
    let apiKeys = [...o.apiKeys];
    if (o.adminKey !== undefined) {
      try {
        apiKeys = await createUsers(baseUrl, o.adminKey, o.users);
      } catch (e) {
        throw new NetworkError(
          `could not create ${o.users} account(s) through ${baseUrl}'s admin API: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
    }
    await preflight(baseUrl, apiKeys, o.model, o.log);
    return {
      baseUrl,
      apiKeys,
      providers: undefined,
      description: baseUrl,
      failed: undefined,
      close: async () => undefined,
      dataDir: undefined,
    };
  }

  let testbed: Testbed;
  try {
    o.log(`starting a testbed of ${o.providers} provider daemon(s) serving ${o.model}`);
    testbed = await startTestbed({
      providers: Array.from({ length: o.providers }, () => ({ models: [o.model] })),
      // The load is the point: no per-account rate limit, and a queue as deep as any concurrency.
      // Every client connects from this host: no per-address connection cap either.
      coordinatorArgs: ["--rate-limit", "0", "--queue-depth", "100000", "--max-connections-per-address", "0"],
    });
  } catch (e) {
    throw new NetworkError(`could not start the testbed: ${e instanceof Error ? e.message : String(e)}`);
  }
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      o.log("stopping the testbed");
      await testbed.stop();
    })();
    return closing;
  };
  const baseUrl = testbed.coordinator.url;
  const processes = [testbed.coordinator, ...testbed.providers];
  const failed = Promise.race(
    processes.map((p) => p.exited.then((code) => `${p.name} exited (${code}); see ${p.logFile}`)),
  );
  try {
    const apiKeys = await createUsers(baseUrl, testbed.adminKey, o.users, TESTBED_CREDIT_MICRO_USD);
    return {
      baseUrl,
      apiKeys,
      providers: o.providers,
      description: `own testbed at ${baseUrl}: ${o.providers} provider daemon(s) (1 llama.cpp thread each), model ${o.model}`,
      failed,
      close,
      dataDir: testbed.dir,
    };
  } catch (e) {
    await close();
    throw new NetworkError(`could not create the accounts: ${e instanceof Error ? e.message : String(e)}`);
  }
}
