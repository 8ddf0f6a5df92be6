import type pg from "pg";
import { deviceTokenError, invalidRequest, resourceNotFound } from "../errors/index.js";
import { withTransaction } from "../store/transaction.js";
import { generateId, generateSecret, looksLikeSecret } from "./api-key.js";
import { generateUserCode, groupCode, isUserCode, normaliseCode, sha256 } from "./codes.js";

/** Every device code starts with this. */
export const DEVICE_CODE_PREFIX = "dbd_";
/** Every provider token (Register.account_token) starts with this. */
export const PROVIDER_TOKEN_PREFIX = "dbp_";

export interface DeviceLoginOptions {
  /** How long a device code can be approved and exchanged (RFC 8628 expires_in). */
  ttlSeconds: number;
  /** The least time between two polls of the token endpoint (RFC 8628 interval). */
  intervalSeconds: number;
}

export const DEFAULT_DEVICE_LOGIN_OPTIONS: DeviceLoginOptions = { ttlSeconds: 900, intervalSeconds: 5 };

/** What POST /v1/device/code returns (without verification_uri, which the HTTP layer knows). */
export interface DeviceAuthorization {
  deviceCode: string;
  /** Grouped for display: "BCDF-GHJK". */
  userCode: string;
  expiresIn: number;
  interval: number;
}

/** A slow_down is answered when a poll comes sooner than the interval less this slack. */
const POLL_SLACK_SECONDS = 1;
/** RFC 8628: each slow_down adds 5 seconds to the interval. */
const SLOW_DOWN_STEP_SECONDS = 5;
/** Device codes are deleted this long after they expire. */
const PURGE_AFTER = "1 day";
const MAX_USER_CODE_ATTEMPTS = 5;
const UNIQUE_VIOLATION = "23505";

type ExchangeOutcome =
  | { kind: "token"; token: string; accountId: string }
  | { kind: "pending" }
  | { kind: "slow_down"; interval: number }
  | { kind: "expired" }
  | { kind: "denied" }
  | { kind: "used" }
  | { kind: "unknown" };

/**
 * The device-code login of providers (RFC 8628): the daemon asks for a device code and shows its
 * user code; the account owner approves the user code with an API key; the daemon's poll then
 * exchanges the device code, once, for a provider token that links its sessions to the account.
 * Device codes, user codes and provider tokens are stored only as SHA-256 hashes.
 */
export class DeviceLogin {
  constructor(
    private readonly pool: pg.Pool,
    readonly options: DeviceLoginOptions = DEFAULT_DEVICE_LOGIN_OPTIONS,
  ) {}

  /** Starts a device authorization. */
  async start(): Promise<DeviceAuthorization> {
    await this.pool.query(`DELETE FROM device_codes WHERE expires_at < now() - interval '${PURGE_AFTER}'`);
    const deviceCode = generateSecret(DEVICE_CODE_PREFIX);
    for (let attempt = 1; ; attempt++) {
      const userCode = generateUserCode();
      try {
        await this.pool.query(
          `INSERT INTO device_codes (device_code_hash, user_code_hash, interval_seconds, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))`,
          [sha256(deviceCode), sha256(userCode), this.options.intervalSeconds, this.options.ttlSeconds],
        );
        return {
          deviceCode,
          userCode: groupCode(userCode),
          expiresIn: this.options.ttlSeconds,
          interval: this.options.intervalSeconds,
        };
      } catch (e) {
        // A user code still on file was drawn again: draw another.
        if ((e as { code?: string }).code !== UNIQUE_VIOLATION || attempt >= MAX_USER_CODE_ATTEMPTS) throw e;
      }
    }
  }

  /**
   * The token endpoint: a provider token exactly once after approval; otherwise throws the RFC 8628
   * error (authorization_pending, slow_down, expired_token, access_denied, invalid_grant) as a 400.
   */
  async exchange(deviceCode: string): Promise<{ providerToken: string; accountId: string }> {
    if (!looksLikeSecret(deviceCode, DEVICE_CODE_PREFIX)) {
      throw deviceTokenError(
        "invalid_grant",
        "The device_code is not a device code this coordinator issued. Start again with POST /v1/device/code.",
      );
    }
    const outcome = await withTransaction(this.pool, async (client): Promise<ExchangeOutcome> => {
      const { rows } = await client.query<{
        state: string;
        account_id: string | null;
        interval_seconds: number;
        expired: boolean;
        too_soon: boolean;
      }>(
        `SELECT state, account_id, interval_seconds, expires_at <= now() AS expired,
                coalesce(last_polled_at > now() - make_interval(secs => interval_seconds - $2), false) AS too_soon
           FROM device_codes WHERE device_code_hash = $1 FOR UPDATE`,
        [sha256(deviceCode), POLL_SLACK_SECONDS],
      );
      const row = rows[0];
      if (row === undefined) return { kind: "unknown" };
      if (row.state === "redeemed") return { kind: "used" };
      if (row.expired) return { kind: "expired" };
      if (row.state === "denied") return { kind: "denied" };
      if (row.state === "pending") {
        const interval = row.too_soon ? row.interval_seconds + SLOW_DOWN_STEP_SECONDS : row.interval_seconds;
        await client.query(
          "UPDATE device_codes SET last_polled_at = now(), interval_seconds = $2 WHERE device_code_hash = $1",
          [sha256(deviceCode), interval],
        );
        return row.too_soon ? { kind: "slow_down", interval } : { kind: "pending" };
      }
      // Approved: mint the one provider token this device code is worth.
      const accountId = row.account_id!;
      const token = generateSecret(PROVIDER_TOKEN_PREFIX);
      const tokenId = generateId("ptok_");
      await client.query(
        "INSERT INTO provider_tokens (id, account_id, token_hash, prefix) VALUES ($1, $2, $3, $4)",
        [tokenId, accountId, sha256(token), token.slice(0, 12)],
      );
      await client.query(
        "UPDATE device_codes SET state = 'redeemed', token_id = $2 WHERE device_code_hash = $1",
        [sha256(deviceCode), tokenId],
      );
      return { kind: "token", token, accountId };
    });
    switch (outcome.kind) {
      case "token":
        return { providerToken: outcome.token, accountId: outcome.accountId };
      case "pending":
        throw deviceTokenError(
          "authorization_pending",
          "The user code has not been approved yet. Keep polling at the given interval.",
        );
      case "slow_down":
        throw deviceTokenError(
          "slow_down",
          `Polled sooner than the interval allows. Wait at least ${outcome.interval} seconds between polls.`,
        );
      case "expired":
        throw deviceTokenError(
          "expired_token",
          "The device code expired before it was approved and exchanged. Start again with POST /v1/device/code.",
        );
      case "denied":
        throw deviceTokenError("access_denied", "The account owner denied this login.");
      case "used":
        throw deviceTokenError(
          "invalid_grant",
          "This device code was already exchanged for a provider token; a device code mints exactly one.",
        );
      case "unknown":
        throw deviceTokenError(
          "invalid_grant",
          "The device_code is unknown: it was never issued, or it expired long ago. Start again with POST /v1/device/code.",
        );
    }
  }

  /** Links a pending user code to the account (approving twice with one account changes nothing). */
  approve(accountId: string, userCode: string): Promise<{ userCode: string }> {
    return this.decide(accountId, userCode, "approved");
  }

  /** Refuses a pending user code: the daemon's next poll gets access_denied. */
  deny(accountId: string, userCode: string): Promise<{ userCode: string }> {
    return this.decide(accountId, userCode, "denied");
  }

  /**
   * The account a provider token acts for, or null when the token is unknown, revoked, or its account
   * disabled. Records the use.
   */
  async resolveProviderToken(token: string): Promise<string | null> {
    if (!looksLikeSecret(token, PROVIDER_TOKEN_PREFIX)) return null;
    const { rows } = await this.pool.query<{ account_id: string }>(
      `UPDATE provider_tokens t SET last_used_at = now()
         FROM accounts a
        WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND a.id = t.account_id AND NOT a.disabled
       RETURNING t.account_id`,
      [sha256(token)],
    );
    return rows[0]?.account_id ?? null;
  }

  /** Revokes a provider token (RFC 7009 style: possession is authority). False when it is unknown. */
  async revokeProviderToken(token: string): Promise<boolean> {
    if (!looksLikeSecret(token, PROVIDER_TOKEN_PREFIX)) return false;
    const { rowCount } = await this.pool.query(
      "UPDATE provider_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_hash = $1",
      [sha256(token)],
    );
    return (rowCount ?? 0) > 0;
  }

  private async decide(
    accountId: string,
    typed: string,
    decision: "approved" | "denied",
  ): Promise<{ userCode: string }> {
    const code = normaliseCode(typed);
    if (code === undefined || !isUserCode(code)) {
      throw invalidRequest(
        "user_code must be the 8-letter code the provider shows, such as BCDF-GHJK.",
        "user_code",
        "invalid_user_code",
      );
    }
    return withTransaction(this.pool, async (client) => {
      const { rows } = await client.query<{ state: string; account_id: string | null; expired: boolean }>(
        `SELECT state, account_id, expires_at <= now() AS expired
           FROM device_codes WHERE user_code_hash = $1 FOR UPDATE`,
        [sha256(code)],
      );
      const row = rows[0];
      if (row === undefined) {
        throw resourceNotFound(
          "No login is waiting for this user code. Check the code the provider shows, or start the login again.",
          "user_code_not_found",
          "user_code",
        );
      }
      const same = row.account_id === accountId;
      const settled =
        (decision === "approved" && (row.state === "approved" || row.state === "redeemed")) ||
        (decision === "denied" && row.state === "denied");
      if (same && settled) return { userCode: groupCode(code) };
      if (row.state !== "pending") {
        throw invalidRequest(
          "This user code was already approved or denied. Start the login again for a new code.",
          "user_code",
          "user_code_already_used",
        );
      }
      if (row.expired) {
        throw invalidRequest(
          `This user code has expired (codes last ${Math.round(this.options.ttlSeconds / 60)} minutes). Start the login again for a new code.`,
          "user_code",
          "user_code_expired",
        );
      }
      await client.query(
        "UPDATE device_codes SET state = $2, account_id = $3, decided_at = now() WHERE user_code_hash = $1",
        [sha256(code), decision, accountId],
      );
      return { userCode: groupCode(code) };
    });
  }
}
