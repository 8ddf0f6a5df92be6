// Runs a coordinator (or the bare SSE baseline server) in its own process for the benchmark, so the
// measured server has a core to itself while the load generator and providers use the other one.
// Parent ↔ child over IPC: the child sends {url, apiKey} once it listens, answers "cpu" with its
// process.cpuUsage() (every thread) and its main thread's CPU time, and stops on "stop".

import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, startCoordinator, uploadVocabulary, vocabularyOf } from "@darkbloom/coordinator";
import { adminClient } from "@darkbloom/coordinator/testing";

const mode = process.argv[2];
const send = (m: unknown) => process.send?.(m);

if (mode === "coordinator") {
  const databaseUrl = process.argv[3];
  const billingEnabled = process.argv[4] !== "no-billing";
  // "plaintext": providers register without a key and are sent plaintext (encryption off).
  const requireEncryption = process.argv[5] !== "plaintext";
  // Options after the positional ones: "vocabulary=<file>" (the model's usage counted with it, else
  // only bounded), "peer=<token>" (a replica that forwards to and serves its peers).
  const option = (name: string) =>
    process.argv
      .slice(6)
      .find((a) => a.startsWith(`${name}=`))
      ?.slice(name.length + 1);
  const peerToken = option("peer");
  const dataDir = await mkdtemp(join(tmpdir(), "darkbloom-bench-"));
  const coordinator = await startCoordinator(
    {
      ...(peerToken ? { peerToken } : {}),
      dataDir,
      databaseUrl,
      adminKey: "bench-admin-key",
      port: 0,
      rateLimitPerSecond: 0,
      queueDepthPerModel: 100_000,
      billingEnabled,
      requireEncryption,
      minTrustLevel: "none", // scripted providers carry no attestation
    },
    { logger: createLogger("warn") },
  );
  await coordinator.catalog.upsert({
    id: "bench",
    inputMicroUsdPerMillion: 150_000n,
    outputMicroUsdPerMillion: 600_000n,
  });
  const vocabulary = option("vocabulary");
  if (vocabulary) {
    await uploadVocabulary(
      adminClient(coordinator.url, "bench-admin-key"),
      "bench",
      await vocabularyOf(vocabulary),
    );
  }
  const { secret } = await coordinator.accounts.createAccount({
    name: "bench",
    initialCreditMicroUsd: 10n ** 12n,
  });
  process.on("message", async (m) => {
    if (m === "cpu") send({ cpu: process.cpuUsage(), mainThreadUs: mainThreadCpuUs() });
    if (m === "stop") {
      await coordinator.close({ drainMs: 0 });
      await rm(dataDir, { recursive: true, force: true });
      process.exit(0);
    }
  });
  send({ url: coordinator.url, apiKey: secret });
} else if (mode === "baseline") {
  // The floor: a bare Node HTTP server that answers each request with the same 16-token SSE stream,
  // with no auth, routing, provider hop or protocol translation.
  const events = Array.from(
    { length: 16 },
    (_, i) =>
      `data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"bench","choices":[{"index":0,"delta":{"content":"tok${i} "},"logprobs":null,"finish_reason":null}]}\n\n`,
  );
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
      for (const e of events) res.write(e);
      res.end("data: [DONE]\n\n");
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as { port: number };
    send({ url: `http://127.0.0.1:${port}`, apiKey: "none" });
  });
  process.on("message", (m) => {
    if (m === "cpu") send({ cpu: process.cpuUsage(), mainThreadUs: mainThreadCpuUs() });
    if (m === "stop") process.exit(0);
  });
} else {
  process.stderr.write(
    "usage: coordinator-process.js coordinator <database-url> billing|no-billing sealed|plaintext [vocabulary=<file>] [peer=<token>] | baseline\n",
  );
  process.exit(64);
}

/**
 * The main thread's CPU time in µs, from Linux's per-thread accounting (the main thread's id is the
 * process id; utime and stime are fields 14 and 15, in clock ticks of 10 ms); undefined elsewhere.
 * process.cpuUsage() counts every thread, the tokenizer workers too.
 */
function mainThreadCpuUs(): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return undefined;
  }
}
