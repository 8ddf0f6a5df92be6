import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { InviteStore } from "../accounts/invites.js";
import { ReferralStore } from "../accounts/referrals.js";
import { type AdminTestServer, startAdminTestServer } from "../testing/admin-test-server.js";
import { type CliRun, runCliCaptured } from "../testing/test-cli.js";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "../testing/test-database.js";

type Run = CliRun;

let home: string;
let server: TestPostgres;
let db: TestDatabase;
let admin: AdminTestServer;
let target: string[];

function cli(argv: string[]): Promise<Run> {
  return runCliCaptured(argv, { HOME: home });
}

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-cli-home-"));
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
  await rm(home, { recursive: true, force: true });
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

describe("admin invites", () => {
  it("creates an invite and prints its code once as JSON; the code redeems", async () => {
    const run = await cli([
      "admin",
      "invites",
      "create",
      "--credit-micro-usd",
      "1500000",
      "--max-uses",
      "2",
      "--expires-in",
      "7d",
      "--note",
      "launch",
      "--json",
      ...target,
    ]);
    expect(run).toMatchObject({ code: 0, stderr: "" });
    const created = JSON.parse(run.stdout);
    expect(created).toEqual({
      invite_id: expect.stringMatching(/^inv_/),
      code: expect.stringMatching(/^[0-9A-Z]{4}(-[0-9A-Z]{4}){3}$/),
      credit_micro_usd: "1500000",
      max_uses: 2,
      expires_at: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/),
    });
    const expires = Date.parse(created.expires_at) - Date.now();
    expect(expires).toBeGreaterThan(7 * 86_400_000 - 60_000);
    expect(expires).toBeLessThan(7 * 86_400_000 + 60_000);

    const { account } = await admin.accounts.createAccount({ name: "Ada" });
    const redeemed = await new InviteStore(db.pool).redeem(account.id, created.code);
    expect(redeemed).toEqual({
      inviteId: created.invite_id,
      creditedMicroUsd: 1_500_000n,
      balanceMicroUsd: 1_500_000n,
    });

    const listed = await cli(["admin", "invites", "list", "--json", ...target]);
    expect(JSON.parse(listed.stdout).invites).toEqual([
      expect.objectContaining({
        id: created.invite_id,
        prefix: created.code.slice(0, 4),
        credit_micro_usd: "1500000",
        max_uses: 2,
        uses: 1,
        note: "launch",
      }),
    ]);
    expect(listed.stdout).not.toContain(created.code);
    const text = await cli(["admin", "invites", "list", ...target]);
    expect(text.stdout.split("\n")[0]).toMatch(/^ID\s+PREFIX\s+CREDIT\s+USES\s+EXPIRES\s+REVOKED\s+NOTE$/);
    expect(text.stdout).toMatch(/\$1\.500000\s+1\/2/);

    const revoked = await cli(["admin", "invites", "revoke", created.invite_id, ...target]);
    expect(revoked).toMatchObject({
      code: 0,
      stdout: `revoked ${created.invite_id} (${created.code.slice(0, 4)}…) after 1 of 2 uses\n`,
    });
    const missing = await cli(["admin", "invites", "revoke", "inv_nope", ...target]);
    expect(missing).toEqual({
      code: 1,
      stdout: "",
      stderr: "darkbloom-coordinator: [not_found] invite inv_nope does not exist\n",
    });
  });

  it("takes a chosen code and refuses bad values", async () => {
    const chosen = await cli([
      "admin",
      "invites",
      "create",
      "--credit-micro-usd",
      "1",
      "--code",
      "welcome-2030",
      "--expires-at",
      "2999-01-01T00:00:00Z",
      ...target,
    ]);
    expect(chosen.code).toBe(0);
    expect(chosen.stdout).toMatch(/^invite\s+inv_/);
    expect(chosen.stdout).toMatch(/code\s+WELC-OME2-030\n/);
    expect(chosen.stdout).toMatch(/expires\s+2999-01-01T00:00:00Z/);
    const again = await cli([
      "admin",
      "invites",
      "create",
      "--credit-micro-usd",
      "1",
      "--code",
      "WELCOME2030",
      ...target,
    ]);
    expect(again.stderr).toBe(
      "darkbloom-coordinator: [already_exists] an invite with this code exists already\n",
    );

    for (const [args, message] of [
      [["--credit-micro-usd", "0"], /greater than 0/],
      [["--credit-micro-usd", "1", "--expires-in", "5x"], /--expires-in.*duration/],
      [["--credit-micro-usd", "1", "--expires-at", "tomorrow"], /--expires-at.*ISO 8601/],
      [["--credit-micro-usd", "1", "--max-uses", "0"], /--max-uses/],
      [["--credit-micro-usd", "1", "--expires-in", "1d", "--expires-at", "2999-01-01"], /not both/],
      [[], /required option '--credit-micro-usd <amount>'/],
    ] as const) {
      const run = await cli(["admin", "invites", "create", ...args, ...target]);
      expect(run.code).toBe(64);
      expect(run.stderr).toMatch(message);
    }
    const bad = await cli([
      "admin",
      "invites",
      "create",
      "--credit-micro-usd",
      "1",
      "--code",
      "a!",
      ...target,
    ]);
    expect(bad).toMatchObject({ code: 1 });
    expect(bad.stderr).toMatch(/\[invalid_argument\] code must be 4 to 64 letters or digits/);
  });
});

describe("admin accounts create --referrer", () => {
  it("sets the referrer from a referral code and prints it with the key", async () => {
    const { account: referrer } = await admin.accounts.createAccount({ name: "Referrer" });
    const code = await new ReferralStore(db.pool).codeFor(referrer.id);
    const run = await cli([
      "admin",
      "accounts",
      "create",
      "--name",
      "Referred",
      "--referrer",
      code.toLowerCase(),
      "--credit-micro-usd",
      "1000",
      "--json",
      ...target,
    ]);
    expect(run).toMatchObject({ code: 0, stderr: "" });
    const created = JSON.parse(run.stdout);
    expect(created).toEqual({
      account_id: expect.stringMatching(/^acct_/),
      api_key_id: expect.stringMatching(/^key_/),
      api_key: expect.stringMatching(/^dbk_/),
      referrer_id: referrer.id,
    });
    const got = JSON.parse(
      (await cli(["admin", "accounts", "get", created.account_id, "--json", ...target])).stdout,
    );
    expect(got).toMatchObject({ referrer_id: referrer.id, referral_code: "", balance_micro_usd: "1000" });
    const referrerView = JSON.parse(
      (await cli(["admin", "accounts", "get", referrer.id, "--json", ...target])).stdout,
    );
    expect(referrerView.referral_code).toBe(code);

    const unknown = await cli([
      "admin",
      "accounts",
      "create",
      "--name",
      "X",
      "--referrer",
      "ZZZZZZZZ",
      ...target,
    ]);
    expect(unknown).toEqual({
      code: 1,
      stdout: "",
      stderr: "darkbloom-coordinator: [not_found] no account has this referral code\n",
    });
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM accounts");
    expect(rows[0].n).toBe(2); // the refused account was not created
  });
});

describe("admin usage", () => {
  it("prints an account's balances and requests", async () => {
    const { account } = await admin.accounts.createAccount({
      name: "Ada",
      initialCreditMicroUsd: 2_000_000n,
    });
    await db.pool.query("SELECT billing_reserve('req_cli1', $1, 'm', 300000, 'coord_x', 3600)", [account.id]);
    await db.pool.query(
      "SELECT billing_settle('req_cli1', 120000, 'provider:m1', 9500, 2000, 10, 20, 'completed')",
    );
    await db.pool.query("SELECT billing_reserve('req_cli2', $1, 'm', 50000, 'coord_x', 3600)", [account.id]);

    const json = JSON.parse((await cli(["admin", "usage", account.id, "--json", ...target])).stdout);
    expect(json).toMatchObject({
      account_id: account.id,
      credited_micro_usd: "1830000",
      earned_micro_usd: "0",
      held_micro_usd: "50000",
      next_page_token: "",
    });
    expect(json.records.map((r: { request_id: string }) => r.request_id)).toEqual(["req_cli2", "req_cli1"]);
    expect(json.records[1]).toMatchObject({
      model: "m",
      prompt_tokens: 10,
      completion_tokens: 20,
      reserved_micro_usd: "300000",
      charged_micro_usd: "120000",
      outcome: "completed",
      provider_account: "provider:m1",
    });
    expect(json.records[0]).toMatchObject({ outcome: "open", charged_micro_usd: "0" });

    const paged = await cli(["admin", "usage", account.id, "--page-size", "1", ...target]);
    expect(paged.stdout).toMatch(/^account\s+acct_/);
    expect(paged.stdout).toMatch(/held\s+\$0\.050000/);
    expect(paged.stdout).toMatch(/REQUEST\s+MODEL\s+OUTCOME\s+TOKENS IN\/OUT\s+RESERVED\s+CHARGED\s+CREATED/);
    expect(paged.stdout).toMatch(/more: --page-token req_cli2\n$/);
    const next = await cli(["admin", "usage", account.id, "--page-token", "req_cli2", ...target]);
    expect(next.stdout).toMatch(/req_cli1\s+m\s+completed\s+10\/20\s+\$0\.300000\s+\$0\.120000/);

    const missing = await cli(["admin", "usage", "acct_nope", ...target]);
    expect(missing.stderr).toBe("darkbloom-coordinator: [not_found] account acct_nope does not exist\n");
    const badToken = await cli(["admin", "usage", account.id, "--page-token", "req_other", ...target]);
    expect(badToken.stderr).toMatch(/\[invalid_argument\] page_token must be the request_id/);
  });
});
