// Cost of billing per request: reserve + settle against a real PostgreSQL, at 1 and 100 concurrent.
// Usage: npm run bench:billing -- [--requests N] [--levels 1,100] [--accounts N] [--json]
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { AccountStore, Billing, createLogger } from "@darkbloom/coordinator";
import { createTestDatabase, startTestPostgres } from "@darkbloom/coordinator/testing";
import { percentile } from "../support/load-client.js";
import { printTable } from "../support/table.js";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "5000" },
    levels: { type: "string", default: "1,100" },
    accounts: { type: "string", default: "100" },
    json: { type: "boolean", default: false },
  },
});
const total = Number(values.requests);
const levels = (values.levels ?? "").split(",").map(Number);
const accountCount = Number(values.accounts);
if (!(total > 0) || levels.some((l) => !(l > 0)) || !(accountCount > 0)) {
  process.stderr.write("billing-bench: --requests, --levels and --accounts must be positive\n");
  process.exit(64);
}

const server = await startTestPostgres();
const db = await createTestDatabase(server.url);
const log = createLogger("warn");
const billing = new Billing(
  db.pool,
  {
    providerShareBps: 9_500,
    referralShareBps: 2_000,
    reservationTtlSeconds: 300,
    reservationMaxSeconds: 86_400,
    heartbeatMs: 5_000,
    ownerStaleMs: 30_000,
  },
  log,
);
await billing.start();
const store = new AccountStore(db.pool);
const accounts = await Promise.all(
  Array.from({ length: accountCount }, (_, i) =>
    store.createAccount({ name: `bench${i}`, initialCreditMicroUsd: 10n ** 12n }),
  ),
);

interface Row {
  concurrency: number;
  requests: number;
  requestsPerSecond: number;
  reserveP50Ms: number;
  reserveP99Ms: number;
  settleP50Ms: number;
  settleP99Ms: number;
  bothP50Ms: number;
  bothP99Ms: number;
}
const rows: Row[] = [];
let serial = 0;
for (const concurrency of levels) {
  const reserve: number[] = [];
  const settle: number[] = [];
  const both: number[] = [];
  let sent = 0;
  const worker = async () => {
    while (sent < total) {
      sent++;
      const id = `bench_${serial++}`;
      const account = accounts[serial % accounts.length]!.account.id;
      const t0 = performance.now();
      await billing.reserve(id, account, "bench", 5_000n);
      const t1 = performance.now();
      await billing.settle(id, {
        chargeMicroUsd: 1_234n,
        providerAccount: "provider:bench",
        promptTokens: 100,
        completionTokens: 16,
        outcome: "completed",
      });
      const t2 = performance.now();
      reserve.push(t1 - t0);
      settle.push(t2 - t1);
      both.push(t2 - t0);
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - start) / 1000;
  const r = (v: number) => Math.round(v * 1000) / 1000;
  rows.push({
    concurrency,
    requests: total,
    requestsPerSecond: Math.round(total / seconds),
    reserveP50Ms: r(percentile(reserve, 50)),
    reserveP99Ms: r(percentile(reserve, 99)),
    settleP50Ms: r(percentile(settle, 50)),
    settleP99Ms: r(percentile(settle, 99)),
    bothP50Ms: r(percentile(both, 50)),
    bothP99Ms: r(percentile(both, 99)),
  });
}
await billing.stop();
await db.drop();
await server.stop();

const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}`;
if (values.json) {
  process.stdout.write(`${JSON.stringify({ machine, accounts: accountCount, rows }, null, 2)}\n`);
} else {
  process.stdout.write(
    `\nBilling: reserve + settle on embedded PostgreSQL (${machine}, ${accountCount} accounts)\n\n`,
  );
  const header = ["conc", "reqs", "req/s", "reserve p50", "p99", "settle p50", "p99", "both p50 ms", "p99"];
  const lines = rows.map((x) =>
    [
      x.concurrency,
      x.requests,
      x.requestsPerSecond,
      x.reserveP50Ms,
      x.reserveP99Ms,
      x.settleP50Ms,
      x.settleP99Ms,
      x.bothP50Ms,
      x.bothP99Ms,
    ].map(String),
  );
  printTable(header, lines);
}
