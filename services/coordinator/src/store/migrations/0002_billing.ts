import type { Migration } from "./migration.js";

/**
 * Billing: balances of user and provider accounts materialised from the ledger (kept by trigger,
 * checked by `ledger verify`; system accounts "platform:…" are summed from their entries instead, so
 * that every request does not contend on their rows),
 * reservations, referrers, coordinator instances (to find reservations a crashed coordinator left
 * open), and the reserve/settle functions that move money in one round trip each.
 */
export const billing: Migration = {
  version: 2,
  name: "billing",
  sql: `
CREATE TABLE balances (
  account           text NOT NULL,
  bucket            text NOT NULL CHECK (bucket IN ('credited', 'earned')),
  amount_micro_usd  bigint NOT NULL,
  PRIMARY KEY (account, bucket),
  -- A user's money can never go below zero, whatever the interleaving of requests.
  CONSTRAINT user_balances_not_negative CHECK (account NOT LIKE 'acct\\_%' OR amount_micro_usd >= 0)
);
INSERT INTO balances (account, bucket, amount_micro_usd)
  SELECT account, bucket, sum(amount_micro_usd) FROM ledger_entries
   WHERE account NOT LIKE 'platform:%' GROUP BY account, bucket;

-- UPDATE first: an INSERT ... ON CONFLICT would check the constraint against the proposed row (a
-- negative amount) before turning into an update.
CREATE FUNCTION ledger_apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.account LIKE 'platform:%' THEN
    RETURN NULL;
  END IF;
  UPDATE balances SET amount_micro_usd = amount_micro_usd + NEW.amount_micro_usd
   WHERE account = NEW.account AND bucket = NEW.bucket;
  IF NOT FOUND THEN
    INSERT INTO balances (account, bucket, amount_micro_usd) VALUES (NEW.account, NEW.bucket, NEW.amount_micro_usd)
      ON CONFLICT (account, bucket) DO UPDATE SET amount_micro_usd = balances.amount_micro_usd + EXCLUDED.amount_micro_usd;
  END IF;
  RETURN NULL;
END;
$$;
CREATE TRIGGER ledger_entries_update_balances
  AFTER INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION ledger_apply_entry();

ALTER TABLE accounts ADD COLUMN referrer_id text REFERENCES accounts (id);
ALTER TABLE accounts ADD CONSTRAINT accounts_no_self_referral CHECK (referrer_id IS NULL OR referrer_id <> id);

CREATE TABLE coordinator_instances (
  id         text PRIMARY KEY,
  started_at timestamptz NOT NULL DEFAULT now(),
  last_seen  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservations (
  request_id         text PRIMARY KEY,
  account_id         text NOT NULL REFERENCES accounts (id),
  model              text NOT NULL,
  owner_instance     text NOT NULL,
  amount_micro_usd   bigint NOT NULL CHECK (amount_micro_usd > 0),
  -- How much of the hold came from each bucket, so a refund restores each.
  credited_micro_usd bigint NOT NULL CHECK (credited_micro_usd >= 0),
  earned_micro_usd   bigint NOT NULL CHECK (earned_micro_usd >= 0),
  state              text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'settled')),
  created_at         timestamptz NOT NULL DEFAULT now(),
  expires_at         timestamptz NOT NULL,
  settled_at         timestamptz,
  charged_micro_usd  bigint,
  prompt_tokens      integer,
  completion_tokens  integer,
  provider_account   text,
  outcome            text,
  -- The shares settlement paid out, for earnings and referral reports.
  provider_paid_micro_usd bigint,
  referrer_id        text,
  referral_paid_micro_usd bigint,
  CHECK (credited_micro_usd + earned_micro_usd = amount_micro_usd)
);
-- Open reservations: what an account holds, and what recovery looks for.
CREATE INDEX reservations_open_idx ON reservations (account_id, owner_instance) INCLUDE (amount_micro_usd)
  WHERE state = 'open';
-- Keyset pages of an account's requests and of a provider's settlements; referral totals.
CREATE INDEX reservations_account_page_idx ON reservations (account_id, created_at DESC, request_id DESC);
CREATE INDEX reservations_provider_page_idx ON reservations (provider_account, settled_at DESC, request_id DESC)
  INCLUDE (provider_paid_micro_usd) WHERE state = 'settled';
CREATE INDEX reservations_referrer_idx ON reservations (referrer_id) INCLUDE (referral_paid_micro_usd)
  WHERE referrer_id IS NOT NULL;

-- Holds the worst case of a request: moves it from the account (credited money first) to
-- platform:reservations. Returns 'ok', 'insufficient' (nothing changes) or 'duplicate'.
CREATE FUNCTION billing_reserve(p_request text, p_account text, p_model text, p_amount bigint,
                                p_owner text, p_ttl_seconds integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_credited bigint;
  v_earned bigint;
  v_take_credited bigint;
  v_take_earned bigint;
  v_txn bigint;
BEGIN
  PERFORM 1 FROM accounts WHERE id = p_account AND NOT disabled FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'account % does not exist or is disabled', p_account USING ERRCODE = 'no_data_found';
  END IF;
  SELECT coalesce(sum(amount_micro_usd) FILTER (WHERE bucket = 'credited'), 0),
         coalesce(sum(amount_micro_usd) FILTER (WHERE bucket = 'earned'), 0)
    INTO v_credited, v_earned FROM balances WHERE account = p_account;
  IF v_credited + v_earned < p_amount THEN
    RETURN 'insufficient';
  END IF;
  INSERT INTO ledger_transactions (kind, idempotency_key, note)
    VALUES ('reservation', p_request || ':reserve', p_model)
    ON CONFLICT (idempotency_key) DO NOTHING RETURNING id INTO v_txn;
  IF v_txn IS NULL THEN
    RETURN 'duplicate';
  END IF;
  v_take_credited := least(v_credited, p_amount);
  v_take_earned := p_amount - v_take_credited;
  INSERT INTO ledger_entries (transaction_id, account, amount_micro_usd, bucket)
    SELECT v_txn, a, amt, b FROM (VALUES
      (p_account, -v_take_credited, 'credited'), ('platform:reservations', v_take_credited, 'credited'),
      (p_account, -v_take_earned, 'earned'), ('platform:reservations', v_take_earned, 'earned')) AS e(a, amt, b)
    WHERE amt <> 0 ORDER BY a, b;
  INSERT INTO reservations (request_id, account_id, model, owner_instance, amount_micro_usd,
                            credited_micro_usd, earned_micro_usd, expires_at)
    VALUES (p_request, p_account, p_model, p_owner, p_amount, v_take_credited, v_take_earned,
            now() + make_interval(secs => p_ttl_seconds));
  RETURN 'ok';
END;
$$;

-- Ends a reservation: charges p_charge (clamped to the hold), refunds the rest to the buckets it came
-- from, pays p_provider_bps of the charge to the provider's account, p_referral_bps of the remaining
-- fee to the consumer's referrer if any, and the rest to platform:fees. p_charge 0 refunds all.
-- Returns 'settled', 'already' (settled before: nothing changes) or 'unknown'.
CREATE FUNCTION billing_settle(p_request text, p_charge bigint, p_provider_account text,
                               p_provider_bps integer, p_referral_bps integer,
                               p_prompt_tokens integer, p_completion_tokens integer, p_outcome text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  r reservations%ROWTYPE;
  v_charge bigint;
  v_charge_credited bigint;
  v_provider bigint;
  v_fee bigint;
  v_referral bigint := 0;
  v_referrer text;
  v_txn bigint;
BEGIN
  SELECT * INTO r FROM reservations WHERE request_id = p_request FOR UPDATE;
  IF NOT FOUND THEN
    RETURN 'unknown';
  END IF;
  IF r.state <> 'open' THEN
    RETURN 'already';
  END IF;
  v_charge := greatest(0, least(p_charge, r.amount_micro_usd));
  v_charge_credited := least(r.credited_micro_usd, v_charge);
  v_provider := (v_charge * p_provider_bps) / 10000;
  v_fee := v_charge - v_provider;
  SELECT referrer_id INTO v_referrer FROM accounts WHERE id = r.account_id;
  IF v_referrer IS NOT NULL THEN
    v_referral := (v_fee * p_referral_bps) / 10000;
  END IF;
  INSERT INTO ledger_transactions (kind, idempotency_key, note)
    VALUES ('settlement', p_request || ':settle', p_outcome) RETURNING id INTO v_txn;
  INSERT INTO ledger_entries (transaction_id, account, amount_micro_usd, bucket)
    SELECT v_txn, a, amt, b FROM (VALUES
      ('platform:reservations', -r.credited_micro_usd, 'credited'),
      ('platform:reservations', -r.earned_micro_usd, 'earned'),
      (r.account_id, r.credited_micro_usd - v_charge_credited, 'credited'),
      (r.account_id, r.earned_micro_usd - (v_charge - v_charge_credited), 'earned'),
      (p_provider_account, v_provider, 'earned'),
      (v_referrer, v_referral, 'earned'),
      ('platform:fees', v_fee - v_referral, 'earned')) AS e(a, amt, b)
    WHERE amt <> 0 AND a IS NOT NULL
    -- Balance rows are always locked in one order, so concurrent settlements cannot deadlock.
    ORDER BY a, b;
  UPDATE reservations SET state = 'settled', settled_at = now(), charged_micro_usd = v_charge,
         prompt_tokens = p_prompt_tokens, completion_tokens = p_completion_tokens,
         provider_account = p_provider_account, outcome = p_outcome,
         provider_paid_micro_usd = v_provider, referrer_id = v_referrer, referral_paid_micro_usd = v_referral
   WHERE request_id = p_request;
  RETURN 'settled';
END;
$$;
`,
};
