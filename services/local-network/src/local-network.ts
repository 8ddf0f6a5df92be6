import { chmod, link, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { uploadVocabulary, vocabularyOf } from "@darkbloom/coordinator";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { detectTopology, modelPath } from "@darkbloom/provider";
import { coordinatorBin, freePort, providerBin } from "./binaries.js";
import { type Child, startChild } from "./child.js";
import { planProviders } from "./plan.js";

export interface LocalNetworkOptions {
  /** Coordinator port on 127.0.0.1 (0 picks a free one). */
  port: number;
  /** Everything lives here: the coordinator's database, each provider's data, logs, the demo account. */
  dataDir: string;
  /** Provider daemons, or "auto" (plan.ts: as many as the model's threads fit in the physical cores). */
  providers: number | "auto";
  /** A synthesized model shape (tiny, qwen3-0.6b, llama-3.2-1b) served by every provider. */
  model: string;
  /**
   * A synthesized embedding model (tiny-embed) every provider serves beside it, for /v1/embeddings;
   * undefined: none. Under the auto engine the daemons embed with a llama engine beside the native core.
   */
  embeddingModel?: string | undefined;
  /** Where progress lines go (not the READY line). */
  log: (line: string) => void;
  /** Aborting it during the start stops whatever was started; the start then rejects. */
  signal?: AbortSignal | undefined;
  /** The providers' engine (`darkbloom serve --engine`; default: the daemon's own default, auto). */
  engine?: "auto" | "llama" | "native" | undefined;
}

export interface LocalNetwork {
  baseUrl: string;
  apiKey: string;
  adminKey: string;
  /** Resolves when a child process exits on its own (the network is then broken). */
  failed: Promise<string>;
  stop(): Promise<void>;
}

/** Demo prices: $0.10 per million prompt tokens, $0.20 per million completion tokens. */
const DEMO_PRICES = { input: 100_000n, output: 200_000n };
/** The demo account starts with $100. */
const DEMO_CREDIT_MICRO_USD = 100_000_000n;
const READY_TIMEOUT_MS = 180_000;

/**
 * Starts the whole network on this machine: the coordinator (embedded PostgreSQL in its data
 * directory), a synthesized model, N provider daemons serving it, a priced catalog entry and a funded
 * demo account; resolves once a completion can be served.
 */
export async function startLocalNetwork(o: LocalNetworkOptions): Promise<LocalNetwork> {
  const dataDir = resolve(o.dataDir);
  await makeTraversable(dataDir);
  const logs = join(dataDir, "logs");
  await mkdir(logs, { recursive: true });
  const children: Child[] = [];
  const stop = async () => {
    // Providers drain first (they finish in-flight work), then the coordinator.
    await Promise.all(children.filter((c) => c.name !== "coordinator").map((c) => c.stop(35_000)));
    await Promise.all(children.filter((c) => c.name === "coordinator").map((c) => c.stop(15_000)));
  };
  try {
    const port = o.port || (await freePort());
    const url = `http://127.0.0.1:${port}`;
    o.log(`starting the coordinator on ${url} (logs in ${logs})`);
    const coordinator = startChild(
      "coordinator",
      coordinatorBin,
      ["serve", "--port", String(port), "--data-dir", join(dataDir, "coordinator"), "--log-level", "warn"],
      join(logs, "coordinator.log"),
    );
    children.push(coordinator);
    await waitUntil(
      () => healthy(url),
      coordinator,
      READY_TIMEOUT_MS,
      "the coordinator to answer /healthz",
      [coordinator],
      o.signal,
    );
    const adminKey = (await readFile(join(dataDir, "coordinator", "admin.key"), "utf8")).trim();
    const admin = createClient(
      AdminService,
      createConnectTransport({
        baseUrl: url,
        httpVersion: "1.1",
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${adminKey}`);
            return next(req);
          },
        ],
      }),
    );
    const models = [o.model, ...(o.embeddingModel ? [o.embeddingModel] : [])];
    for (const id of models) {
      await admin.upsertModel({
        model: {
          id,
          displayName: `${id} (synthesized)`,
          ownedBy: "darkbloom-local",
          inputMicroUsdPerMillion: DEMO_PRICES.input,
          outputMicroUsdPerMillion: DEMO_PRICES.output,
          enabled: true,
        },
      });
    }
    const apiKey = await demoAccount(dataDir, url, admin);

    const providerDir = (i: number) => join(dataDir, "providers", String(i));
    // The model first: its size decides how many daemons run and with how many threads each.
    const modelFile = await synthesizeModel(o.model, o, providerDir(0), logs);
    const plan = planProviders({
      requested: o.providers,
      modelBytes: (await stat(modelFile)).size,
      model: o.model,
      topology: await detectTopology(),
    });
    for (const line of plan.explanation) o.log(line);
    const providerDirs = Array.from({ length: plan.providers }, (_, i) => providerDir(i));
    const files = new Map([[o.model, modelFile]]);
    if (o.embeddingModel) {
      files.set(o.embeddingModel, await synthesizeModel(o.embeddingModel, o, providerDir(0), logs));
    }
    for (const [id, file] of files) {
      await linkModel(file, id, providerDirs.slice(1));
      // The coordinator counts the model's tokens itself (usage is then never a provider's claim).
      await uploadVocabulary(admin, id, await vocabularyOf(file));
    }
    const threads = plan.threads;
    for (const [i, dir] of providerDirs.entries()) {
      o.log(`starting provider ${i} (${threads} thread${threads === 1 ? "" : "s"})`);
      children.push(
        startChild(
          `provider-${i}`,
          providerBin,
          [
            "serve",
            "--coordinator",
            url,
            "--data-dir",
            dir,
            "--model",
            models.join(","),
            "--threads",
            String(threads),
            "--log-level",
            "warn",
            // Several daemons on one machine: the default metrics address would be the first one's.
            "--metrics-listen",
            "off",
            // A machine's TPM holds one attestation key: several daemons would present the same
            // key, which the coordinator flags as a duplicate.
            "--tpm",
            "off",
            // A development network: the CPU serves where there is no GPU.
            "--allow-cpu",
            ...(o.engine ? ["--engine", o.engine] : []),
          ],
          join(logs, `provider-${i}.log`),
        ),
      );
    }
    await waitUntil(
      () => canServe(url, apiKey, o.model),
      undefined,
      READY_TIMEOUT_MS,
      "a completion to be served",
      children,
      o.signal,
    );
    const embeddingModel = o.embeddingModel;
    if (embeddingModel) {
      await waitUntil(
        () => canEmbed(url, apiKey, embeddingModel),
        undefined,
        READY_TIMEOUT_MS,
        "embeddings to be served",
        children,
        o.signal,
      );
    }
    const failed = Promise.race(
      children.map((c) => c.exited.then((code) => `${c.name} exited (${code}); see ${c.logFile}`)),
    );
    return { baseUrl: `${url}/v1`, apiKey, adminKey, failed, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** As root, the embedded PostgreSQL runs as "postgres", which must traverse the data directory. */
async function makeTraversable(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (process.getuid?.() === 0) {
    const { mode } = await stat(dir);
    await chmod(dir, (mode & 0o7777) | 0o011);
  }
}

/** Synthesizes a model into the first provider's data directory (once); returns its path. */
async function synthesizeModel(
  model: string,
  o: LocalNetworkOptions,
  first: string,
  logs: string,
): Promise<string> {
  const source = modelPath(join(first, "models"), model);
  if (!(await exists(source))) {
    o.log(`synthesizing model ${model}`);
    const synth = startChild(
      "synth",
      providerBin,
      ["models", "synth", model, "--data-dir", first],
      join(logs, `synth-${model}.log`),
    );
    const code = await synth.exited;
    if (code !== 0) throw new Error(`could not synthesize ${model} (exit ${code}); see ${synth.logFile}`);
  }
  return source;
}

/** Hard-links the model into the other providers' models directories (a copy where links fail). */
async function linkModel(source: string, model: string, dirs: string[]): Promise<void> {
  for (const dir of dirs) {
    const target = modelPath(join(dir, "models"), model);
    if (await exists(target)) continue;
    await mkdir(dirname(target), { recursive: true });
    await link(source, target).catch(async () => {
      await rm(target, { force: true });
      await writeFile(target, await readFile(source));
    });
  }
}

/** The demo account's key, kept in the data directory (0600) and reused while it still works. */
async function demoAccount(
  dataDir: string,
  url: string,
  admin: ReturnType<typeof createClient<typeof AdminService>>,
): Promise<string> {
  const file = join(dataDir, "demo-account.json");
  try {
    const saved = JSON.parse(await readFile(file, "utf8")) as { api_key?: string };
    if (
      saved.api_key &&
      (await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${saved.api_key}` } })).ok
    ) {
      return saved.api_key;
    }
  } catch {
    // no usable saved account: make one
  }
  const created = await admin.createAccount({ name: "demo", initialCreditMicroUsd: DEMO_CREDIT_MICRO_USD });
  const record = { account_id: created.account?.id, api_key: created.apiKeySecret };
  await writeFile(file, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  return created.apiKeySecret;
}

async function healthy(url: string): Promise<boolean> {
  return fetch(`${url}/healthz`).then(
    (r) => r.ok,
    () => false,
  );
}

async function canServe(url: string, apiKey: string, model: string): Promise<boolean> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "ping" }], max_tokens: 1 }),
    // One probe may not wait out the coordinator's queue: the loop polls again.
    signal: AbortSignal.timeout(5_000),
  }).catch(() => undefined);
  await res?.arrayBuffer();
  return res?.status === 200;
}

async function canEmbed(url: string, apiKey: string, model: string): Promise<boolean> {
  const res = await fetch(`${url}/v1/embeddings`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ model, input: "ping" }),
    signal: AbortSignal.timeout(5_000),
  }).catch(() => undefined);
  await res?.arrayBuffer();
  return res?.status === 200;
}

async function waitUntil(
  check: () => Promise<boolean>,
  child: Child | undefined,
  timeoutMs: number,
  what: string,
  watch: Child[] = child ? [child] : [],
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let dead: string | undefined;
  for (const c of watch)
    void c.exited.then((code) => (dead ??= `${c.name} exited (${code}); see ${c.logFile}`));
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    if (dead) throw new Error(`${dead} while waiting for ${what}`);
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
