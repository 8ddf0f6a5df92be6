import type { Migration } from "./migration.js";

/**
 * Accounts beyond API keys: device-code login for providers (provider tokens), invite codes and
 * referral codes. (What each settlement paid the provider and the referrer is recorded on the
 * reservation by 0002's billing_settle, so usage and earnings are listed without reading the ledger.)
 *
 * Secrets (device codes, user codes, provider tokens, invite codes) are stored only as SHA-256 hashes.
 */
export const accountLinks: Migration = {
  version: 3,
  name: "account_links",
  sql: `
CREATE TABLE provider_tokens (
  id            text PRIMARY KEY CHECK (id ~ '^ptok_[A-Za-z0-9]+$'),
  account_id    text NOT NULL REFERENCES accounts (id),
  token_hash    bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  prefix        text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz,
  last_used_at  timestamptz
);
CREATE INDEX provider_tokens_account_idx ON provider_tokens (account_id, created_at DESC);

-- One RFC 8628 device authorization: pending until an account approves (or denies) its user code,
-- then redeemed for exactly one provider token.
CREATE TABLE device_codes (
  device_code_hash  bytea PRIMARY KEY CHECK (length(device_code_hash) = 32),
  user_code_hash    bytea NOT NULL UNIQUE CHECK (length(user_code_hash) = 32),
  state             text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'approved', 'denied', 'redeemed')),
  account_id        text REFERENCES accounts (id),
  token_id          text REFERENCES provider_tokens (id),
  interval_seconds  integer NOT NULL CHECK (interval_seconds > 0),
  created_at        timestamptz NOT NULL DEFAULT now(),
  expires_at        timestamptz NOT NULL,
  last_polled_at    timestamptz,
  decided_at        timestamptz,
  CHECK ((state = 'pending') = (account_id IS NULL)),
  CHECK ((state = 'redeemed') = (token_id IS NOT NULL))
);
CREATE INDEX device_codes_expires_at_idx ON device_codes (expires_at);

CREATE TABLE invites (
  id                text PRIMARY KEY CHECK (id ~ '^inv_[A-Za-z0-9]+$'),
  code_hash         bytea NOT NULL UNIQUE CHECK (length(code_hash) = 32),
  prefix            text NOT NULL,
  credit_micro_usd  bigint NOT NULL CHECK (credit_micro_usd > 0),
  max_uses          integer NOT NULL CHECK (max_uses > 0),
  -- Never more redemptions than max_uses, whatever the interleaving.
  uses              integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
  expires_at        timestamptz,
  revoked_at        timestamptz,
  note              text NOT NULL DEFAULT '',
  created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invites_created_at_id_idx ON invites (created_at DESC, id DESC);

CREATE TABLE invite_redemptions (
  invite_id    text NOT NULL REFERENCES invites (id),
  account_id   text NOT NULL REFERENCES accounts (id),
  redeemed_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (invite_id, account_id)
);

-- Referral codes are public (meant to be shared), so they are stored as they are.
ALTER TABLE accounts ADD COLUMN referral_code text CHECK (referral_code ~ '^[0-9A-Z]{4,64}$');
CREATE UNIQUE INDEX accounts_referral_code_idx ON accounts (referral_code);
`,
};
