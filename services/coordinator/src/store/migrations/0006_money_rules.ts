import type { Migration } from "./migration.js";

/**
 * Money rules (docs/ARCHITECTURE.md, "Money rules"):
 *
 * - No provider share between linked accounts. The provider's payout account and the consumer are
 *   linked when they are the same account or one referred the other (accounts.referrer_id, either
 *   way). The share is withheld into platform:withheld and recorded on the reservation; the
 *   consumer is charged as usual.
 * - Credited money (invites, administrative and initial credit: granted, never withdrawable) turns
 *   into withdrawable earned money only as the pay of an unrelated provider for serving. A referral
 *   share is not pay for serving, so the part of it that credited money funded is paid as credit.
 * - A settlement that arrives after recovery refunded its reservation (the owner was presumed dead,
 *   or a stream outlived the hard bound) still charges what was delivered, as far as the account's
 *   balance covers it, instead of leaving the request free.
 */
export const moneyRules: Migration = {
  version: 6,
  name: "money_rules",
  sql: `
ALTER TABLE reservations
  ADD COLUMN provider_withheld_micro_usd bigint,
  -- Set when recovery refunded the reservation; a later settlement by its owner then charges late.
  ADD COLUMN recovered_at timestamptz;

-- Whether money from p_consumer may not pay p_provider a provider share: the same account, or a
-- referral between them. Only direct links: referral trees are not walked, since accounts that
-- merely share a referrer are strangers who used the same public code.
CREATE FUNCTION billing_linked(p_consumer text, p_provider text) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT p_provider = p_consumer
      OR EXISTS (SELECT 1 FROM accounts WHERE id = p_consumer AND referrer_id = p_provider)
      OR EXISTS (SELECT 1 FROM accounts WHERE id = p_provider AND referrer_id = p_consumer)
$$;

-- Splits a charge (p_charge_earned of it paid from the consumer's earned money, the rest from
-- credited money) into the provider's share, the share withheld from a linked provider, the
-- referrer's share by bucket, and the platform's fee. Rounding favours the platform and credit.
CREATE FUNCTION billing_split(p_consumer text, p_provider text, p_charge bigint, p_charge_earned bigint,
                              p_provider_bps integer, p_referral_bps integer,
                              OUT provider_paid bigint, OUT withheld bigint, OUT referrer text,
                              OUT referral_credited bigint, OUT referral_earned bigint,
                              OUT platform_fee bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_share bigint := (p_charge * p_provider_bps) / 10000;
  v_fee bigint := p_charge - v_share;
  v_referral bigint := 0;
BEGIN
  IF billing_linked(p_consumer, p_provider) THEN
    provider_paid := 0;
    withheld := v_share;
  ELSE
    provider_paid := v_share;
    withheld := 0;
  END IF;
  SELECT a.referrer_id INTO referrer FROM accounts a WHERE a.id = p_consumer;
  IF referrer IS NOT NULL THEN
    v_referral := (v_fee * p_referral_bps) / 10000;
  END IF;
  referral_earned := CASE WHEN p_charge > 0
                          THEN floor(v_referral::numeric * p_charge_earned / p_charge)::bigint ELSE 0 END;
  referral_credited := v_referral - referral_earned;
  platform_fee := v_fee - v_referral;
END;
$$;

-- Ends a reservation: charges p_charge (clamped to the hold), refunds the rest to the buckets it came
-- from, and pays the shares billing_split computes. p_charge 0 refunds all. Returns 'settled',
-- 'already' (settled before: nothing changes) or 'unknown'. Settling a reservation that recovery
-- refunded (outcome 'recovered') charges late, once: see billing_settle_late.
CREATE OR REPLACE FUNCTION billing_settle(p_request text, p_charge bigint, p_provider_account text,
                                          p_provider_bps integer, p_referral_bps integer,
                                          p_prompt_tokens integer, p_completion_tokens integer, p_outcome text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  r reservations%ROWTYPE;
  v_charge bigint;
  v_charge_credited bigint;
  s record;
  v_txn bigint;
BEGIN
  SELECT * INTO r FROM reservations WHERE request_id = p_request FOR UPDATE;
  IF NOT FOUND THEN
    RETURN 'unknown';
  END IF;
  IF r.state <> 'open' THEN
    IF r.outcome = 'recovered' AND p_outcome <> 'recovered' AND p_charge > 0 THEN
      RETURN billing_settle_late(p_request, p_charge, p_provider_account, p_provider_bps, p_referral_bps,
                                 p_prompt_tokens, p_completion_tokens, p_outcome);
    END IF;
    RETURN 'already';
  END IF;
  v_charge := greatest(0, least(p_charge, r.amount_micro_usd));
  v_charge_credited := least(r.credited_micro_usd, v_charge);
  SELECT * INTO s FROM billing_split(r.account_id, p_provider_account, v_charge, v_charge - v_charge_credited,
                                     p_provider_bps, p_referral_bps);
  INSERT INTO ledger_transactions (kind, idempotency_key, note)
    VALUES ('settlement', p_request || ':settle', p_outcome) RETURNING id INTO v_txn;
  INSERT INTO ledger_entries (transaction_id, account, amount_micro_usd, bucket)
    SELECT v_txn, a, amt, b FROM (VALUES
      ('platform:reservations', -r.credited_micro_usd, 'credited'),
      ('platform:reservations', -r.earned_micro_usd, 'earned'),
      (r.account_id, r.credited_micro_usd - v_charge_credited, 'credited'),
      (r.account_id, r.earned_micro_usd - (v_charge - v_charge_credited), 'earned'),
      (p_provider_account, s.provider_paid, 'earned'),
      ('platform:withheld', s.withheld, 'earned'),
      (s.referrer, s.referral_credited, 'credited'),
      (s.referrer, s.referral_earned, 'earned'),
      ('platform:fees', s.platform_fee, 'earned')) AS e(a, amt, b)
    WHERE amt <> 0 AND a IS NOT NULL
    -- Balance rows are always locked in one order, so concurrent settlements cannot deadlock.
    ORDER BY a, b;
  UPDATE reservations SET state = 'settled', settled_at = now(), charged_micro_usd = v_charge,
         prompt_tokens = p_prompt_tokens, completion_tokens = p_completion_tokens,
         provider_account = p_provider_account, outcome = p_outcome,
         provider_paid_micro_usd = s.provider_paid, provider_withheld_micro_usd = s.withheld,
         referrer_id = s.referrer, referral_paid_micro_usd = s.referral_credited + s.referral_earned,
         recovered_at = CASE WHEN p_outcome = 'recovered' THEN now() END
   WHERE request_id = p_request;
  RETURN 'settled';
END;
$$;

-- The owner's settlement of a reservation recovery refunded (called by billing_settle with the row
-- locked): the hold is gone, so the charge is taken from the account's balance now, credited money
-- first, as far as it covers it (a balance never goes negative), and split as usual. Applied once:
-- the outcome stops being 'recovered'. The account row is locked as billing_reserve locks it, so a
-- reservation cannot spend the same money at the same time.
CREATE FUNCTION billing_settle_late(p_request text, p_charge bigint, p_provider_account text,
                                    p_provider_bps integer, p_referral_bps integer,
                                    p_prompt_tokens integer, p_completion_tokens integer, p_outcome text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  r reservations%ROWTYPE;
  v_credited bigint;
  v_earned bigint;
  v_take_credited bigint;
  v_take_earned bigint;
  v_charge bigint;
  s record;
  v_txn bigint;
BEGIN
  SELECT * INTO r FROM reservations WHERE request_id = p_request FOR UPDATE;
  PERFORM 1 FROM accounts WHERE id = r.account_id FOR UPDATE;
  SELECT coalesce(sum(amount_micro_usd) FILTER (WHERE bucket = 'credited'), 0),
         coalesce(sum(amount_micro_usd) FILTER (WHERE bucket = 'earned'), 0)
    INTO v_credited, v_earned FROM balances WHERE account = r.account_id;
  v_charge := greatest(0, least(p_charge, r.amount_micro_usd));
  v_take_credited := least(v_credited, v_charge);
  v_take_earned := least(v_earned, v_charge - v_take_credited);
  v_charge := v_take_credited + v_take_earned;
  SELECT * INTO s FROM billing_split(r.account_id, p_provider_account, v_charge, v_take_earned,
                                     p_provider_bps, p_referral_bps);
  IF v_charge > 0 THEN
    INSERT INTO ledger_transactions (kind, idempotency_key, note)
      VALUES ('late_settlement', p_request || ':late', p_outcome) RETURNING id INTO v_txn;
    INSERT INTO ledger_entries (transaction_id, account, amount_micro_usd, bucket)
      SELECT v_txn, a, amt, b FROM (VALUES
        (r.account_id, -v_take_credited, 'credited'),
        (r.account_id, -v_take_earned, 'earned'),
        (p_provider_account, s.provider_paid, 'earned'),
        ('platform:withheld', s.withheld, 'earned'),
        (s.referrer, s.referral_credited, 'credited'),
        (s.referrer, s.referral_earned, 'earned'),
        ('platform:fees', s.platform_fee, 'earned')) AS e(a, amt, b)
      WHERE amt <> 0 AND a IS NOT NULL
      ORDER BY a, b;
  END IF;
  UPDATE reservations SET settled_at = now(), charged_micro_usd = v_charge,
         prompt_tokens = p_prompt_tokens, completion_tokens = p_completion_tokens,
         provider_account = p_provider_account, outcome = p_outcome,
         provider_paid_micro_usd = s.provider_paid, provider_withheld_micro_usd = s.withheld,
         referrer_id = s.referrer, referral_paid_micro_usd = s.referral_credited + s.referral_earned
   WHERE request_id = p_request;
  RETURN 'settled';
END;
$$;
`,
};
