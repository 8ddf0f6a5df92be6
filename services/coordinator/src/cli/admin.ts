import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { commandGroup } from "@darkbloom/cli-kit";
import {
  type Account,
  AccountSchema,
  AdminService,
  ApiKeySchema,
  CatalogModelSchema,
  CreditAccountResponseSchema,
  type Invite,
  InviteSchema,
  ListAccountsResponseSchema,
  ListApiKeysResponseSchema,
  ListInvitesResponseSchema,
  ListModelsResponseSchema,
  ListProvidersResponseSchema,
  ListReleasesResponseSchema,
  ListUsageResponseSchema,
  type Release,
  ReleaseSchema,
  VerifyLedgerResponseSchema,
} from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { readSecretFile } from "../store/secret-file.js";
import { type AdminCall, protoJson } from "./admin-call.js";
import { addMachineCommands } from "./admin-machines.js";
import { fields, table, time, usd } from "./format.js";
import { CliFailure, type CliIo, ExitCode, UsageError } from "./io.js";
import {
  defaultDataDir,
  duration,
  fromEnv,
  httpUrl,
  isoTime,
  microUsd,
  positiveInteger,
  positiveMicroUsd,
} from "./parse.js";

const DEFAULT_URL = "http://127.0.0.1:8080";
const CALL_TIMEOUT_MS = 30_000;

/** `admin …`: commands that call a running coordinator's AdminService over HTTP. */
export function addAdminCommands(program: Command, io: CliIo): void {
  const admin = commandGroup(program, "admin", "manage a running coordinator through its admin API");
  const command = (
    group: Command,
    name: string,
    description: string,
    handler: (call: AdminCall) => Promise<void>,
  ) =>
    group
      .command(name)
      .description(description)
      .option("--url <url>", `coordinator URL (env DARKBLOOM_URL, default ${DEFAULT_URL})`, httpUrl)
      .option("--admin-key <key>", "admin key (env DARKBLOOM_ADMIN_KEY, else <data dir>/admin.key)")
      .option("--json", "print one JSON document")
      .action(adminAction(io, handler));

  const accounts = commandGroup(admin, "accounts", "consumer and provider accounts");
  command(accounts, "create", "create an account and its first API key (shown once)", async (call) => {
    const { account, apiKey, apiKeySecret } = await call.client.createAccount({
      name: call.opts.name as string,
      initialCreditMicroUsd: (call.opts.creditMicroUsd as bigint | undefined) ?? 0n,
      referrerCode: (call.opts.referrer as string | undefined) ?? "",
    });
    call.print(
      () => ({
        account_id: account?.id,
        api_key_id: apiKey?.id,
        api_key: apiKeySecret,
        ...(account?.referrerId ? { referrer_id: account.referrerId } : {}),
      }),
      () =>
        fields([
          ["account", `${account?.id} (${account?.name})`],
          ["balance", usd(account?.balanceMicroUsd ?? 0n)],
          ...(account?.referrerId ? [["referrer", account.referrerId] as const] : []),
          ["api key", apiKeySecret],
          ["", "the key is shown only this once: store it now"],
        ]),
    );
  })
    .requiredOption("--name <name>", "label for the account")
    .option("--credit-micro-usd <amount>", "initial credit in micro-USD", microUsd)
    .option("--referrer <code>", "another account's referral code: that account becomes the referrer");
  command(accounts, "list", "list accounts, newest first", async (call) => {
    const page = await call.client.listAccounts({
      pageSize: (call.opts.pageSize as number | undefined) ?? 0,
      pageToken: (call.opts.pageToken as string | undefined) ?? "",
    });
    call.print(
      () => protoJson(ListAccountsResponseSchema, page),
      () =>
        table(["ID", "NAME", "BALANCE", "CREATED", "DISABLED"], page.accounts.map(accountRow)) +
        (page.nextPageToken ? `more: --page-token ${page.nextPageToken}\n` : ""),
    );
  })
    .option("--page-size <n>", "accounts per page (default 50)", positiveInteger(500))
    .option("--page-token <token>", "continue a previous listing");
  command(accounts, "get", "show one account and its balance", async (call) => {
    const { account } = await call.client.getAccount({ accountId: call.args[0] as string });
    call.print(
      () => protoJson(AccountSchema, account),
      () => (account ? accountFields(account) : ""),
    );
  }).argument("<account-id>");

  const keys = commandGroup(admin, "keys", "API keys");
  command(keys, "create", "issue an API key for an account (shown once)", async (call) => {
    const { apiKey, apiKeySecret } = await call.client.createApiKey({
      accountId: call.args[0] as string,
      name: (call.opts.name as string | undefined) ?? "",
    });
    call.print(
      () => ({ account_id: apiKey?.accountId, api_key_id: apiKey?.id, api_key: apiKeySecret }),
      () =>
        fields([
          ["key id", apiKey?.id ?? ""],
          ["api key", apiKeySecret],
          ["", "the key is shown only this once: store it now"],
        ]),
    );
  })
    .argument("<account-id>")
    .option("--name <name>", "label for the key");
  command(keys, "list", "list an account's API keys (never their secrets)", async (call) => {
    const response = await call.client.listApiKeys({ accountId: call.args[0] as string });
    call.print(
      () => protoJson(ListApiKeysResponseSchema, response),
      () =>
        table(
          ["ID", "NAME", "PREFIX", "CREATED", "REVOKED"],
          response.apiKeys.map((key) => [
            key.id,
            key.name,
            key.prefix,
            time(key.createdAt),
            time(key.revokedAt),
          ]),
        ),
    );
  }).argument("<account-id>");
  command(keys, "revoke", "revoke an API key", async (call) => {
    const { apiKey } = await call.client.revokeApiKey({ apiKeyId: call.args[0] as string });
    call.print(
      () => protoJson(ApiKeySchema, apiKey),
      () => `revoked ${apiKey?.id} (${apiKey?.prefix}…) at ${time(apiKey?.revokedAt)}\n`,
    );
  }).argument("<key-id>");

  const credits = commandGroup(admin, "credits", "account credit");
  command(credits, "add", "credit an account, once per idempotency key", async (call) => {
    const idempotencyKey = (call.opts.idempotencyKey as string | undefined) ?? `cli-${randomUUID()}`;
    const response = await call.client.creditAccount({
      accountId: call.args[0] as string,
      amountMicroUsd: call.args[1] as bigint,
      idempotencyKey,
      note: (call.opts.note as string | undefined) ?? "",
    });
    const balance = usd(response.account?.balanceMicroUsd ?? 0n);
    call.print(
      () => ({
        ...(protoJson(CreditAccountResponseSchema, response) as object),
        idempotency_key: idempotencyKey,
      }),
      () =>
        response.applied
          ? `credited ${usd(call.args[1] as bigint)} to ${response.account?.id}: balance ${balance} (idempotency key ${idempotencyKey})\n`
          : `not applied: idempotency key ${idempotencyKey} was used already; balance ${balance}\n`,
    );
  })
    .argument("<account-id>")
    .argument("<amount-micro-usd>", "credit in micro-USD (1 USD = 1000000)", positiveMicroUsd)
    .option("--idempotency-key <key>", "retry-safe key (default: a new random one)")
    .option("--note <text>", "reason recorded in the ledger");

  const invites = commandGroup(admin, "invites", "invite codes that credit the accounts redeeming them");
  command(invites, "create", "create an invite code (shown once)", async (call) => {
    if (call.opts.expiresIn !== undefined && call.opts.expiresAt !== undefined) {
      throw new UsageError("give --expires-in or --expires-at, not both");
    }
    const expiresIn = call.opts.expiresIn as number | undefined;
    const expiresAt =
      (call.opts.expiresAt as Date | undefined) ?? (expiresIn ? new Date(Date.now() + expiresIn) : undefined);
    const { invite, code } = await call.client.createInvite({
      creditMicroUsd: call.opts.creditMicroUsd as bigint,
      maxUses: (call.opts.maxUses as number | undefined) ?? 1,
      ...(expiresAt ? { expiresAt: timestampFromDate(expiresAt) } : {}),
      code: (call.opts.code as string | undefined) ?? "",
      note: (call.opts.note as string | undefined) ?? "",
    });
    call.print(
      () => ({
        invite_id: invite?.id,
        code,
        credit_micro_usd: String(invite?.creditMicroUsd ?? 0n),
        max_uses: invite?.maxUses,
        expires_at: invite?.expiresAt ? time(invite.expiresAt) : null,
      }),
      () =>
        fields([
          ["invite", invite?.id ?? ""],
          ["code", code],
          ["credit", `${usd(invite?.creditMicroUsd ?? 0n)} per account`],
          ["uses", `up to ${invite?.maxUses}`],
          ["expires", time(invite?.expiresAt)],
          ["", "the code is shown only this once: store it now"],
        ]),
    );
  })
    .requiredOption("--credit-micro-usd <amount>", "credit per redemption in micro-USD", positiveMicroUsd)
    .option("--max-uses <n>", "how many accounts may redeem it (default 1)", positiveInteger(1_000_000_000))
    .option("--expires-in <duration>", "expire after e.g. 12h or 30d", duration)
    .option("--expires-at <time>", "expire at an ISO 8601 time", isoTime)
    .option("--code <code>", "choose the code (4-64 letters or digits) instead of generating one")
    .option("--note <text>", "label for the invite");
  command(invites, "list", "list invite codes, newest first (never the codes)", async (call) => {
    const page = await call.client.listInvites({
      pageSize: (call.opts.pageSize as number | undefined) ?? 0,
      pageToken: (call.opts.pageToken as string | undefined) ?? "",
    });
    call.print(
      () => protoJson(ListInvitesResponseSchema, page),
      () =>
        table(["ID", "PREFIX", "CREDIT", "USES", "EXPIRES", "REVOKED", "NOTE"], page.invites.map(inviteRow)) +
        (page.nextPageToken ? `more: --page-token ${page.nextPageToken}\n` : ""),
    );
  })
    .option("--page-size <n>", "invites per page (default 50)", positiveInteger(500))
    .option("--page-token <token>", "continue a previous listing");
  command(invites, "revoke", "stop an invite code from being redeemed", async (call) => {
    const { invite } = await call.client.revokeInvite({ inviteId: call.args[0] as string });
    call.print(
      () => protoJson(InviteSchema, invite),
      () => `revoked ${invite?.id} (${invite?.prefix}…) after ${invite?.uses} of ${invite?.maxUses} uses\n`,
    );
  }).argument("<invite-id>");

  command(admin, "usage", "an account's balances and recent requests, newest first", async (call) => {
    const response = await call.client.listUsage({
      accountId: call.args[0] as string,
      pageSize: (call.opts.pageSize as number | undefined) ?? 0,
      pageToken: (call.opts.pageToken as string | undefined) ?? "",
    });
    call.print(
      () => protoJson(ListUsageResponseSchema, response),
      () =>
        fields([
          ["account", response.accountId],
          ["credited", usd(response.creditedMicroUsd)],
          ["earned", usd(response.earnedMicroUsd)],
          ["held", usd(response.heldMicroUsd)],
        ]) +
        table(
          ["REQUEST", "MODEL", "OUTCOME", "TOKENS IN/OUT", "RESERVED", "CHARGED", "CREATED"],
          response.records.map((r) => [
            r.requestId,
            r.model,
            r.outcome,
            `${r.promptTokens}/${r.completionTokens}`,
            usd(r.reservedMicroUsd),
            usd(r.chargedMicroUsd),
            time(r.createdAt),
          ]),
        ) +
        (response.nextPageToken ? `more: --page-token ${response.nextPageToken}\n` : ""),
    );
  })
    .argument("<account-id>")
    .option("--page-size <n>", "requests per page (default 50)", positiveInteger(500))
    .option("--page-token <token>", "continue a previous listing");

  const models = commandGroup(admin, "models", "the model catalog and its prices");
  command(models, "list", "list the catalog", async (call) => {
    const response = await call.client.listModels({});
    call.print(
      () => protoJson(ListModelsResponseSchema, response),
      () =>
        table(
          ["ID", "NAME", "OWNED BY", "INPUT/1M", "OUTPUT/1M", "ENABLED"],
          response.models.map((model) => [
            model.id,
            model.displayName,
            model.ownedBy,
            usd(model.inputMicroUsdPerMillion),
            usd(model.outputMicroUsdPerMillion),
            model.enabled ? "yes" : "no",
          ]),
        ),
    );
  });
  command(models, "set", "add a model or change its prices", async (call) => {
    const id = call.args[0] as string;
    // Keep the names the model has unless new ones are given.
    const existing = (await call.client.listModels({})).models.find((model) => model.id === id);
    const { model } = await call.client.upsertModel({
      model: {
        id,
        displayName: (call.opts.displayName as string | undefined) ?? existing?.displayName ?? "",
        ownedBy: (call.opts.ownedBy as string | undefined) ?? existing?.ownedBy ?? "",
        inputMicroUsdPerMillion: call.opts.inputPrice as bigint,
        outputMicroUsdPerMillion: call.opts.outputPrice as bigint,
        enabled: call.opts.disabled !== true,
      },
    });
    call.print(
      () => protoJson(CatalogModelSchema, model),
      () =>
        `${model?.id}: input ${usd(model?.inputMicroUsdPerMillion ?? 0n)} and output ` +
        `${usd(model?.outputMicroUsdPerMillion ?? 0n)} per million tokens, ${model?.enabled ? "enabled" : "disabled"}\n`,
    );
  })
    .argument("<model-id>")
    .requiredOption("--input-price <micro-usd>", "micro-USD per million prompt tokens", microUsd)
    .requiredOption("--output-price <micro-usd>", "micro-USD per million completion tokens", microUsd)
    .option("--display-name <name>", "human-readable name")
    .option("--owned-by <publisher>", "the model's publisher")
    .option("--disabled", "keep the model in the catalog but refuse requests for it");
  command(models, "delete", "remove a model from the catalog", async (call) => {
    const modelId = call.args[0] as string;
    await call.client.deleteModel({ modelId });
    call.print(
      () => ({ model_id: modelId, deleted: true }),
      () => `deleted ${modelId}\n`,
    );
  }).argument("<model-id>");

  const providers = commandGroup(admin, "providers", "connected providers");
  command(providers, "list", "list connected providers and their live state", async (call) => {
    const response = await call.client.listProviders({
      model: (call.opts.model as string | undefined) ?? "",
    });
    call.print(
      () => protoJson(ListProvidersResponseSchema, response),
      () =>
        table(
          ["ID", "VERSION", "TRUST", "STATE", "BUSY", "TOK/S", "CHIP", "MODELS"],
          response.providers.map((provider) => [
            provider.providerId,
            provider.daemonVersion,
            provider.trustLevel,
            provider.state,
            `${provider.busySlots}/${provider.maxBatch}`,
            provider.decodeTokensPerSecond.toFixed(1),
            provider.chip || "-",
            provider.models.join(","),
          ]),
        ),
    );
  }).option("--model <model-id>", "only providers serving this model");
  command(providers, "drain", "ask a provider to finish its work and reconnect", async (call) => {
    const providerId = call.args[0] as string;
    await call.client.drainProvider({ providerId, reason: (call.opts.reason as string | undefined) ?? "" });
    call.print(
      () => ({ provider_id: providerId, drained: true }),
      () => `draining ${providerId}\n`,
    );
  })
    .argument("<provider-id>")
    .option("--reason <text>", "passed on to the provider");

  addMachineCommands(admin, command, io);

  const ledger = commandGroup(admin, "ledger", "the double-entry ledger");
  command(ledger, "verify", "prove the ledger's invariants; exit 1 on any discrepancy", async (call) => {
    const report = await call.client.verifyLedger({});
    call.print(
      () => protoJson(VerifyLedgerResponseSchema, report),
      () =>
        `${report.ok ? "ledger OK" : "LEDGER DISCREPANCIES"}: ${report.transactions} transactions, ${report.entries} entries, ` +
        `${report.accounts} accounts, ${report.openReservations} open reservations\n` +
        report.discrepancies.map((d) => `  ${d.check}: ${d.detail}\n`).join(""),
    );
    if (!report.ok) {
      throw new CliFailure(
        `ledger verify found ${report.discrepancies.length} discrepancies`,
        ExitCode.failure,
      );
    }
  });

  const releases = commandGroup(admin, "releases", "provider daemon releases (the binary allowlist)");
  command(releases, "create", "register a release (active unless --inactive)", async (call) => {
    const { release } = await call.client.createRelease({
      release: {
        version: call.opts.version as string,
        platform: call.opts.platform as string,
        binarySha256: call.opts.binarySha256 as string,
        bundleSha256: call.opts.bundleSha256 as string,
        url: call.opts.bundleUrl as string,
        active: call.opts.inactive !== true,
        minProviderVersion: (call.opts.minProviderVersion as string | undefined) ?? "",
      },
    });
    call.print(
      () => protoJson(ReleaseSchema, release),
      () => (release ? releaseLine("registered", release) : ""),
    );
  })
    .requiredOption("--version <semver>", "release version, e.g. 0.5.1")
    .requiredOption("--platform <platform>", "build target, e.g. darwin-arm64 or linux-x64")
    .requiredOption("--binary-sha256 <hex>", "SHA-256 of the daemon binary")
    .requiredOption("--bundle-sha256 <hex>", "SHA-256 of the download bundle")
    .requiredOption("--bundle-url <url>", "where the bundle is downloaded from", httpUrl)
    .option("--inactive", "register without adding it to the allowlist")
    .option(
      "--min-provider-version <semver>",
      "while this release is active, daemons older than this are not routed to",
    );
  command(releases, "list", "list releases, newest first", async (call) => {
    const response = await call.client.listReleases({
      platform: (call.opts.platform as string | undefined) ?? "",
    });
    call.print(
      () => protoJson(ListReleasesResponseSchema, response),
      () =>
        table(
          ["VERSION", "PLATFORM", "ACTIVE", "BINARY SHA-256", "CREATED", "URL"],
          response.releases.map((release) => [
            release.version,
            release.platform,
            release.active ? "yes" : "no",
            release.binarySha256,
            time(release.createdAt),
            release.url,
          ]),
        ),
    );
  }).option("--platform <platform>", "only this platform");
  for (const [name, active] of [
    ["activate", true],
    ["deactivate", false],
  ] as const) {
    command(
      releases,
      name,
      `${active ? "add a release to" : "remove a release from"} the allowlist`,
      async (call) => {
        const { release } = await call.client.setReleaseActive({
          version: call.args[0] as string,
          platform: call.args[1] as string,
          active,
        });
        call.print(
          () => protoJson(ReleaseSchema, release),
          () => (release ? releaseLine(active ? "activated" : "deactivated", release) : ""),
        );
      },
    )
      .argument("<version>")
      .argument("<platform>");
  }
}

function adminAction(io: CliIo, handler: (call: AdminCall) => Promise<void>) {
  return async (...parameters: unknown[]): Promise<void> => {
    const command = parameters.at(-1) as Command;
    const opts = command.opts();
    const url = (opts.url as string | undefined) ?? fromEnv(io.env, "DARKBLOOM_URL", httpUrl) ?? DEFAULT_URL;
    const adminKey =
      (opts.adminKey as string | undefined) || io.env.DARKBLOOM_ADMIN_KEY || (await adminKeyFile(io));
    if (!adminKey) {
      throw new UsageError(
        "no admin key: pass --admin-key, set DARKBLOOM_ADMIN_KEY, or run where <data dir>/admin.key exists",
      );
    }
    const transport = createConnectTransport({
      baseUrl: url,
      httpVersion: "1.1",
      defaultTimeoutMs: CALL_TIMEOUT_MS,
      interceptors: [
        (next) => (request) => {
          request.header.set("authorization", `Bearer ${adminKey}`);
          return next(request);
        },
      ],
    });
    const print = (json: () => unknown, text: () => string) =>
      io.stdout(opts.json ? `${JSON.stringify(json(), null, 2)}\n` : text());
    try {
      await handler({
        client: createClient(AdminService, transport),
        args: command.processedArgs,
        opts,
        print,
      });
    } catch (error) {
      throw describeCallFailure(error, url);
    }
  };
}

/** The admin key the coordinator generated on this machine, if it can be read. */
async function adminKeyFile(io: CliIo): Promise<string | undefined> {
  try {
    return await readSecretFile(join(defaultDataDir(io.env), "admin.key"));
  } catch {
    return undefined;
  }
}

function describeCallFailure(error: unknown, url: string): unknown {
  if (!(error instanceof ConnectError)) return error;
  const cause = error.cause as { syscall?: unknown; message?: unknown } | undefined;
  if (error.code === Code.Unavailable && cause?.syscall !== undefined) {
    return new CliFailure(
      `cannot reach the coordinator at ${url}: ${String(cause.message)}`,
      ExitCode.unavailable,
    );
  }
  if (error.code === Code.DeadlineExceeded) {
    return new CliFailure(
      `the coordinator at ${url} did not answer within ${CALL_TIMEOUT_MS / 1000} s`,
      ExitCode.unavailable,
    );
  }
  return new CliFailure(error.message, ExitCode.failure);
}

function accountRow(account: Account): string[] {
  return [
    account.id,
    account.name,
    usd(account.balanceMicroUsd),
    time(account.createdAt),
    account.disabled ? "yes" : "no",
  ];
}

function accountFields(account: Account): string {
  return fields([
    ["id", account.id],
    ["name", account.name],
    ["balance", `${usd(account.balanceMicroUsd)} (${account.balanceMicroUsd} micro-USD)`],
    ["created", time(account.createdAt)],
    ["disabled", account.disabled ? "yes" : "no"],
  ]);
}

function inviteRow(invite: Invite): string[] {
  return [
    invite.id,
    `${invite.prefix}…`,
    usd(invite.creditMicroUsd),
    `${invite.uses}/${invite.maxUses}`,
    time(invite.expiresAt),
    time(invite.revokedAt),
    invite.note,
  ];
}

function releaseLine(verb: string, release: Release): string {
  return `${verb} ${release.version} for ${release.platform} (${release.active ? "active" : "inactive"}, binary ${release.binarySha256.slice(0, 12)}…)\n`;
}
