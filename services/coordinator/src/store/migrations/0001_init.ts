import type { Migration } from "./migration.js";

/** Accounts, API keys, the model catalog, daemon releases and the double-entry ledger. */
export const init: Migration = {
  version: 1,
  name: "init",
  sql: `
CREATE TABLE accounts (
  id          text PRIMARY KEY CHECK (id ~ '^acct_[A-Za-z0-9]+$'),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  disabled    boolean NOT NULL DEFAULT false
);
CREATE INDEX accounts_created_at_id_idx ON accounts (created_at DESC, id DESC);

CREATE TABLE api_keys (
  id            text PRIMARY KEY CHECK (id ~ '^key_[A-Za-z0-9]+$'),
  account_id    text NOT NULL REFERENCES accounts (id),
  name          text NOT NULL DEFAULT '',
  prefix        text NOT NULL,
  key_hash      bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz,
  last_used_at  timestamptz
);
CREATE INDEX api_keys_account_id_idx ON api_keys (account_id, created_at DESC);

CREATE TABLE models (
  id                            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._:/-]{1,128}$'),
  display_name                  text NOT NULL DEFAULT '',
  owned_by                      text NOT NULL DEFAULT '',
  input_micro_usd_per_million   bigint NOT NULL CHECK (input_micro_usd_per_million >= 0),
  output_micro_usd_per_million  bigint NOT NULL CHECK (output_micro_usd_per_million >= 0),
  enabled                       boolean NOT NULL DEFAULT true,
  created_at                    timestamptz NOT NULL DEFAULT now(),
  updated_at                    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE releases (
  version        text NOT NULL,
  platform       text NOT NULL,
  binary_sha256  text NOT NULL CHECK (binary_sha256 ~ '^[0-9a-f]{64}$'),
  bundle_sha256  text NOT NULL CHECK (bundle_sha256 ~ '^[0-9a-f]{64}$'),
  url            text NOT NULL,
  active         boolean NOT NULL DEFAULT true,
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (version, platform)
);
CREATE INDEX releases_active_idx ON releases (binary_sha256) WHERE active;

-- The ledger is append-only: balances are sums of entries, and the entries of every transaction sum
-- to zero (checked at commit by a deferred constraint trigger).
CREATE TABLE ledger_transactions (
  id               bigserial PRIMARY KEY,
  kind             text NOT NULL CHECK (kind <> ''),
  idempotency_key  text UNIQUE,
  note             text NOT NULL DEFAULT '',
  created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_entries (
  id                bigserial PRIMARY KEY,
  transaction_id    bigint NOT NULL REFERENCES ledger_transactions (id),
  account           text NOT NULL CHECK (account <> ''),
  amount_micro_usd  bigint NOT NULL CHECK (amount_micro_usd <> 0),
  bucket            text NOT NULL CHECK (bucket IN ('credited', 'earned'))
);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account) INCLUDE (amount_micro_usd, bucket);
CREATE INDEX ledger_entries_transaction_idx ON ledger_entries (transaction_id);

CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  total numeric;
BEGIN
  SELECT coalesce(sum(amount_micro_usd), 0) INTO total
    FROM ledger_entries WHERE transaction_id = NEW.transaction_id;
  IF total <> 0 THEN
    RAISE EXCEPTION 'ledger transaction % is unbalanced: its entries sum to %', NEW.transaction_id, total
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER ledger_entries_balanced
  AFTER INSERT ON ledger_entries
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

CREATE FUNCTION ledger_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the ledger is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ledger_entries_append_only
  BEFORE UPDATE OR DELETE ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER ledger_transactions_append_only
  BEFORE UPDATE OR DELETE ON ledger_transactions
  FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
`,
};
