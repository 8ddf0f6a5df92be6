import type { AccountStore, ApiKeyRecord } from "../../accounts/account-store.js";
import type { InviteStore } from "../../accounts/invites.js";
import type { ReferralStore } from "../../accounts/referrals.js";
import type { UsageStore } from "../../accounts/usage.js";
import { TIMING_PHASES } from "../../inference/timing.js";
import {
  accountEndpoint,
  type JsonEndpointDeps,
  queryInteger,
  queryRequestId,
  requiredString,
} from "../json-endpoint.js";
import type { Handler } from "../types.js";

export interface AccountHandlerDeps extends JsonEndpointDeps {
  invites: InviteStore;
  referrals: ReferralStore;
  usage: UsageStore;
  keys: Pick<AccountStore, "createApiKey" | "listApiKeys" | "revokeApiKey">;
  /** A key was revoked: cached authentications are dropped (this replica at once, others within their TTL). */
  onKeysChanged: () => void;
}

const PAGE = { min: 1, max: 100, fallback: 20 };

/**
 * GET /v1/account: `{object, account_id, name, balance_micro_usd, credited_micro_usd,
 * earned_micro_usd, held_micro_usd}`. The balance (credited plus earned) is what can be spent now;
 * earned is the withdrawable part (credited never becomes withdrawable: docs/ARCHITECTURE.md, "Money
 * rules"); held is what open requests have reserved on top.
 */
export function accountHandler(deps: AccountHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ principal }) => {
    const money = await deps.usage.summary(principal.accountId);
    return {
      object: "account",
      account_id: principal.accountId,
      name: money.name,
      balance_micro_usd: Number(money.creditedMicroUsd + money.earnedMicroUsd),
      credited_micro_usd: Number(money.creditedMicroUsd),
      earned_micro_usd: Number(money.earnedMicroUsd),
      held_micro_usd: Number(money.heldMicroUsd),
    };
  });
}

/**
 * GET /v1/account/usage?limit=&before=: the caller's requests, newest first, as
 * `{object: "list", data: [...], has_more, next_before}`; pass next_before as before for the next page.
 */
export function usageHandler(deps: AccountHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ principal, query }) => {
    const page = await deps.usage.usage(principal.accountId, {
      limit: queryInteger(query, "limit", PAGE),
      before: queryRequestId(query, "before"),
    });
    return {
      object: "list",
      data: page.records.map((r) => ({
        object: "usage.request",
        request_id: r.requestId,
        model: r.model,
        state: r.state,
        outcome: r.outcome,
        prompt_tokens: r.promptTokens,
        completion_tokens: r.completionTokens,
        reserved_micro_usd: Number(r.reservedMicroUsd),
        charged_micro_usd: r.chargedMicroUsd === null ? null : Number(r.chargedMicroUsd),
        created_at: seconds(r.createdAt),
        settled_at: r.settledAt === null ? null : seconds(r.settledAt),
        // X-Timing's phases (microseconds, in its order) when it was settled; null until recorded (about a second).
        timing: r.timing && Object.fromEntries(TIMING_PHASES.map((p) => [p, r.timing?.[p] ?? 0])),
      })),
      has_more: page.hasMore,
      next_before: page.hasMore ? (page.records.at(-1)?.requestId ?? null) : null,
    };
  });
}

/**
 * GET /v1/account/earnings?limit=&before=: what the caller's account earned as a provider (and as
 * a referrer), with the requests it served, newest first; withheld_micro_usd is a provider share not
 * paid because the consumer was the account itself or linked to it.
 */
export function earningsHandler(deps: AccountHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ principal, query }) => {
    const [money, earnings] = await Promise.all([
      deps.usage.summary(principal.accountId),
      deps.usage.earnings(principal.accountId, {
        limit: queryInteger(query, "limit", PAGE),
        before: queryRequestId(query, "before"),
      }),
    ]);
    return {
      object: "earnings",
      account_id: principal.accountId,
      earned_micro_usd: Number(money.earnedMicroUsd),
      provider_earnings_micro_usd: Number(earnings.providerEarningsMicroUsd),
      referral_earnings_micro_usd: Number(earnings.referralEarningsMicroUsd),
      requests_served: earnings.requestsServed,
      data: earnings.records.map((r) => ({
        object: "earnings.request",
        request_id: r.requestId,
        model: r.model,
        prompt_tokens: r.promptTokens,
        completion_tokens: r.completionTokens,
        charged_micro_usd: Number(r.chargedMicroUsd),
        earned_micro_usd: Number(r.earnedMicroUsd),
        withheld_micro_usd: Number(r.withheldMicroUsd),
        settled_at: seconds(r.settledAt),
      })),
      has_more: earnings.hasMore,
      next_before: earnings.hasMore ? (earnings.records.at(-1)?.requestId ?? null) : null,
    };
  });
}

/** POST /v1/invites/redeem `{code}`: `{invite_id, credited_micro_usd, balance_micro_usd}`. */
export function redeemInviteHandler(deps: AccountHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ principal, body }) => {
    const r = await deps.invites.redeem(principal.accountId, requiredString(body, "code"));
    return {
      invite_id: r.inviteId,
      credited_micro_usd: Number(r.creditedMicroUsd),
      balance_micro_usd: Number(r.balanceMicroUsd),
    };
  });
}

/** GET /v1/referrals/code: `{referral_code}`, made on first use. */
export function referralCodeHandler(deps: AccountHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ principal }) => ({
    referral_code: await deps.referrals.codeFor(principal.accountId),
  }));
}

/** POST /v1/referrals/apply `{code}`: `{referral_code, applied}`; the referrer is set once. */
export function applyReferralHandler(deps: AccountHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ principal, body }) => {
    const r = await deps.referrals.apply(principal.accountId, requiredString(body, "code"));
    return { referral_code: r.referralCode, applied: r.applied };
  });
}

function seconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

/**
 * GET /v1/account/keys: the caller's account's API keys, newest first, as `{object: "list", data:
 * [{object: "api_key", id, name, prefix, created_at, last_used_at, revoked_at}]}`. Never a secret:
 * only its first characters, to recognise it.
 */
export function listKeysHandler(deps: AccountHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ principal }) => ({
    object: "list",
    data: (await deps.keys.listApiKeys(principal.accountId)).map(apiKeyJson),
  }));
}

/**
 * POST /v1/account/keys `{name?}`: a new key for the caller's account; its `key` (the secret) is in
 * this response only and never stored.
 */
export function createKeyHandler(deps: AccountHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ principal, body }) => {
    const name = body.name === undefined || body.name === null ? "" : requiredString(body, "name");
    const issued = await deps.keys.createApiKey(principal.accountId, name);
    return { ...apiKeyJson(issued.apiKey), key: issued.secret };
  });
}

/**
 * POST /v1/account/keys/revoke `{id}`: revokes one of the caller's account's keys (the one calling
 * too: it stops working at once on this replica). Another account's key is not found.
 */
export function revokeKeyHandler(deps: AccountHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ principal, body }) => {
    const revoked = await deps.keys.revokeApiKey(requiredString(body, "id"), principal.accountId);
    deps.onKeysChanged();
    return apiKeyJson(revoked);
  });
}

function apiKeyJson(k: ApiKeyRecord) {
  return {
    object: "api_key",
    id: k.id,
    name: k.name,
    prefix: k.prefix,
    created_at: seconds(k.createdAt),
    last_used_at: k.lastUsedAt === null ? null : seconds(k.lastUsedAt),
    revoked_at: k.revokedAt === null ? null : seconds(k.revokedAt),
  };
}
