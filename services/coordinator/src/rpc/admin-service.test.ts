import { create, toJsonString } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  AdminService,
  CatalogModelSchema,
  ListApiKeysResponseSchema,
  ReleaseSchema,
} from "@darkbloom/protocol/admin/v1";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type AdminTestServer, startAdminTestServer } from "../testing/admin-test-server.js";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "../testing/test-database.js";
import type { ProviderDirectory, ProviderSummaryInit } from "./provider-directory.js";

let server: TestPostgres;
let db: TestDatabase;
let admin: AdminTestServer;
let client: Client<typeof AdminService>;
const drained: Array<[string, string]> = [];

const connected: ProviderSummaryInit[] = [
  {
    providerId: "prov_a",
    models: ["qwen3-0.6b"],
    trustLevel: "self_signed",
    state: "idle",
    maxBatch: 8,
    chip: "M3 Max",
  },
  {
    providerId: "prov_b",
    models: ["llama-3.2-1b"],
    trustLevel: "none",
    state: "serving",
    busySlots: 2,
    maxBatch: 4,
  },
];
const operations: Array<[string, string, string]> = [];
const directory: ProviderDirectory = {
  list: (model) => connected.filter((p) => model === undefined || p.models?.includes(model)),
  drain: async (providerId, reason) => {
    if (!connected.some((p) => p.providerId === providerId)) return false;
    drained.push([providerId, reason]);
    return true;
  },
  modelOperation: async (providerId, modelId, kind) => {
    const provider = connected.find((p) => p.providerId === providerId);
    if (!provider) return undefined;
    operations.push([providerId, modelId, kind]);
    return provider.models?.includes(modelId)
      ? { succeeded: true, reason: "" }
      : { succeeded: false, reason: `model ${JSON.stringify(modelId)} is not served by this provider` };
  },
};

function clientWith(headers: Record<string, string>): Client<typeof AdminService> {
  const transport = createConnectTransport({
    baseUrl: admin.url,
    httpVersion: "1.1",
    interceptors: [
      (next) => (request) => {
        for (const [name, value] of Object.entries(headers)) request.header.set(name, value);
        return next(request);
      },
    ],
  });
  return createClient(AdminService, transport);
}

async function connectError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("the call succeeded");
}

beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  db = await createTestDatabase(server.url);
  admin = await startAdminTestServer(db.pool, { adminKey: "s3cret-admin", providers: directory });
  client = clientWith({ authorization: "Bearer s3cret-admin" });
  drained.length = 0;
});
afterEach(async () => {
  await admin?.close();
  await db?.drop();
});

describe("AdminService authentication", () => {
  it("refuses calls without the admin key or with a wrong one", async () => {
    const headerSets: Array<Record<string, string>> = [
      {},
      { authorization: "Bearer wrong" },
      { authorization: "s3cret-admin" },
      { authorization: "Basic s3cret-admin" },
    ];
    for (const headers of headerSets) {
      const anonymous = clientWith(headers);
      for (const call of [
        () => anonymous.listAccounts({}),
        () => anonymous.createAccount({ name: "x" }),
        () => anonymous.listModels({}),
        () => anonymous.listProviders({}),
        () => anonymous.drainProvider({ providerId: "prov_a" }),
      ]) {
        const error = await connectError(call());
        expect(error.code).toBe(Code.Unauthenticated);
      }
    }
    expect((await connectError(clientWith({}).listAccounts({}))).rawMessage).toMatch(/admin key required/);
    expect(
      (await connectError(clientWith({ authorization: "Bearer nope" }).listAccounts({}))).rawMessage,
    ).toBe("invalid admin key");
    expect(drained).toEqual([]);
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM accounts");
    expect(rows[0].n).toBe(0);
  });

  it("refuses to start without an admin key", async () => {
    await expect(startAdminTestServer(db.pool, { adminKey: " " })).rejects.toThrow(/non-empty admin key/);
  });
});

describe("AdminService accounts and keys", () => {
  it("creates an account with credit, shows the key once, and revokes it", async () => {
    const created = await client.createAccount({ name: "Ada", initialCreditMicroUsd: 3_000_000n });
    expect(created.account).toMatchObject({ name: "Ada", balanceMicroUsd: 3_000_000n, disabled: false });
    expect(created.apiKeySecret).toMatch(/^dbk_/);
    expect(created.apiKey?.prefix).toBe(created.apiKeySecret.slice(0, 12));
    const accountId = created.account!.id;

    const fetched = await client.getAccount({ accountId });
    expect(fetched.account).toEqual(created.account);
    const second = await client.createApiKey({ accountId, name: "ci" });
    const keys = await client.listApiKeys({ accountId });
    expect(keys.apiKeys.map((key) => key.id)).toEqual([second.apiKey!.id, created.apiKey!.id]);
    const listedJson = toJsonString(ListApiKeysResponseSchema, keys);
    for (const secret of [created.apiKeySecret, second.apiKeySecret])
      expect(listedJson).not.toContain(secret);

    const revoked = await client.revokeApiKey({ apiKeyId: created.apiKey!.id });
    expect(revoked.apiKey?.revokedAt).toBeDefined();
    expect(admin.keyChanges()).toBe(1);
    expect(await admin.accounts.authenticateApiKey(created.apiKeySecret)).toBeNull();
    expect(await admin.accounts.authenticateApiKey(second.apiKeySecret)).not.toBeNull();

    const listed = await client.listAccounts({ pageSize: 10 });
    expect(listed.accounts.map((a) => a.id)).toEqual([accountId]);
    expect(listed.nextPageToken).toBe("");
  });

  it("credits once per idempotency key", async () => {
    const { account } = await client.createAccount({ name: "Ada" });
    const request = {
      accountId: account!.id,
      amountMicroUsd: 500n,
      idempotencyKey: "grant-7",
      note: "grant",
    };
    const first = await client.creditAccount(request);
    const again = await client.creditAccount(request);
    expect([first.applied, again.applied]).toEqual([true, false]);
    expect(again.account?.balanceMicroUsd).toBe(500n);
  });

  it("maps errors to specific codes and messages", async () => {
    const { account } = await client.createAccount({ name: "Ada" });
    const accountId = account!.id;
    await client.creditAccount({ accountId, amountMicroUsd: 5n, idempotencyKey: "k" });
    const cases: Array<[() => Promise<unknown>, Code, RegExp]> = [
      [
        () => client.getAccount({ accountId: "acct_missing" }),
        Code.NotFound,
        /account acct_missing does not exist/,
      ],
      [() => client.getAccount({ accountId: "" }), Code.InvalidArgument, /account_id is required/],
      [() => client.createAccount({ name: "" }), Code.InvalidArgument, /name is required/],
      [
        () => client.createAccount({ name: "x", initialCreditMicroUsd: -1n }),
        Code.InvalidArgument,
        /initial_credit_micro_usd/,
      ],
      [
        () => client.createApiKey({ accountId: "acct_missing" }),
        Code.NotFound,
        /account acct_missing does not exist/,
      ],
      [() => client.listApiKeys({ accountId: "acct_missing" }), Code.NotFound, /acct_missing/],
      [
        () => client.revokeApiKey({ apiKeyId: "key_missing" }),
        Code.NotFound,
        /API key key_missing does not exist/,
      ],
      [
        () => client.creditAccount({ accountId, amountMicroUsd: 0n, idempotencyKey: "z" }),
        Code.InvalidArgument,
        /amount_micro_usd/,
      ],
      [
        () => client.creditAccount({ accountId, amountMicroUsd: 1n }),
        Code.InvalidArgument,
        /idempotency_key/,
      ],
      [
        () => client.creditAccount({ accountId, amountMicroUsd: 6n, idempotencyKey: "k" }),
        Code.AlreadyExists,
        /"k" was already used/,
      ],
      [
        () => client.creditAccount({ accountId: "acct_gone", amountMicroUsd: 1n, idempotencyKey: "g" }),
        Code.NotFound,
        /acct_gone/,
      ],
      [() => client.listAccounts({ pageToken: "bogus" }), Code.InvalidArgument, /page_token is malformed/],
    ];
    for (const [call, code, message] of cases) {
      const error = await connectError(call());
      expect({ code: Code[error.code], message: error.rawMessage }).toMatchObject({ code: Code[code] });
      expect(error.rawMessage).toMatch(message);
    }
  });
});

describe("AdminService catalog", () => {
  it("upserts, lists and deletes models", async () => {
    const model = create(CatalogModelSchema, {
      id: "qwen3-0.6b",
      displayName: "Qwen3 0.6B",
      ownedBy: "qwen",
      inputMicroUsdPerMillion: 100_000n,
      outputMicroUsdPerMillion: 300_000n,
      enabled: true,
      createdAt: timestampFromDate(new Date(0)), // ignored
    });
    const stored = await client.upsertModel({ model });
    expect(stored.model).toMatchObject({
      id: "qwen3-0.6b",
      outputMicroUsdPerMillion: 300_000n,
      enabled: true,
    });
    expect(Number(stored.model?.createdAt?.seconds)).toBeGreaterThan(0);
    expect(admin.catalog.get("qwen3-0.6b")?.displayName).toBe("Qwen3 0.6B");
    expect((await client.listModels({})).models.map((m) => m.id)).toEqual(["qwen3-0.6b"]);
    await client.deleteModel({ modelId: "qwen3-0.6b" });
    expect((await client.listModels({})).models).toEqual([]);

    const missing = await connectError(client.deleteModel({ modelId: "qwen3-0.6b" }));
    expect([missing.code, missing.rawMessage]).toEqual([
      Code.NotFound,
      "model qwen3-0.6b is not in the catalog",
    ]);
    const bad = await connectError(client.upsertModel({ model: { ...model, id: "bad id" } }));
    expect(bad.code).toBe(Code.InvalidArgument);
    const none = await connectError(client.upsertModel({}));
    expect([none.code, none.rawMessage]).toEqual([Code.InvalidArgument, "model is required"]);
  });
});

describe("AdminService releases", () => {
  const release = create(ReleaseSchema, {
    version: "0.5.1",
    platform: "darwin-arm64",
    binarySha256: "a".repeat(64),
    bundleSha256: "b".repeat(64),
    url: "https://example.com/darkbloom.tar.gz",
    active: true,
  });

  it("creates, lists and toggles releases", async () => {
    await client.createRelease({ release });
    const duplicate = await connectError(client.createRelease({ release }));
    expect([duplicate.code, duplicate.rawMessage]).toEqual([
      Code.AlreadyExists,
      "release 0.5.1 for darwin-arm64 already exists",
    ]);
    const off = await client.setReleaseActive({ version: "0.5.1", platform: "darwin-arm64", active: false });
    expect(off.release?.active).toBe(false);
    expect(await admin.releases.activeBinaryHashes()).toEqual(new Set());
    expect((await client.listReleases({ platform: "linux-x64" })).releases).toEqual([]);
    expect((await client.listReleases({})).releases.map((r) => r.version)).toEqual(["0.5.1"]);
    const missing = await connectError(
      client.setReleaseActive({ version: "1.0.0", platform: "linux-x64", active: true }),
    );
    expect(missing.code).toBe(Code.NotFound);
    const invalid = await connectError(
      client.createRelease({ release: { ...release, binarySha256: "XYZ" } }),
    );
    expect([invalid.code, invalid.rawMessage]).toEqual([
      Code.InvalidArgument,
      "binary_sha256 must be 64 lowercase hexadecimal characters",
    ]);
  });
});

describe("AdminService providers", () => {
  it("lists connected providers, filtered by model, and drains one", async () => {
    expect((await client.listProviders({})).providers.map((p) => p.providerId)).toEqual(["prov_a", "prov_b"]);
    const serving = await client.listProviders({ model: "qwen3-0.6b" });
    expect(serving.providers).toHaveLength(1);
    expect(serving.providers[0]).toMatchObject({ providerId: "prov_a", chip: "M3 Max", maxBatch: 8 });
    await client.drainProvider({ providerId: "prov_b", reason: "maintenance" });
    await client.drainProvider({ providerId: "prov_a" });
    expect(drained).toEqual([
      ["prov_b", "maintenance"],
      ["prov_a", "drained by an administrator"],
    ]);
    const missing = await connectError(client.drainProvider({ providerId: "prov_zzz" }));
    expect([missing.code, missing.rawMessage]).toEqual([Code.NotFound, "provider prov_zzz is not connected"]);
  });

  it("loads and unloads a provider's model, answering with the provider's refusal", async () => {
    await client.loadProviderModel({ providerId: "prov_a", modelId: "qwen3-0.6b" });
    await client.unloadProviderModel({ providerId: "prov_a", modelId: "qwen3-0.6b" });
    expect(operations).toEqual([
      ["prov_a", "qwen3-0.6b", "load"],
      ["prov_a", "qwen3-0.6b", "unload"],
    ]);
    const refused = await connectError(client.loadProviderModel({ providerId: "prov_a", modelId: "other" }));
    expect([refused.code, refused.rawMessage]).toEqual([
      Code.FailedPrecondition,
      'provider prov_a could not load other: model "other" is not served by this provider',
    ]);
    const missing = await connectError(client.unloadProviderModel({ providerId: "prov_zzz", modelId: "m" }));
    expect([missing.code, missing.rawMessage]).toEqual([Code.NotFound, "provider prov_zzz is not connected"]);
    const invalid = await connectError(client.loadProviderModel({ providerId: "prov_a", modelId: "" }));
    expect(invalid.code).toBe(Code.InvalidArgument);
  });
});
