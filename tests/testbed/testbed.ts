// The system testbed: real PostgreSQL, the coordinator and N provider daemons, each its own process
// with its own data directory, serving synthesized models through the real llama.cpp engine.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { uploadVocabulary, vocabularyOf } from "@darkbloom/coordinator";
import { coordinatorBin, freePort, providerBin } from "@darkbloom/local-network";
import { choiceCompletionTokens, ModelTokenizer } from "@darkbloom/models";
import type { TrustLevelName } from "@darkbloom/protocol";
import {
  AdminService,
  type ProviderSummary,
  type UsageRecord,
  type VerifyLedgerResponse,
} from "@darkbloom/protocol/admin/v1";
import { modelPath } from "@darkbloom/provider";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import OpenAI from "openai";
import { TcpBalancer } from "./balancer.js";
import { ManagedProcess } from "./managed-process.js";
import { TestbedPostgres } from "./postgres.js";
import { Reaper } from "./reaper-client.js";
import { TcpTap } from "./tcp-tap.js";
import { TestbedProvider } from "./testbed-provider.js";

const execFileAsync = promisify(execFile);

export interface TestbedProviderSpec {
  /** Synthesized model shapes it serves (tiny, tiny-llama, …). */
  models: string[];
  /** Relay its connection through a TcpTap that records every byte. */
  tap?: boolean;
  /** Continuous-batching width (the daemon's default when absent). */
  maxBatch?: number;
  /** Extra `darkbloom serve` flags. */
  args?: string[];
  /**
   * The coordinator replica it connects to (default 0: the one `coordinator` and the admin client
   * use), or "balanced": through the testbed's balancer (`balanced`), as behind a Service.
   */
  replica?: number | "balanced";
}

export interface TestbedOptions {
  providers: TestbedProviderSpec[];
  /** Extra `darkbloom-coordinator serve` flags (serving limits such as --inter-token-timeout 2s). */
  coordinatorArgs?: string[];
  /**
   * Coordinator replicas on the one PostgreSQL (default 1), each its own process on its own port,
   * forwarding to each other with a shared peer token. Consumers and the admin client use replica 0.
   */
  replicas?: number;
  /**
   * Advertise every replica but the first through a TcpTap that records every byte (`peerTaps`): the
   * replica-to-replica wire of forwarded requests.
   */
  tapPeers?: boolean;
  /**
   * Put a TCP balancer in front of the replicas (a Service): consumers and the admin client go
   * through it (`baseUrl`), and so do providers whose spec says `replica: "balanced"`.
   */
  balanced?: boolean;
  /** Lowest provider trust routed to (default: the coordinator's own default, self_signed). */
  minTrust?: TrustLevelName;
  /** Price of every model (default TESTBED_PRICES). */
  prices?: { input: bigint; output: bigint };
  /** Wait until every provider is routable (default true). */
  waitForProviders?: boolean;
  /**
   * Give every model its vocabulary, so the coordinator counts usage itself (default true); without
   * one, usage is only bounded from the text.
   */
  vocabularies?: boolean;
}

/**
 * $100 per million prompt tokens and $200 per million completion tokens: 100 and 200 micro-USD a
 * token, so charges are whole micro-dollars and a request's charge is above the minimum charge.
 */
export const TESTBED_PRICES = { input: 100_000_000n, output: 200_000_000n } as const;

/** The least a completed request costs (the coordinator's MIN_CHARGE_MICRO_USD, SPEC section 5). */
const MIN_CHARGE_MICRO_USD = 100n;

/** What a completed request with this usage is charged at TESTBED_PRICES. */
export function expectedCharge(usage: { prompt_tokens: number; completion_tokens: number }): bigint {
  const cost =
    (BigInt(usage.prompt_tokens) * TESTBED_PRICES.input +
      BigInt(usage.completion_tokens) * TESTBED_PRICES.output) /
    1_000_000n;
  return cost > MIN_CHARGE_MICRO_USD ? cost : MIN_CHARGE_MICRO_USD;
}

const STARTUP_TIMEOUT_MS = 120_000;

export interface TestbedAccount {
  id: string;
  apiKey: string;
}

/** A coordinator process, on a port fixed for the testbed's life so restarts keep its URL. */
export class TestbedCoordinator extends ManagedProcess {
  constructor(
    readonly port: number,
    args: () => string[],
    logFile: string,
    name = "coordinator",
  ) {
    super(name, coordinatorBin, args, logFile);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Resolves once /healthz answers 200 (throws if the process exits or the time runs out). */
  async waitHealthy(timeoutMs = STARTUP_TIMEOUT_MS): Promise<void> {
    await waitUntil(
      () =>
        fetch(`${this.url}/healthz`).then(
          (r) => r.ok,
          () => false,
        ),
      timeoutMs,
      "the coordinator to answer /healthz",
      [this],
    );
  }
}

export class Testbed {
  private readonly tokenizers = new Map<string, Promise<ModelTokenizer>>();
  private llama: Promise<Llama> | undefined;
  readonly admin: Client<typeof AdminService>;
  private stopped = false;

  constructor(
    /** Everything lives here: PostgreSQL's cluster, each process's data directory, logs. */
    readonly dir: string,
    readonly postgres: TestbedPostgres,
    /** Replica 0: where consumers, the admin client and the metrics go. */
    readonly coordinator: TestbedCoordinator,
    readonly providers: readonly TestbedProvider[],
    readonly adminKey: string,
    private readonly reaper: Reaper | undefined,
    /** The bearer token the coordinator's GET /metrics requires. */
    readonly metricsToken: string,
    /** Every coordinator replica, `coordinator` first. */
    readonly replicas: readonly TestbedCoordinator[] = [coordinator],
    /** With `tapPeers`, the tap each replica is advertised through (none for replica 0). */
    readonly peerTaps: readonly (TcpTap | undefined)[] = [],
    /** With `balanced`, the balancer in front of the replicas. */
    readonly balancer?: TcpBalancer,
  ) {
    this.admin = createClient(
      AdminService,
      createConnectTransport({
        baseUrl: this.frontUrl,
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

  /** Where consumers and the admin client go: the balancer, else replica 0. */
  get frontUrl(): string {
    return this.balancer?.url ?? this.coordinator.url;
  }

  /** The OpenAI-compatible base URL (…/v1). */
  get baseUrl(): string {
    return `${this.frontUrl}/v1`;
  }

  /** A funded consumer account and its API key. */
  async createAccount(
    creditMicroUsd: bigint,
    name = `user-${randomBytes(4).toString("hex")}`,
  ): Promise<TestbedAccount> {
    const created = await this.admin.createAccount({ name, initialCreditMicroUsd: creditMicroUsd });
    if (!created.account) throw new Error("createAccount returned no account");
    return { id: created.account.id, apiKey: created.apiKeySecret };
  }

  async balance(accountId: string): Promise<bigint> {
    const { account } = await this.admin.getAccount({ accountId });
    if (!account) throw new Error(`no account ${accountId}`);
    return account.balanceMicroUsd;
  }

  /** The coordinator's Prometheus exposition (GET /metrics with its token). */
  async metrics(): Promise<string> {
    const res = await fetch(`${this.coordinator.url}/metrics`, {
      headers: { authorization: `Bearer ${this.metricsToken}` },
    });
    if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
    return res.text();
  }

  verifyLedger(): Promise<VerifyLedgerResponse> {
    return this.admin.verifyLedger({});
  }

  /**
   * Waits until no reservation is open: a request is settled just after its response ended, so a
   * balance read right after a response may still see its hold.
   */
  async settled(timeoutMs = 15_000): Promise<void> {
    await waitUntil(
      async () => (await this.verifyLedger()).openReservations === 0n,
      timeoutMs,
      "every reservation to be settled",
      [this.coordinator],
    );
  }

  /**
   * The usage records of `requestIds` (their X-Request-IDs) on `accountId`, once every one of them is
   * settled: a request is settled just after its response ended, so a balance read right after the
   * response may still see its hold. Waits for exactly these requests, whatever else is in flight.
   */
  async settledUsage(
    accountId: string,
    requestIds: readonly string[],
    timeoutMs = 15_000,
  ): Promise<Map<string, UsageRecord>> {
    let records = new Map<string, UsageRecord>();
    await waitUntil(
      async () => {
        const { records: page } = await this.admin.listUsage({ accountId, pageSize: 500 });
        records = new Map(page.map((r) => [r.requestId, r]));
        return requestIds.every((id) => {
          const outcome = records.get(id)?.outcome;
          return outcome !== undefined && outcome !== "open";
        });
      },
      timeoutMs,
      `requests ${requestIds.join(", ")} to be settled`,
      [this.coordinator],
    );
    return records;
  }

  /** The unchanged official SDK, pointed at the testbed, without its own retries. */
  openai(apiKey: string, options: { timeoutMs?: number } = {}): OpenAI {
    return new OpenAI({ baseURL: this.baseUrl, apiKey, maxRetries: 0, timeout: options.timeoutMs ?? 60_000 });
  }

  /** POST /v1/chat/completions with a raw body (a string is sent as is). */
  chat(apiKey: string, body: unknown, init: { signal?: AbortSignal; headers?: Record<string, string> } = {}) {
    return fetch(`${this.baseUrl}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json", ...init.headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
      signal: init.signal,
    });
  }

  /** Connected providers the coordinator would route to, for one model or all. */
  async routable(model?: string): Promise<ProviderSummary[]> {
    const { providers } = await this.admin.listProviders({ model: model ?? "" });
    return providers.filter((p) => p.routable);
  }

  /** The provider process behind an X-Provider-Id. */
  async providerById(providerId: string): Promise<TestbedProvider> {
    const { providers } = await this.admin.listProviders({});
    const summary = providers.find((p) => p.providerId === providerId);
    if (!summary) throw new Error(`provider ${providerId} is not connected`);
    for (const p of this.providers) {
      if ((await p.machineId().catch(() => "")) === summary.machineId) return p;
    }
    throw new Error(`no testbed process has machine id ${summary.machineId}`);
  }

  /** The coordinator's id of a provider process's current connection (for X-Darkbloom-Providers). */
  async providerIdOf(p: TestbedProvider): Promise<string> {
    const machineId = await p.machineId();
    const { providers } = await this.admin.listProviders({});
    const summary = providers.find((s) => s.machineId === machineId);
    if (!summary) throw new Error(`${p.name} is not connected`);
    return summary.providerId;
  }

  /**
   * Waits until every running provider is routable for each of its models (so a killed one must be
   * gone from the registry and a restarted one back).
   */
  async waitForProviders(timeoutMs = STARTUP_TIMEOUT_MS): Promise<void> {
    const expected = new Map<string, number>();
    for (const p of this.providers.filter((q) => q.running)) {
      for (const m of p.models) expected.set(m, (expected.get(m) ?? 0) + 1);
    }
    await waitUntil(
      async () => {
        const { providers } = await this.admin.listProviders({}).catch(() => ({ providers: [] }));
        if (providers.length !== this.providers.filter((q) => q.running).length) return false;
        return [...expected].every(
          ([model, count]) =>
            providers.filter((p) => p.routable && p.models.includes(model)).length === count,
        );
      },
      timeoutMs,
      `providers to be routable (${[...expected].map(([m, n]) => `${n}×${m}`).join(", ")})`,
      [this.coordinator, ...this.providers.filter((p) => p.running)],
    );
  }

  /** Stops everything (providers drain first, then the coordinator, then PostgreSQL), then deletes it all. */
  /**
   * The tokenizer of a model the testbed serves (from the first provider's copy of its file): what
   * its usage must count to. Loaded once per model; freed by stop().
   */
  tokenizer(model: string): Promise<ModelTokenizer> {
    let t = this.tokenizers.get(model);
    if (!t) {
      const owner = this.providers.find((p) => p.models.includes(model));
      if (!owner) return Promise.reject(new Error(`no testbed provider serves ${model}`));
      this.llama ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
      const path = modelPath(join(owner.dataDir, "models"), model);
      t = this.llama.then((llama) => ModelTokenizer.open(llama, path));
      this.tokenizers.set(model, t);
    }
    return t;
  }

  /** What a one-message chat's prompt and a text count to with a model's tokenizer. */
  async counts(
    model: string,
    userMessage: string,
    text: string,
    maxTokens: number,
  ): Promise<{ prompt: number; completion: number }> {
    const t = await this.tokenizer(model);
    return {
      prompt: t.countPrompt({ kind: "chat", messages: [{ role: "user", content: userMessage }] }),
      completion: choiceCompletionTokens(t.countText(text), maxTokens),
    };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.tokenizers.values()) await (await t.catch(() => undefined))?.dispose();
    await (await this.llama?.catch(() => undefined))?.dispose();
    await Promise.allSettled(this.providers.map((p) => p.stop()));
    await Promise.allSettled(this.replicas.map((c) => c.stop()));
    await Promise.allSettled(this.providers.map((p) => p.tap?.close()));
    await Promise.allSettled(this.peerTaps.map((t) => t?.close()));
    await this.balancer?.close();
    await this.postgres.stop().catch(() => undefined);
    this.reaper?.release();
    if (process.env.DARKBLOOM_TESTBED_KEEP) {
      process.stderr.write(`testbed kept in ${this.dir}\n`);
    } else {
      await rm(this.dir, { recursive: true, force: true });
    }
  }
}

/**
 * Starts PostgreSQL, the coordinator (catalog priced for every model) and the provider daemons, and
 * waits until every provider is routable. On any failure everything started is stopped again, and
 * the error carries the tail of the failing process's log.
 */
export async function startTestbed(o: TestbedOptions): Promise<Testbed> {
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-testbed-"));
  // As root, PostgreSQL runs as "postgres", which must be able to enter the directory.
  if (process.getuid?.() === 0) await chmod(dir, 0o711);
  const logs = join(dir, "logs");
  await mkdir(logs);
  // Kills whatever is left running should this process die without stopping the testbed.
  const reaper = Reaper.start();
  const started: { stop(): Promise<void> }[] = [{ stop: async () => reaper?.release() }];
  try {
    const postgres = await TestbedPostgres.start(join(dir, "postgres"));
    started.push(postgres);
    postgres.onStarted = (pid) => reaper?.watchProcess(pid, "SIGQUIT");
    const pgPid = await postgres.pid();
    if (pgPid) reaper?.watchProcess(pgPid, "SIGQUIT");
    const adminKey = `dbadm_${randomBytes(24).toString("base64url")}`;
    const metricsToken = randomBytes(24).toString("base64url");
    const peerToken = randomBytes(24).toString("base64url");
    const replicaCount = o.replicas ?? 1;
    const replicas: TestbedCoordinator[] = [];
    const peerTaps: (TcpTap | undefined)[] = [];
    for (let r = 0; r < replicaCount; r++) {
      const port = await freePort();
      const peerTap = o.tapPeers && r > 0 ? await TcpTap.start({ host: "127.0.0.1", port }) : undefined;
      if (peerTap) started.push({ stop: () => peerTap.close() });
      peerTaps.push(peerTap);
      const replica = new TestbedCoordinator(
        port,
        () => [
          "serve",
          ...["--port", String(port), "--data-dir", join(dir, r === 0 ? "coordinator" : `coordinator-${r}`)],
          ...["--database-url", postgres.url, "--admin-key", adminKey, "--log-level", "info"],
          ...["--metrics-token", metricsToken],
          ...(replicaCount > 1 ? ["--peer-token", peerToken] : []),
          ...(peerTap ? ["--advertise-url", peerTap.url] : []),
          ...(o.minTrust ? ["--min-trust", o.minTrust] : []),
          ...(o.coordinatorArgs ?? []),
        ],
        join(logs, r === 0 ? "coordinator.log" : `coordinator-${r}.log`),
        r === 0 ? "coordinator" : `coordinator-${r}`,
      );
      replica.onStarted = (pid) => reaper?.watchGroup(pid);
      replica.start();
      started.push(replica);
      // One at a time: each applies the migrations (under an advisory lock) before it answers.
      await replica.waitHealthy();
      replicas.push(replica);
    }
    const coordinator = replicas[0] as TestbedCoordinator;
    const balancer = o.balanced ? await TcpBalancer.start(replicas.map((r) => r.port)) : undefined;
    if (balancer) started.push({ stop: () => balancer.close() });

    const providers: TestbedProvider[] = [];
    for (const [i, spec] of o.providers.entries()) {
      const target =
        spec.replica === "balanced"
          ? balancer && { port: balancer.port, url: balancer.url }
          : replicas[spec.replica ?? 0];
      if (!target) throw new Error(`provider ${i} names replica ${spec.replica}, which this testbed lacks`);
      const tap = spec.tap ? await TcpTap.start({ host: "127.0.0.1", port: target.port }) : undefined;
      if (tap) started.push({ stop: () => tap.close() });
      const dataDir = join(dir, "providers", String(i));
      const coordinatorUrl = tap?.url ?? target.url;
      providers.push(
        new TestbedProvider(
          i,
          spec.models,
          dataDir,
          tap,
          providerBin,
          () => [
            "serve",
            ...["--coordinator", coordinatorUrl, "--data-dir", dataDir],
            ...["--model", spec.models.join(","), "--threads", "1", "--log-level", "info"],
            // Many daemons on one machine: none takes the default metrics address (a spec may set one).
            ...(spec.args?.includes("--metrics-listen") ? [] : ["--metrics-listen", "off"]),
            // One TPM holds one attestation key: daemons use the software key unless a spec says.
            ...(spec.args?.includes("--tpm") ? [] : ["--tpm", "off"]),
            "--allow-cpu", // the engine computes on this machine's CPU
            // node-llama-cpp unless a spec says. The drills cut streams mid-flight once the consumer
            // has seen the first token, and the native core decodes tiny about twice as fast: they
            // pass on it, but a loaded machine's reaction time then eats most of a stream (a stall
            // landed after ~1,060 of at most 1,500 tokens), too little margin for CI.
            ...(spec.args?.includes("--engine") ? [] : ["--engine", "llama"]),
            ...(spec.maxBatch ? ["--max-batch", String(spec.maxBatch)] : []),
            ...(spec.args ?? []),
          ],
          join(logs, `provider-${i}.log`),
        ),
      );
    }
    for (const p of providers) p.onStarted = (pid) => reaper?.watchGroup(pid);
    const testbed = new Testbed(
      dir,
      postgres,
      coordinator,
      providers,
      adminKey,
      reaper,
      metricsToken,
      replicas,
      peerTaps,
      balancer,
    );
    started.length = 0;
    started.push(testbed);

    const prices = o.prices ?? TESTBED_PRICES;
    for (const model of new Set(o.providers.flatMap((p) => p.models))) {
      await testbed.admin.upsertModel({
        model: {
          id: model,
          displayName: `${model} (synthesized)`,
          ownedBy: "darkbloom-testbed",
          inputMicroUsdPerMillion: prices.input,
          outputMicroUsdPerMillion: prices.output,
          enabled: true,
        },
      });
    }
    await Promise.all(providers.map((p) => synthesize(p)));
    if (o.vocabularies !== false) await giveVocabularies(testbed, providers);
    for (const p of providers) p.start();
    if (o.waitForProviders !== false) await testbed.waitForProviders();
    return testbed;
  } catch (error) {
    await Promise.allSettled(started.reverse().map((s) => s.stop()));
    if (!process.env.DARKBLOOM_TESTBED_KEEP) await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Writes each of the provider's models into its data directory (deterministic synthesis, ~0.3 s). */
async function synthesize(p: TestbedProvider): Promise<void> {
  for (const model of p.models) {
    await execFileAsync(process.execPath, [providerBin, "models", "synth", model, "--data-dir", p.dataDir]);
  }
}

/** Uploads each model's vocabulary, from the first provider's copy of the model. */
async function giveVocabularies(testbed: Testbed, providers: TestbedProvider[]): Promise<void> {
  const files = new Map<string, string>();
  for (const p of providers) {
    for (const model of p.models) {
      if (!files.has(model)) files.set(model, modelPath(join(p.dataDir, "models"), model));
    }
  }
  await Promise.all(
    [...files].map(async ([model, file]) => uploadVocabulary(testbed.admin, model, await vocabularyOf(file))),
  );
}

/**
 * Polls `check` every 100 ms until it holds; throws when the time runs out or one of `watch` exits,
 * with the tail of that process's log.
 */
export async function waitUntil(
  check: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
  watch: readonly ManagedProcess[] = [],
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = watch.find((p) => !p.running);
    if (dead) throw new Error(`${dead.name} exited while waiting for ${what}:\n${await dead.logTail()}`);
    if (await check()) return;
    if (Date.now() > deadline) {
      const tails = await Promise.all(watch.map(async (p) => `--- ${p.name}\n${await p.logTail(10)}`));
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}\n${tails.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
