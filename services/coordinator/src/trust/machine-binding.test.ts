import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  newSigningKey,
  ScriptedProvider,
  type ScriptedProviderOptions,
  softwareAttestor,
  type TestSigningKey,
} from "@darkbloom/testing";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { CoordinatorConfig } from "../config.js";
import { runCliCaptured } from "../testing/test-cli.js";
import {
  adminClient,
  postJson,
  startTestCoordinator,
  TEST_ADMIN_KEY,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { createTestDatabase, startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { MachineBindingStore } from "./machine-bindings.js";

/**
 * Machine identity, end to end: real coordinators on PostgreSQL, scripted providers over real Connect
 * streams attesting with real P-256 keys. Each test is an attack that worked before machine ids were
 * bound to keys (issue 10, item 5), or the administrator's way out of a binding.
 */

const BINARY = "b1".repeat(32);
/** Fast challenges, so that "attested" is reached within a test. */
const TRUST: Partial<CoordinatorConfig> = {
  minTrustLevel: "self_signed",
  challengeIntervalMs: 250,
  challengeTimeoutMs: 150,
  challengeRetryMs: 50,
};

type TestKey = TestSigningKey;
const newKey = newSigningKey;
const attestor = (key: TestKey, persistent = true) =>
  softwareAttestor(key, { binarySha256: BINARY, persistent });

let pgServer: TestPostgres;
beforeAll(async () => {
  pgServer = await startTestPostgres();
});
afterAll(async () => {
  await pgServer?.stop();
});

const coordinators: TestCoordinator[] = [];
const providers: ScriptedProvider[] = [];
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop()));
  for (const c of coordinators.splice(0)) await c.close();
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function coordinator(
  over: Partial<CoordinatorConfig> = {},
  options: { database?: string } = {},
): Promise<TestCoordinator> {
  const c = await startTestCoordinator(pgServer.url, { ...TRUST, ...over }, options);
  coordinators.push(c);
  return c;
}

/** A database that outlives the coordinators started on it (dropped after the test). */
async function sharedDatabase(): Promise<string> {
  const db = await createTestDatabase(pgServer.url);
  cleanups.push(() => db.drop());
  return db.url;
}

/** Starts a provider attesting with `key` (none: no attestation); rejects when it is refused. */
async function provider(
  c: TestCoordinator,
  key: TestKey | undefined,
  over: Partial<ScriptedProviderOptions> & { ephemeral?: boolean } = {},
): Promise<ScriptedProvider> {
  const p = new ScriptedProvider({
    baseUrl: c.url,
    models: [{ id: "m" }],
    ...(key ? { attestor: attestor(key, !over.ephemeral), responseSigningKey: key.privateKey } : {}),
    ...over,
  });
  providers.push(p);
  await p.start();
  return p;
}

interface Published {
  provider_id: string;
  trust_level: string;
  routable: boolean;
  attested: boolean;
  reasons: Array<{ code: string }>;
}

async function publishedAll(c: TestCoordinator): Promise<Published[]> {
  const res = await fetch(`${c.url}/v1/providers/attestation`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { data: Published[] }).data;
}

/** Polls the provider's published attestation until `check` holds. */
async function eventually(
  c: TestCoordinator,
  p: ScriptedProvider,
  check: (a: Published) => boolean,
): Promise<Published> {
  const until = Date.now() + 10_000;
  let last: Published | undefined;
  while (Date.now() < until) {
    last = (await publishedAll(c)).find((a) => a.provider_id === p.providerId);
    if (last && check(last)) return last;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`condition not reached; last: ${JSON.stringify(last)}`);
}

async function gone(c: TestCoordinator, p: ScriptedProvider): Promise<void> {
  const id = p.providerId;
  await expect.poll(() => c.coordinator.sessions.get(id ?? "") === undefined, { timeout: 10_000 }).toBe(true);
}

const attested = (a: Published) => a.attested && a.routable && a.trust_level === "self_signed";
const codes = (a: Published) => a.reasons.map((r) => r.code);

async function chat(c: TestCoordinator): Promise<{ status: number; providerId: string | null }> {
  const res = await postJson(c.url, "/v1/chat/completions", c.apiKey, {
    model: "m",
    messages: [{ role: "user", content: "hi" }],
    max_tokens: 4,
  });
  await res.text();
  return { status: res.status, providerId: res.headers.get("x-provider-id") };
}

/** What a refused start rejects with: the stream's Connect error. */
async function refusal(start: Promise<unknown>): Promise<ConnectError> {
  const error = await start.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "the registration was accepted").toBeInstanceOf(ConnectError);
  return error as ConnectError;
}

/** The message names the binding but carries no key material (hex or base64). */
function expectNoKeyMaterial(error: ConnectError, ...keys: TestKey[]): void {
  for (const key of keys) {
    expect(error.message).not.toContain(key.hex.slice(2, 20));
    expect(error.message).not.toContain(Buffer.from(key.publicKey).toString("base64").slice(4, 24));
  }
}

async function boundKeyHex(databaseUrl: string, machineId: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ public_key: Buffer }>(
      "SELECT public_key FROM machine_bindings WHERE machine_id = $1",
      [machineId],
    );
    return rows[0]?.public_key.toString("hex");
  } finally {
    await client.end();
  }
}

describe("a machine id is bound to the first key that attested it", () => {
  it("a squatter's new key is refused for the machine's id, online or offline; the machine comes back", async () => {
    const c = await coordinator();
    const machineId = "machine-real";
    const realKey = newKey();
    const real = await provider(c, realKey, { machineId });
    await eventually(c, real, attested);

    // While the machine is online: refused, and the machine's session and trust are untouched.
    const squatKey = newKey();
    const online = await refusal(provider(c, squatKey, { machineId }));
    expect(online.code).toBe(Code.PermissionDenied);
    expect(online.rawMessage).toMatch(/^machine_id machine-real is bound to another attestation signing key/);
    expectNoKeyMaterial(online, realKey, squatKey);
    await eventually(c, real, attested);
    expect((await chat(c)).providerId).toBe(real.providerId);

    // While it is offline: refused all the same, with a key or without one.
    await real.stop();
    await gone(c, real);
    const offline = await refusal(provider(c, squatKey, { machineId }));
    expect(offline.code).toBe(Code.PermissionDenied);
    expect(offline.rawMessage).toContain("only that key may register it");
    const keyless = await refusal(provider(c, undefined, { machineId }));
    expect(keyless.code).toBe(Code.PermissionDenied);
    expect(keyless.rawMessage).toMatch(/without a verified attestation \(no attestation\) cannot claim it/);
    expect(await publishedAll(c)).toEqual([]);

    // The machine reconnects with its key: attested, routed.
    const back = await provider(c, realKey, { machineId });
    await eventually(c, back, attested);
    expect(await chat(c)).toEqual({ status: 200, providerId: back.providerId });
    expect(await boundKeyHex(c.coordinator.databaseUrl, machineId)).toBe(realKey.hex);
  });

  it("the binding survives a coordinator restart on the same database", async () => {
    const database = await sharedDatabase();
    const machineId = "machine-restart";
    const realKey = newKey();
    const first = await coordinator({}, { database });
    const real = await provider(first, realKey, { machineId });
    await eventually(first, real, attested);
    await real.stop();
    await first.close();
    coordinators.splice(coordinators.indexOf(first), 1);

    const second = await coordinator({}, { database });
    const squat = await refusal(provider(second, newKey(), { machineId }));
    expect(squat.code).toBe(Code.PermissionDenied);
    expect(squat.rawMessage).toMatch(
      /^machine_id machine-restart is bound to another attestation signing key/,
    );
    const back = await provider(second, realKey, { machineId });
    await eventually(second, back, attested);
    expect((await chat(second)).providerId).toBe(back.providerId);
  });

  it("of racing first registrations with different keys, exactly one binds the machine id", async () => {
    const c = await coordinator();
    const machineId = "machine-raced";
    const keys = Array.from({ length: 6 }, newKey);
    const results = await Promise.allSettled(keys.map((key) => provider(c, key, { machineId })));
    const winners = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
    expect(winners).toHaveLength(1);
    for (const r of results) {
      if (r.status === "rejected") expect((r.reason as ConnectError).code).toBe(Code.PermissionDenied);
    }
    expect(await boundKeyHex(c.coordinator.databaseUrl, machineId)).toBe(keys[winners[0]!]!.hex);

    // The same race on the store itself, every claim in flight at once on its own connection.
    const pool = new pg.Pool({ connectionString: c.coordinator.databaseUrl, max: 12 });
    try {
      const store = new MachineBindingStore(pool);
      const claimers = Array.from({ length: 12 }, newKey);
      const claims = await Promise.all(claimers.map((k) => store.claim("machine-raced-store", k.publicKey)));
      const bound = claims.flatMap((claim, i) => (claim.outcome === "bound" ? [i] : []));
      expect(bound).toHaveLength(1);
      expect(claims.filter((claim) => claim.outcome === "refused")).toHaveLength(11);
      expect(await boundKeyHex(c.coordinator.databaseUrl, "machine-raced-store")).toBe(
        claimers[bound[0]!]!.hex,
      );
    } finally {
      await pool.end();
    }
  });

  it("an ephemeral key binds nothing (its machine's next key is a new one) and cannot claim a bound id", async () => {
    const c = await coordinator();
    const machineId = "machine-ephemeral";
    const before = await provider(c, newKey(), { machineId, ephemeral: true });
    await eventually(c, before, attested);
    await before.stop();
    await gone(c, before);
    expect(await boundKeyHex(c.coordinator.databaseUrl, machineId)).toBeUndefined();
    const restarted = await provider(c, newKey(), { machineId, ephemeral: true });
    await eventually(c, restarted, attested);
    await restarted.stop();
    await gone(c, restarted);

    const persistent = newKey();
    await (await provider(c, persistent, { machineId })).stop();
    expect(await boundKeyHex(c.coordinator.databaseUrl, machineId)).toBe(persistent.hex);
    const refused = await refusal(provider(c, newKey(), { machineId, ephemeral: true }));
    expect(refused.code).toBe(Code.PermissionDenied);
  });
});

describe("quarantine is per key", () => {
  it("a squatter's plaintext chunk quarantines only its own proven key, never the machine's id", async () => {
    // Trust none, as the local quick start runs: unattested providers are routed, so a squatter
    // without a key can hold a machine id nobody bound yet and misbehave under it.
    const c = await coordinator({ minTrustLevel: "none" });
    const machineId = "machine-victim";
    const keyless = await provider(c, undefined, { machineId, misbehave: { plaintextChunks: true } });
    expect((await chat(c)).status).not.toBe(200);
    await gone(c, keyless);

    // A squatter with its own key, under its own id (the machine's is not its to take), proves the key
    // and then sends a plaintext chunk: that key is quarantined, under any machine id.
    const squatKey = newKey();
    const squatter = await provider(c, squatKey, {
      machineId: "machine-squatter",
      misbehave: { plaintextChunks: true },
    });
    await eventually(c, squatter, attested);
    expect((await chat(c)).status).not.toBe(200);
    await gone(c, squatter);
    const again = await provider(c, squatKey, { machineId: "machine-squatter" });
    expect(codes(await eventually(c, again, (a) => !a.routable))).toContain("chunk_not_sealed");
    await again.stop();
    const renamed = await provider(c, squatKey, { machineId: "machine-squatter-2" });
    expect(codes(await eventually(c, renamed, (a) => !a.routable))).toContain("chunk_not_sealed");
    await renamed.stop();

    // The real machine: its id was never quarantined; it binds it, attests and serves.
    const realKey = newKey();
    const real = await provider(c, realKey, { machineId });
    const judged = await eventually(c, real, (a) => a.attested);
    expect(judged).toMatchObject({ routable: true, trust_level: "self_signed", reasons: [] });
    expect(await chat(c)).toEqual({ status: 200, providerId: real.providerId });
    expect(await boundKeyHex(c.coordinator.databaseUrl, machineId)).toBe(realKey.hex);
  });
});

describe("a key's quarantine holds on every coordinator sharing the database", () => {
  let home: string;
  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "darkbloom-quarantine-cli-"));
  });
  afterAll(async () => {
    await rm(home, { recursive: true, force: true });
  });
  const cli = (c: TestCoordinator, argv: string[]) =>
    runCliCaptured(["admin", "machines", ...argv, "--url", c.url, "--admin-key", TEST_ADMIN_KEY], {
      HOME: home,
      USER: "ops",
    });

  it("a key caught lying about token counts on one replica is quarantined on the other until an administrator lifts it", async () => {
    const database = await sharedDatabase();
    const a = await coordinator({}, { database });
    const b = await coordinator({}, { database });
    const machineId = "machine-liar";
    const key = newKey();
    const liar = await provider(a, key, {
      machineId,
      script: () => ({ tokens: ["a ", "b ", "c "], completionTokens: 500 }),
    });
    await eventually(a, liar, attested);
    const cut = new Promise((resolve) => liar.once("disconnected", resolve));
    expect((await chat(a)).status).not.toBe(200);
    // Its stream ends once the quarantine is stored: reconnecting at once, anywhere, finds it.
    await cut;

    // It reconnects to the other replica: untrusted and not routed there too.
    const moved = await provider(b, key, { machineId });
    const judged = await eventually(b, moved, (x) => !x.routable && x.trust_level === "none");
    expect(codes(judged)).toContain("usage_mismatch");
    const show = await cli(b, ["show", machineId]);
    expect(show.stderr).toBe("");
    expect(show.stdout).toMatch(
      /quarantined\s+until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(usage_mismatch: .+\)\n/,
    );
    const json = JSON.parse((await cli(b, ["show", machineId, "--json"])).stdout);
    expect(json.quarantine).toMatchObject({
      public_key: Buffer.from(key.publicKey).toString("base64"),
      code: "usage_mismatch",
    });
    await moved.stop();
    await gone(b, moved);

    // Lifting needs a reason; it is audited; the key is trusted again on every replica.
    const bare = await cli(b, ["lift-quarantine", key.hex]);
    expect(bare.code).toBe(64);
    const lifted = await cli(b, ["lift-quarantine", key.hex, "--reason", "the meter was wrong"]);
    expect(lifted.stderr).toBe("");
    expect(lifted.code).toBe(0);
    expect(lifted.stdout).toMatch(/lifted\s+usage_mismatch: /);
    expect(lifted.stdout).toMatch(/actor\s+ops\n/);
    expect((await cli(a, ["show", machineId])).stdout).toMatch(/quarantined\s+no\n/);
    const again = await cli(a, ["lift-quarantine", key.hex, "--reason", "again"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/no quarantine holds for this signing key/);
    const client = new pg.Client({ connectionString: database });
    await client.connect();
    const { rows } = await client
      .query("SELECT code, reason, actor FROM key_quarantine_lifts")
      .finally(() => client.end());
    expect(rows).toEqual([{ code: "usage_mismatch", reason: "the meter was wrong", actor: "ops" }]);
    const back = await provider(a, key, { machineId });
    await eventually(a, back, attested);
    expect(await chat(a)).toEqual({ status: 200, providerId: back.providerId });
  });
});

describe("re-binding is an administrator's audited action", () => {
  let home: string;
  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "darkbloom-machines-cli-"));
  });
  afterAll(async () => {
    await rm(home, { recursive: true, force: true });
  });
  const cli = (c: TestCoordinator, argv: string[]) =>
    runCliCaptured(["admin", "machines", ...argv, "--url", c.url, "--admin-key", TEST_ADMIN_KEY], {
      HOME: home,
      USER: "ops",
    });

  it("admin machines rebind moves the binding, writes the audit row, and shuts the old key out", async () => {
    const c = await coordinator();
    const machineId = "machine-rekeyed";
    const oldKey = newKey();
    const newer = newKey();
    const old = await provider(c, oldKey, { machineId });
    await eventually(c, old, attested);
    const ended = new Promise<unknown>((resolve) => old.once("disconnected", (d) => resolve(d.error)));

    // Bad input: one line, exit 64; nothing changes.
    for (const argv of [
      ["rebind", machineId, "--public-key", newer.hex],
      ["rebind", machineId, "--public-key", newer.hex, "--reason", "  "],
      ["rebind", machineId, "--public-key", `05${newer.hex.slice(2)}`, "--reason", "x"],
      ["rebind", machineId, "--public-key", "zz", "--reason", "x"],
    ]) {
      const run = await cli(c, argv);
      expect(run.code, argv.join(" ")).toBe(64);
      expect(run.stderr).toMatch(/^darkbloom-coordinator: .+\n$/);
    }
    expect(await boundKeyHex(c.coordinator.databaseUrl, machineId)).toBe(oldKey.hex);

    const run = await cli(c, [
      "rebind",
      machineId,
      "--public-key",
      Buffer.from(newer.publicKey).toString("base64"),
      "--reason",
      "disk replaced, new software key",
      "--json",
    ]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const b64 = (k: TestKey) => Buffer.from(k.publicKey).toString("base64");
    expect(JSON.parse(run.stdout)).toMatchObject({
      binding: { machine_id: machineId, public_key: b64(newer) },
      rebind: {
        machine_id: machineId,
        old_public_key: b64(oldKey),
        new_public_key: b64(newer),
        reason: "disk replaced, new software key",
        actor: "ops",
      },
      disconnected_sessions: 1,
    });

    // The old key's session was ended with PermissionDenied, and it is not served any more.
    const error = (await ended) as ConnectError;
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.rawMessage).toMatch(/re-bound to another attestation signing key by an administrator/);
    await gone(c, old);

    // The audit row, written with the binding.
    const client = new pg.Client({ connectionString: c.coordinator.databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query(
        "SELECT machine_id, old_public_key, new_public_key, reason, actor FROM machine_rebinds",
      );
      expect(rows).toEqual([
        {
          machine_id: machineId,
          old_public_key: Buffer.from(oldKey.publicKey),
          new_public_key: Buffer.from(newer.publicKey),
          reason: "disk replaced, new software key",
          actor: "ops",
        },
      ]);
    } finally {
      await client.end();
    }
    const show = await cli(c, ["show", machineId]);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain(`public key      ${newer.hex}`);
    expect(show.stdout).toMatch(/ops\s+[0-9a-f]{12}…\s+[0-9a-f]{12}…\s+disk replaced, new software key/);

    // From then on the old key is refused, and the new one is the machine.
    const refused = await refusal(provider(c, oldKey, { machineId }));
    expect(refused.code).toBe(Code.PermissionDenied);
    const renewed = await provider(c, newer, { machineId });
    await eventually(c, renewed, attested);
    expect((await chat(c)).providerId).toBe(renewed.providerId);

    // Re-binding to the key it has is refused (exit 1), an unknown machine id is not found.
    const same = await cli(c, ["rebind", machineId, "--public-key", newer.hex, "--reason", "again"]);
    expect(same).toMatchObject({ code: 1, stdout: "" });
    expect(same.stderr).toMatch(/is bound to this key already/);
    const unknown = await cli(c, ["show", "machine-nobody"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/machine_id machine-nobody is not bound to any key/);
  });

  it("a machine that reconnects to another replica with its key ends its session here; a squatter there is refused", async () => {
    const database = await sharedDatabase();
    const a = await coordinator({}, { database });
    const b = await coordinator({}, { database });
    const machineId = "machine-moving";
    const key = newKey();
    const old = await provider(b, key, { machineId });
    await eventually(b, old, attested);
    // Another key for the same machine id is refused on A too: the binding is in the database.
    const squat = await refusal(provider(a, newKey(), { machineId }));
    expect(squat.code).toBe(Code.PermissionDenied);
    // The machine itself (its key) on A: once attested there, B's older session ends.
    const moved = await provider(a, key, { machineId });
    await eventually(a, moved, attested);
    await gone(b, old);
    expect(a.coordinator.sessions.get(moved.providerId ?? "")).toBeDefined();
  });

  it("a re-bind through one coordinator disconnects the old key's session on another", async () => {
    const database = await sharedDatabase();
    const a = await coordinator({ releasePolicyRefreshMs: 100 }, { database });
    const b = await coordinator({ releasePolicyRefreshMs: 100 }, { database });
    const machineId = "machine-replicated";
    const oldKey = newKey();
    const old = await provider(b, oldKey, { machineId });
    await eventually(b, old, attested);
    const run = await cli(a, ["rebind", machineId, "--public-key", newKey().hex, "--reason", "stolen key"]);
    expect(run.stderr).toBe("");
    expect(run.stdout).toContain("0 session(s) of the previous key here");
    await gone(b, old);
  });
});

describe("RebindMachine", () => {
  const client = (c: TestCoordinator) => adminClient(c.url);
  const failure = (call: Promise<unknown>) =>
    call.then(
      () => undefined,
      (e: ConnectError) => ({ code: e.code, message: e.rawMessage }),
    );

  it("binds a machine id ahead of its first registration, keeps every re-bind, and refuses bad input", async () => {
    const c = await coordinator();
    const admin = client(c);
    const machineId = "machine-prebound";
    const first = newKey();
    const second = newKey();
    expect(await failure(admin.getMachineBinding({ machineId }))).toEqual({
      code: Code.NotFound,
      message: "machine_id machine-prebound is not bound to any key",
    });

    const bound = await admin.rebindMachine({
      machineId,
      publicKey: first.publicKey,
      reason: "enrolled before shipping",
      actor: "ops",
    });
    expect(bound.rebind?.oldPublicKey).toEqual(new Uint8Array());
    expect(bound.disconnectedSessions).toBe(0);
    // Nobody else's key can take the pre-bound id first, not even the first to register.
    expect((await refusal(provider(c, second, { machineId }))).code).toBe(Code.PermissionDenied);
    const machine = await provider(c, first, { machineId });
    await eventually(c, machine, attested);

    await admin.rebindMachine({ machineId, publicKey: second.publicKey, reason: "new disk", actor: "ops-2" });
    const { binding, rebinds } = await admin.getMachineBinding({ machineId });
    expect(Buffer.from(binding!.publicKey).toString("hex")).toBe(second.hex);
    expect(rebinds.map((r) => [r.actor, r.reason])).toEqual([
      ["ops-2", "new disk"],
      ["ops", "enrolled before shipping"],
    ]);
    expect(Buffer.from(rebinds[0]!.oldPublicKey).toString("hex")).toBe(first.hex);
    await gone(c, machine);

    const offCurve = new Uint8Array(65);
    offCurve[0] = 4;
    for (const [request, message] of [
      [{ machineId, publicKey: offCurve }, /public_key must be a SEC1 uncompressed P-256 point on the curve/],
      [{ machineId, publicKey: first.publicKey.subarray(0, 33) }, /got 33 bytes/],
      [{ machineId: "", publicKey: first.publicKey }, /^machine_id is required$/],
      [{ machineId, publicKey: first.publicKey, reason: "  " }, /^reason is required$/],
      [{ machineId, publicKey: first.publicKey, actor: "" }, /^actor is required$/],
    ] as const) {
      const call = admin.rebindMachine({ reason: "r", actor: "a", ...request });
      expect(await failure(call)).toEqual({
        code: Code.InvalidArgument,
        message: expect.stringMatching(message),
      });
    }
    expect((await admin.getMachineBinding({ machineId })).rebinds).toHaveLength(2);
  });
});

describe("database outage", () => {
  it("a registration that cannot be checked against the bindings is refused with Unavailable", async () => {
    const server = await startTestPostgres();
    let stopped = false;
    cleanups.push(async () => {
      if (!stopped) await server.stop();
    });
    const c = await startTestCoordinator(server.url, { ...TRUST, billingEnabled: false });
    try {
      const key = newKey();
      const first = await provider(c, key, { machineId: "machine-outage" });
      await first.stop();
      stopped = true;
      await server.stop();
      const attempts = [
        () => provider(c, key, { machineId: "machine-outage" }),
        () => provider(c, undefined),
      ];
      for (const attempt of attempts) {
        const error = await refusal(attempt());
        expect(error.code).toBe(Code.Unavailable);
        expect(error.rawMessage).toMatch(/cannot check the binding of machine_id .+ database is unavailable/);
      }
      expect(c.coordinator.sessions.size).toBe(0);
    } finally {
      await c.coordinator.close({ drainMs: 0 });
    }
  });
});
