// End-to-end encryption cost: seal and open per request (1 KB, 32 KB) and per chunk, the response
// signature, and the full-stack throughput with encryption off and on in one run.
// Usage: npm run bench:crypto -- [--iterations N] [--levels 1,100] [--requests N] [--rounds N]
//   [--providers N] [--no-full-stack] [--json]
import { execFile } from "node:child_process";
import { generateKeyPairSync, sign } from "node:crypto";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { decodeChunkPayload, encodeChunkPayload, p256PublicKeyFromRaw } from "@darkbloom/protocol";
import { BoxKeyPair, sealBox, wipe } from "@darkbloom/protocol/sealed-box";
import {
  responseSha256,
  responseSignatureMessage,
  sha256,
  textChoices,
  verifyResponseSignature,
} from "@darkbloom/protocol/verifiable-response";
import { median } from "../support/load-client.js";
import { printTable } from "../support/table.js";

const { values } = parseArgs({
  options: {
    iterations: { type: "string", default: "20000" },
    levels: { type: "string", default: "1,100" },
    requests: { type: "string", default: "20000" },
    providers: { type: "string", default: "4" },
    rounds: { type: "string", default: "2" },
    "no-full-stack": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  },
});
const iterations = Number(values.iterations);
if (!Number.isInteger(iterations) || iterations < 100) {
  process.stderr.write("crypto-bench: --iterations must be an integer of at least 100\n");
  process.exit(64);
}

interface MicroRow {
  operation: string;
  p50Us: number;
  p99Us: number;
  meanUs: number;
}

/** Times `fn` per call (after a warm-up of a tenth as many calls). */
function time(operation: string, fn: (i: number) => void, n = iterations): MicroRow {
  for (let i = 0; i < Math.ceil(n / 10); i++) fn(i);
  const samples = new Float64Array(n);
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    fn(i);
    samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  const total = Number(process.hrtime.bigint() - started) / 1000;
  samples.sort();
  const at = (p: number) => samples[Math.min(n - 1, Math.floor((p / 100) * n))] ?? 0;
  return { operation, p50Us: round(at(50)), p99Us: round(at(99)), meanUs: round(total / n) };
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** A chat request body of about `size` bytes. */
function requestOf(size: number): Uint8Array {
  const head = '{"model":"bench","messages":[{"role":"user","content":"';
  const tail = '"}],"max_tokens":16}';
  return new TextEncoder().encode(head + "x".repeat(Math.max(0, size - head.length - tail.length)) + tail);
}

const provider = BoxKeyPair.generate();
const micro: MicroRow[] = [];

for (const [label, size] of [
  ["1 KB", 1024],
  ["32 KB", 32 * 1024],
] as const) {
  const body = requestOf(size);
  // Coordinator, per dispatch (sealRequest): the box key from a fresh ephemeral key pair and the
  // provider's key (X25519 + HSalsa20), the ephemeral secret wiped, the body sealed
  // (XSalsa20-Poly1305). The key pair itself is generated ahead, between requests; measured apart.
  const pregenerated = Array.from({ length: iterations + Math.ceil(iterations / 10) }, () =>
    BoxKeyPair.generate(),
  );
  let next = 0;
  micro.push(
    time(`request ${label}: seal on the request path (box key + seal + wipe)`, () => {
      const ephemeral = pregenerated[next++] as BoxKeyPair;
      const key = ephemeral.keyFor(provider.publicKey);
      ephemeral.wipe();
      key.seal(body);
      key.wipe();
    }),
  );
  micro.push(
    time(`request ${label}: seal including the key pair generation`, () => {
      const ephemeral = BoxKeyPair.generate();
      const key = ephemeral.keyFor(provider.publicKey);
      ephemeral.wipe();
      key.seal(body);
      key.wipe();
    }),
  );
  const sealedBoxes = Array.from({ length: 64 }, () => {
    const ephemeral = BoxKeyPair.generate();
    const key = ephemeral.keyFor(provider.publicKey);
    const box = key.seal(body);
    key.wipe();
    return { sender: ephemeral.publicKey, box };
  });
  // Provider, per request: the box key from its secret and the ephemeral public key, then open.
  micro.push(
    time(`request ${label}: open (box key + open + wipe)`, (i) => {
      const s = sealedBoxes[i % sealedBoxes.length] as (typeof sealedBoxes)[number];
      const key = provider.keyFor(s.sender);
      wipe(key.open(s.box));
      key.wipe();
    }),
  );
  // For reference: libsodium's one-shot crypto_box_easy with an existing key pair.
  const sender = BoxKeyPair.generate();
  micro.push(
    time(`request ${label}: crypto_box_easy alone (reference)`, () => {
      sealBox(body, provider.publicKey, sender.secretKey);
    }),
  );
  micro.push(time(`request ${label}: SHA-256 of the body`, () => sha256(body)));
}

micro.push(time("ephemeral key pair generation (ahead of the request)", () => BoxKeyPair.generate().wipe()));

// Per chunk: a 16-byte token (plus its ChunkPayload framing) sealed by the provider and opened by
// the coordinator with the request's precomputed box key.
{
  const ephemeral = BoxKeyPair.generate();
  const coordinatorKey = ephemeral.keyFor(provider.publicKey);
  const providerKey = provider.keyFor(ephemeral.publicKey);
  const text = "0123456789abcdef";
  micro.push(
    time("chunk 16 B: seal (serialize ChunkPayload + seal)", () => {
      const plaintext = encodeChunkPayload(text, 1, 0);
      providerKey.seal(plaintext);
      wipe(plaintext);
    }),
  );
  const boxes = Array.from({ length: 64 }, () => providerKey.seal(encodeChunkPayload(text, 1, 0)));
  micro.push(
    time("chunk 16 B: open (open + parse ChunkPayload + wipe)", (i) => {
      const plaintext = coordinatorKey.open(boxes[i % boxes.length] as (typeof boxes)[number]);
      decodeChunkPayload(plaintext);
      wipe(plaintext);
    }),
  );
}

// Per response: the provider's signature and the coordinator's check (hashes and ECDSA verify).
{
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const response = {
    providerId: "prov_bench",
    model: "tiny",
    choices: textChoices([Array.from({ length: 16 }, (_, i) => `tok${i} `).join("")], ["stop"]),
    usage: { promptTokens: 256, completionTokens: 16 },
  };
  const requestHash = sha256(requestOf(1024));
  const responseHash = responseSha256(response);
  const signature = sign("sha256", responseSignatureMessage(requestHash, responseHash), privateKey);
  const spki = publicKey.export({ format: "der", type: "spki" });
  // The coordinator parses a provider's key once per session (parsing costs more than verifying).
  const parsed = p256PublicKeyFromRaw(new Uint8Array(spki.subarray(spki.length - 65)));
  const n = Math.min(iterations, 5000);
  micro.push(
    time(
      "response: sign (SHA-256 of 16 tokens + ECDSA P-256)",
      () => sign("sha256", responseSignatureMessage(requestHash, responseSha256(response)), privateKey),
      n,
    ),
  );
  micro.push(
    time(
      "response: verify (SHA-256 of 16 tokens + ECDSA P-256 verify, parsed key)",
      () => verifyResponseSignature(parsed, requestHash, responseSha256(response), signature),
      n,
    ),
  );
}

interface StackRow {
  target: string;
  concurrency: number;
  requestsPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  errors: number;
  /** Coordinator process CPU per request, µs. */
  serverCpuUsPerRequest: number;
  /** Benchmark process (load clients and the providers) CPU per request, µs. */
  benchCpuUsPerRequest: number;
}

const stack: StackRow[] = [];
if (!values["no-full-stack"]) {
  // Off and on alternate (off-on, on-off, …) so that a drift in the machine's load does not favour
  // either; each run is a fresh coordinator-bench (its own PostgreSQL, coordinator and providers).
  const rounds = Math.max(1, Number(values.rounds) || 1);
  const runs: StackRow[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const mode of round % 2 === 0 ? ["off", "on"] : ["on", "off"]) {
      runs.push(...(await coordinatorBench(mode)));
    }
  }
  for (const target of [...new Set(runs.map((r) => r.target))]) {
    for (const concurrency of [...new Set(runs.map((r) => r.concurrency))]) {
      const same = runs.filter((r) => r.target === target && r.concurrency === concurrency);
      if (same.length === 0) continue;
      const med = (f: (r: StackRow) => number) => median(same.map(f));
      stack.push({
        target: `${target}${same.length > 1 ? ` (median of ${same.length})` : ""}`,
        concurrency,
        requestsPerSecond: Math.round(med((r) => r.requestsPerSecond)),
        latencyP50Ms: round(med((r) => r.latencyP50Ms)),
        latencyP99Ms: round(med((r) => r.latencyP99Ms)),
        errors: same.reduce((n, r) => n + r.errors, 0),
        serverCpuUsPerRequest: round(
          med((r) => r.serverCpuUsPerRequest),
          1,
        ),
        benchCpuUsPerRequest: round(
          med((r) => r.benchCpuUsPerRequest),
          1,
        ),
      });
    }
  }
}

async function coordinatorBench(encryption: string): Promise<StackRow[]> {
  const bench = fileURLToPath(new URL("./coordinator-bench.js", import.meta.url));
  const args = [
    bench,
    "--encryption",
    encryption,
    "--billing",
    "off",
    "--levels",
    values.levels ?? "1,100",
    "--requests",
    values.requests ?? "20000",
    "--providers",
    values.providers ?? "4",
    "--json",
  ];
  process.stderr.write(`running: node tests/dist/bench/coordinator-bench.js ${args.slice(1).join(" ")}\n`);
  const out = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, args, { maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`coordinator-bench failed: ${stderr || error.message}`));
      else resolve(stdout);
    }),
  );
  return (JSON.parse(out) as { rows: StackRow[] }).rows.filter((r) => r.target.startsWith("coordinator"));
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}`;
const comparisons = [...new Set(stack.map((r) => r.concurrency))].map((concurrency) => {
  const off = stack.find((r) => r.concurrency === concurrency && r.target.includes("encryption off"));
  const on = stack.find((r) => r.concurrency === concurrency && r.target.includes("encryption on"));
  const cost = off && on ? round((1 - on.requestsPerSecond / off.requestsPerSecond) * 100, 1) : undefined;
  return {
    concurrency,
    off: off?.requestsPerSecond,
    on: on?.requestsPerSecond,
    costPercent: cost,
    coordinatorCpuUs: off && on ? round(on.serverCpuUsPerRequest - off.serverCpuUsPerRequest, 1) : undefined,
    providerSideCpuUs: off && on ? round(on.benchCpuUsPerRequest - off.benchCpuUsPerRequest, 1) : undefined,
  };
});

if (values.json) {
  process.stdout.write(`${JSON.stringify({ machine, iterations, micro, stack, comparisons }, null, 2)}\n`);
} else {
  process.stdout.write(`\nEnd-to-end encryption benchmark (${machine})\n\n`);
  printTable(
    ["operation", "p50 µs", "p99 µs", "mean µs"],
    micro.map((r) => [r.operation, r.p50Us, r.p99Us, r.meanUs].map(String)),
  );
  if (stack.length > 0) {
    process.stdout.write("\nFull stack: 16-token streamed chat completions, billing off\n\n");
    printTable(
      ["target", "conc", "req/s", "p50 ms", "p99 ms", "err", "coord cpu µs/req", "bench cpu µs/req"],
      stack.map((r) =>
        [
          r.target,
          r.concurrency,
          r.requestsPerSecond,
          r.latencyP50Ms,
          r.latencyP99Ms,
          r.errors,
          r.serverCpuUsPerRequest,
          r.benchCpuUsPerRequest,
        ].map(String),
      ),
    );
    process.stdout.write("\n");
    for (const c of comparisons) {
      process.stdout.write(
        `concurrency ${c.concurrency}: ${c.off} req/s off, ${c.on} req/s on: throughput cost ${c.costPercent}%; ` +
          `encryption costs the coordinator ${c.coordinatorCpuUs} µs CPU a request, the providers (and clients) ` +
          `${c.providerSideCpuUs} µs\n`,
      );
    }
  }
}
