import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { migrationLabel } from "../store/migrate.js";
import { migrations } from "../store/migrations/index.js";
import { type AdminTestServer, startAdminTestServer } from "../testing/admin-test-server.js";
import { type CliRun, runCliCaptured } from "../testing/test-cli.js";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "../testing/test-database.js";
import { adminKeyFile } from "./serve.js";

type Run = CliRun;

let home: string;

function cli(argv: string[], env: Record<string, string> = {}): Promise<Run> {
  return runCliCaptured(argv, { HOME: home, ...env });
}

function expectUsageError(run: Run, message: RegExp): void {
  expect(run.code).toBe(64);
  expect(run.stdout).toBe("");
  expect(run.stderr).toMatch(/^darkbloom-coordinator: [^\n]+\n$/);
  expect(run.stderr).toMatch(message);
}

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-cli-home-"));
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

describe("bad input", () => {
  const target = ["--url", "http://127.0.0.1:9", "--admin-key", "k"];

  it("exits 64 with one line for malformed values", async () => {
    expectUsageError(await cli(["admin", "credits", "add", "acct_x", "12.5", ...target]), /amount-micro-usd/);
    expectUsageError(
      await cli(["admin", "credits", "add", "acct_x", "-3", ...target]),
      /darkbloom-coordinator: /,
    );
    expectUsageError(await cli(["admin", "credits", "add", "acct_x", "0", ...target]), /greater than 0/);
    expectUsageError(
      await cli(["admin", "accounts", "create", "--name", "a", "--credit-micro-usd", "1e6", ...target]),
      /--credit-micro-usd.*whole number of micro-USD/,
    );
    expectUsageError(
      await cli(["admin", "models", "set", "m", "--input-price", "x", "--output-price", "1", ...target]),
      /--input-price/,
    );
    expectUsageError(
      await cli([
        "admin",
        "models",
        "set",
        "m",
        "--input-price",
        "1",
        "--output-price",
        "1",
        "--embedding-min-dimensions",
        "0",
        ...target,
      ]),
      /--embedding-min-dimensions.*positive integer/,
    );
    expectUsageError(
      await cli(["admin", "accounts", "list", "--url", "not a url", "--admin-key", "k"]),
      /http/,
    );
    expectUsageError(
      await cli(["admin", "accounts", "list", "--url", "ftp://host/", "--admin-key", "k"]),
      /http/,
    );
    expectUsageError(await cli(["serve", "--port", "70000"]), /--port.*0 to 65535/);
    expectUsageError(await cli(["serve", "--log-level", "loud"]), /--log-level/);
    expectUsageError(await cli(["serve", "--database-url", "mysql://x/y"]), /postgres:\/\//);
    expectUsageError(
      await cli(["serve", "--min-trust", "high"]),
      /--min-trust.*none, self_signed, tpm, hardware/,
    );
    expectUsageError(
      await cli(["serve", "--min-provider-version", "v1"]),
      /--min-provider-version.*semantic/,
    );
    expectUsageError(await cli(["serve", "--hardware-key", "04ab"]), /--hardware-key.*130 hex digits/);
    expectUsageError(await cli(["serve", "--tpm-pcr-allow", "abc"]), /--tpm-pcr-allow.*64 hex digits/);
    expectUsageError(
      await cli(["serve", "--tpm-ek-ca", "/nonexistent/ek-ca.pem"]),
      /^darkbloom-coordinator: --tpm-ek-ca \/nonexistent\/ek-ca.pem: ENOENT\n$/,
    );
    expectUsageError(
      await cli(["serve"], { DARKBLOOM_TPM_EK_CA: "/etc/hostname" }),
      /--tpm-ek-ca \/etc\/hostname: .*certificate/,
    );
    expectUsageError(
      await cli(["serve"], { DARKBLOOM_MIN_TRUST: "all" }),
      /environment variable DARKBLOOM_MIN_TRUST is invalid/,
    );
    expectUsageError(
      await cli(["serve"], { PORT: "eighty" }),
      /environment variable PORT is invalid: expected a port/,
    );
    expectUsageError(
      await cli(["admin", "accounts", "list", "--admin-key", "k"], { DARKBLOOM_URL: "nope" }),
      /DARKBLOOM_URL/,
    );
  });

  it("exits 64 with one line for missing arguments, unknown flags and unknown commands", async () => {
    expectUsageError(
      await cli(["admin", "keys", "create", ...target]),
      /missing required argument 'account-id'/,
    );
    expectUsageError(
      await cli(["admin", "accounts", "create", ...target]),
      /required option '--name <name>'/,
    );
    expectUsageError(
      await cli(["admin", "accounts", "list", "--bogus", ...target]),
      /unknown option '--bogus'/,
    );
    expectUsageError(await cli(["admin", "accounts", "get", "a", "b", ...target]), /too many arguments/);
    expectUsageError(
      await cli(["admin"]),
      /admin: missing command \(expected one of: accounts, keys, credits/,
    );
    expectUsageError(await cli(["admin", "acounts"]), /admin: unknown command 'acounts'/);
    expectUsageError(await cli(["admin", "accounts"]), /admin accounts: missing command/);
    expectUsageError(
      await cli(["frobnicate"]),
      /unknown command 'frobnicate' \(expected one of: serve, migrate, admin\)/,
    );
    expectUsageError(await cli([]), /missing command/);
    expectUsageError(
      await cli(["admin", "releases", "create", "--version", "1.0.0", ...target]),
      /required option '--platform <platform>'/,
    );
  });

  it("exits 64 when no admin key can be found", async () => {
    expectUsageError(await cli(["admin", "accounts", "list", "--url", "http://127.0.0.1:9"]), /no admin key/);
  });

  it("prints help and the version on stdout with status 0", async () => {
    const help = await cli(["admin", "credits", "add", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--idempotency-key <key>/);
    expect(help.stderr).toBe("");
    const version = await cli(["--version"]);
    expect([version.code, version.stdout]).toEqual([0, "0.1.0\n"]);
  });
});

describe("against a coordinator", () => {
  let server: TestPostgres;
  let db: TestDatabase;
  let admin: AdminTestServer;
  let target: string[];

  beforeAll(async () => {
    server = await startTestPostgres();
  });
  afterAll(async () => {
    await server?.stop();
  });
  beforeEach(async () => {
    db = await createTestDatabase(server.url);
    admin = await startAdminTestServer(db.pool, { adminKey: "cli-admin-key" });
    target = ["--url", admin.url, "--admin-key", admin.adminKey];
  });
  afterEach(async () => {
    await admin?.close();
    await db?.drop();
  });

  it("creates an account with credit and prints its key as JSON", async () => {
    const run = await cli([
      "admin",
      "accounts",
      "create",
      "--name",
      "Ada",
      "--credit-micro-usd",
      "2500000",
      "--json",
      ...target,
    ]);
    expect(run).toMatchObject({ code: 0, stderr: "" });
    const created = JSON.parse(run.stdout);
    expect(created).toEqual({
      account_id: expect.stringMatching(/^acct_/),
      api_key_id: expect.any(String),
      api_key: expect.stringMatching(/^dbk_/),
    });
    expect(await admin.accounts.authenticateApiKey(created.api_key)).toEqual({
      accountId: created.account_id,
      keyId: created.api_key_id,
    });

    const got = await cli(["admin", "accounts", "get", created.account_id, "--json", ...target]);
    expect(JSON.parse(got.stdout)).toMatchObject({
      id: created.account_id,
      name: "Ada",
      balance_micro_usd: "2500000",
      disabled: false,
    });
    const text = await cli(["admin", "accounts", "get", created.account_id, ...target]);
    expect(text.stdout).toMatch(/balance\s+\$2\.500000 \(2500000 micro-USD\)/);
  });

  it("takes the connection options before or after the admin subcommand; the nearer one wins", async () => {
    const unreachable = ["--url", "http://127.0.0.1:9", "--admin-key", "wrong"];
    for (const argv of [
      ["admin", ...target, "accounts", "create", "--name", "Before", "--json"],
      ["admin", "accounts", ...target, "create", "--name", "Between", "--json"],
      [
        "admin",
        "--json",
        "accounts",
        "create",
        "--name",
        "Split",
        "--url",
        admin.url,
        "--admin-key",
        admin.adminKey,
      ],
      ["admin", ...unreachable, "accounts", "create", "--name", "Nearer", "--json", ...target],
    ]) {
      const run = await cli(argv);
      expect(run, argv.join(" ")).toMatchObject({ code: 0, stderr: "" });
      expect(JSON.parse(run.stdout).api_key).toMatch(/^dbk_/);
    }
    const { accounts } = await admin.accounts.listAccounts({ pageSize: 10 });
    expect(accounts.map((a) => a.name).sort()).toEqual(["Before", "Between", "Nearer", "Split"]);
    expectUsageError(await cli(["admin", "--url", "ftp://host/", "accounts", "list"]), /--url.*http/);
  });

  it("credits idempotently and reads the target from the environment", async () => {
    const { account } = await admin.accounts.createAccount({ name: "Ada" });
    const env = { DARKBLOOM_URL: admin.url, DARKBLOOM_ADMIN_KEY: admin.adminKey };
    const add = [
      "admin",
      "credits",
      "add",
      account.id,
      "1000000",
      "--idempotency-key",
      "grant-1",
      "--note",
      "hello",
    ];
    const first = await cli(add, env);
    expect(first).toMatchObject({ code: 0, stderr: "" });
    expect(first.stdout).toBe(
      `credited $1.000000 to ${account.id}: balance $1.000000 (idempotency key grant-1)\n`,
    );
    const second = await cli([...add, "--json"], env);
    expect(JSON.parse(second.stdout)).toMatchObject({
      applied: false,
      idempotency_key: "grant-1",
      account: { balance_micro_usd: "1000000" },
    });
  });

  it("reports server-side errors as one line with the code, exit 1", async () => {
    const missing = await cli(["admin", "accounts", "get", "acct_nope", ...target]);
    expect(missing).toEqual({
      code: 1,
      stdout: "",
      stderr: "darkbloom-coordinator: [not_found] account acct_nope does not exist\n",
    });
    const wrongKey = await cli(["admin", "models", "list", "--url", admin.url, "--admin-key", "wrong"]);
    expect(wrongKey).toEqual({
      code: 1,
      stdout: "",
      stderr: "darkbloom-coordinator: [unauthenticated] invalid admin key\n",
    });
  });

  it("manages models, keys and releases with readable output", async () => {
    const set = await cli([
      "admin",
      "models",
      "set",
      "qwen3-0.6b",
      "--input-price",
      "100000",
      "--output-price",
      "300000",
      "--display-name",
      "Qwen3 0.6B",
      ...target,
    ]);
    expect(set.stdout).toBe("qwen3-0.6b: input $0.100000 and output $0.300000 per million tokens, enabled\n");
    await cli([
      "admin",
      "models",
      "set",
      "qwen3-0.6b",
      "--input-price",
      "100000",
      "--output-price",
      "300000",
      "--embedding-min-dimensions",
      "32",
      ...target,
    ]);
    // Changing prices keeps the display name and the dimensions; --disabled disables.
    await cli([
      "admin",
      "models",
      "set",
      "qwen3-0.6b",
      "--input-price",
      "1",
      "--output-price",
      "2",
      "--disabled",
      ...target,
    ]);
    const models = JSON.parse((await cli(["admin", "models", "list", "--json", ...target])).stdout);
    expect(models.models).toEqual([
      expect.objectContaining({
        id: "qwen3-0.6b",
        display_name: "Qwen3 0.6B",
        input_micro_usd_per_million: "1",
        enabled: false,
        embedding_min_dimensions: 32,
      }),
    ]);
    const listed = await cli(["admin", "models", "list", ...target]);
    expect(listed.stdout.split("\n")[0]).toMatch(
      /^ID\s+NAME\s+OWNED BY\s+INPUT\/1M\s+OUTPUT\/1M\s+ENABLED\s+USAGE$/,
    );

    const { account, apiKey } = await admin.accounts.createAccount({ name: "Ada" });
    const revoke = await cli(["admin", "keys", "revoke", apiKey.id, ...target]);
    expect(revoke.stdout).toMatch(new RegExp(`^revoked ${apiKey.id} \\(dbk_`));
    const keys = await cli(["admin", "keys", "list", account.id, "--json", ...target]);
    expect(JSON.parse(keys.stdout).api_keys[0].revoked_at).toEqual(expect.any(String));

    const release = [
      "--version",
      "0.5.1",
      "--platform",
      "linux-x64",
      "--binary-sha256",
      "a".repeat(64),
      "--bundle-sha256",
      "b".repeat(64),
      "--bundle-url",
      "https://example.com/d.tgz",
    ];
    const created = await cli(["admin", "releases", "create", ...release, ...target]);
    expect(created).toMatchObject({
      code: 0,
      stdout: "registered 0.5.1 for linux-x64 (active, binary aaaaaaaaaaaa…)\n",
    });
    const duplicate = await cli(["admin", "releases", "create", ...release, ...target]);
    expect(duplicate).toMatchObject({
      code: 1,
      stderr: "darkbloom-coordinator: [already_exists] release 0.5.1 for linux-x64 already exists\n",
    });
    const off = await cli(["admin", "releases", "deactivate", "0.5.1", "linux-x64", ...target]);
    expect(off.stdout).toMatch(/^deactivated 0\.5\.1 for linux-x64 \(inactive/);
    expect(await admin.releases.activeBinaryHashes()).toEqual(new Set());

    const providers = await cli(["admin", "providers", "list", ...target]);
    expect(providers.stdout).toBe("(none)\n");
    const drain = await cli(["admin", "providers", "drain", "prov_x", ...target]);
    expect(drain.stderr).toBe("darkbloom-coordinator: [not_found] provider prov_x is not connected\n");
  });

  it("names the URL and exits 69 when the coordinator cannot be reached", async () => {
    const url = admin.url;
    await admin.close();
    const run = await cli(["admin", "accounts", "list", "--url", url, "--admin-key", "k"]);
    expect(run.code).toBe(69);
    expect(run.stderr).toMatch(
      new RegExp(`^darkbloom-coordinator: cannot reach the coordinator at ${url}: .*ECONNREFUSED.*\\n$`),
    );
  });
});

describe("migrate", () => {
  let server: TestPostgres;
  beforeAll(async () => {
    server = await startTestPostgres();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("applies the migrations once and then reports the schema current", async () => {
    const url = new URL(server.url);
    url.pathname = "/postgres";
    const first = await cli(["migrate", "--database-url", url.toString()]);
    const labels = migrations.map((m) => `applied ${migrationLabel(m)}\n`).join("");
    expect(first).toEqual({ code: 0, stdout: labels, stderr: "" });
    const second = await cli(["migrate", "--json"], { DATABASE_URL: url.toString() });
    // The newest version, not the count: versions may have gaps (see store/migrate.ts).
    expect(JSON.parse(second.stdout)).toEqual({ applied: [], version: migrations.at(-1)?.version });
  });

  it("fails with one line when the database cannot be reached", async () => {
    const run = await cli(["migrate", "--database-url", "postgres://nobody:secret@127.0.0.1:1/x"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /^darkbloom-coordinator: cannot connect to PostgreSQL at postgres:\/\/nobody:\*\*\*@127\.0\.0\.1:1\/x/,
    );
    expect(run.stderr).not.toContain("secret");
  });
});

describe("the admin key file", () => {
  it("is generated once with mode 0600 and reused", async () => {
    const dataDir = join(home, "data");
    const key = await adminKeyFile(dataDir);
    expect(key).toMatch(/^dbadm_[A-Za-z0-9_-]{43}$/);
    expect((await stat(join(dataDir, "admin.key"))).mode & 0o777).toBe(0o600);
    expect(await adminKeyFile(dataDir)).toBe(key);
  });

  it("is what admin commands use when no key is given", async () => {
    const dataDir = join(home, "keyed");
    await adminKeyFile(dataDir);
    await writeFile(join(dataDir, "admin.key"), "from-file\n");
    const run = await cli(["admin", "accounts", "list", "--url", "http://127.0.0.1:1"], {
      DARKBLOOM_DATA_DIR: dataDir,
    });
    expect(run.code).toBe(69); // got past the key lookup to the (absent) server
  });
});
