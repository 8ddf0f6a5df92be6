import { randomUUID } from "node:crypto";
import type pg from "pg";
import { insufficientFunds } from "../errors/index.js";
import type { Logger } from "../log.js";
import { dollars } from "./pricing.js";

export interface BillingOptions {
  /** The provider's share of every charge, in basis points (9500 = 95%). */
  providerShareBps: number;
  /** The referrer's share of the platform fee, in basis points (2000 = 20%). */
  referralShareBps: number;
  /**
   * A reservation's lease: the owner renews it on its heartbeat while the request is in flight; one
   * not renewed for this long (its owner let go of it without settling) is refunded by recovery.
   */
  reservationTtlSeconds: number;
  /**
   * The hard bound on a reservation's life, whoever owns it: past it the owner stops renewing and
   * recovery refunds it, so a request its owner leaked (never settled) holds money at most this long.
   * A settlement that comes later still charges (late, from the balance): see billing_settle.
   */
  reservationMaxSeconds: number;
  /** How often this coordinator proves it is alive, renews its leases, and looks for orphaned reservations. */
  heartbeatMs: number;
  /** A coordinator silent this long is presumed dead; its open reservations are refunded. */
  ownerStaleMs: number;
}

export const DEFAULT_BILLING_OPTIONS: BillingOptions = {
  providerShareBps: 9_500,
  referralShareBps: 2_000,
  reservationTtlSeconds: 300,
  reservationMaxSeconds: 86_400,
  heartbeatMs: 5_000,
  ownerStaleMs: 30_000,
};

/** Attempts of a billing statement that PostgreSQL aborted to break a deadlock. */
const RETRIES = 5;

/** Settlements kept in memory while the database is unreachable; beyond, recovery refunds them. */
const MAX_DEFERRED_SETTLEMENTS = 100_000;
/** Heartbeats a deferred settlement may fail on (with the database answering) before it is given up. */
const DEFERRED_SETTLEMENT_ATTEMPTS = 5;

/** Attempts to settle a request before keeping it to write once the database answers. */
const SETTLE_ATTEMPTS = 3;

export interface Settlement {
  /** What the request costs before clamping to its reservation; 0 refunds everything. */
  chargeMicroUsd: bigint;
  /** The ledger account the provider's share is paid into. */
  providerAccount: string;
  promptTokens: number;
  completionTokens: number;
  /** completed, failed, cancelled, cut, recovered. */
  outcome: string;
}

/**
 * Moves money for requests: reserve() holds the worst case before routing (402 when the balance
 * cannot cover it), settle() charges actual usage clamped to the hold, refunds the rest and pays the
 * provider, the referrer and the platform, all idempotent by request id. The coordinator that made a
 * reservation keeps it alive (renews its lease) until it settles it, however long the request
 * streams; reservations left open by a coordinator that died, or whose lease lapsed, are refunded by
 * whichever coordinator notices (recover()).
 */
export class Billing {
  readonly instanceId = `coord_${randomUUID()}`;
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<number> | undefined;
  /** Reservations this coordinator made and has not settled, with when each lease is next renewed. */
  private readonly inFlight = new Map<string, number>();
  private renewing: Promise<void> | undefined;
  /** Settlements that could not be written (the database unreachable), by request id. */
  private readonly deferred = new Map<string, { settlement: Settlement; failures: number }>();
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: BillingOptions,
    private readonly log: Logger,
  ) {
    // Leases are renewed at half their length: a heartbeat must come round by then.
    if (options.heartbeatMs * 2 > options.reservationTtlSeconds * 1000) {
      throw new Error(
        `the billing heartbeat (${options.heartbeatMs} ms) must be at most half the reservation lease (${options.reservationTtlSeconds} s)`,
      );
    }
  }

  async start(): Promise<void> {
    await this.pool.query("INSERT INTO coordinator_instances (id) VALUES ($1)", [this.instanceId]);
    await this.recover();
    this.timer = setInterval(() => void this.tick(), this.options.heartbeatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.sweeping;
    if (
      this.deferred.size > 0 &&
      (await this.pool.query("SELECT 1").then(
        () => true,
        () => false,
      ))
    ) {
      await this.flushDeferred();
    }
    if (this.deferred.size > 0) {
      this.log.error(
        { unsettled: this.deferred.size },
        "settlements still waiting for the database at shutdown; left to recovery",
      );
    }
  }

  /** Holds `amount` for a request; throws 402 insufficient_quota when the balance cannot cover it. */
  async reserve(requestId: string, accountId: string, model: string, amount: bigint): Promise<void> {
    const { rows } = await this.query<{ r: string }>("SELECT billing_reserve($1, $2, $3, $4, $5, $6) AS r", [
      requestId,
      accountId,
      model,
      amount.toString(),
      this.instanceId,
      Math.min(this.options.reservationTtlSeconds, this.options.reservationMaxSeconds),
    ]);
    const result = rows[0]?.r;
    if (result === "ok") {
      // Kept alive from here until settled. (A reservation whose answer was lost is not tracked:
      // nobody will settle it, and its lease lapses into recovery.)
      this.inFlight.set(requestId, this.renewAt());
      return;
    }
    if (result === "insufficient") {
      const balance = await this.balance(accountId);
      throw insufficientFunds(
        `Your balance of ${dollars(balance)} does not cover this request's worst case of ${dollars(amount)} ` +
          "(its prompt plus max_tokens on every choice at the model's prices). Add credit or lower max_tokens.",
      );
    }
    throw new Error(`reservation for ${requestId} returned ${result}`);
  }

  /** Ends a reservation; settling one twice changes nothing ("already"). */
  async settle(requestId: string, s: Settlement): Promise<"settled" | "already" | "unknown"> {
    const { rows } = await this.query<{ r: "settled" | "already" | "unknown" }>(
      "SELECT billing_settle($1, $2, $3, $4, $5, $6, $7, $8) AS r",
      [
        requestId,
        s.chargeMicroUsd.toString(),
        s.providerAccount,
        this.options.providerShareBps,
        this.options.referralShareBps,
        s.promptTokens,
        s.completionTokens,
        s.outcome,
      ],
    );
    this.inFlight.delete(requestId);
    return rows[0]?.r ?? "unknown";
  }

  /**
   * Settles, trying a few times a moment apart, and keeps the settlement for a later heartbeat
   * (settleLater) when the database still does not answer: a request's money is never left to the
   * reservation's expiry because of a passing failure.
   */
  async settleOrDefer(requestId: string, s: Settlement): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.settle(requestId, s);
        return;
      } catch (e) {
        if (attempt >= SETTLE_ATTEMPTS) {
          this.log.warn({ err: e, requestId }, "settlement failed; retried once the database answers");
          this.settleLater(requestId, s);
          return;
        }
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
  }

  /**
   * Keeps a settlement that could not be written (the database unreachable) and writes it on a later
   * heartbeat, once the database answers again; its lease is renewed meanwhile. Without this the
   * reservation would stay open until the hard bound and then be refunded. Settling is idempotent by
   * request id, so a write that races another settlement changes nothing, and one that comes after
   * the refund of another coordinator that presumed this one dead charges late (billing_settle).
   */
  settleLater(requestId: string, s: Settlement): void {
    if (this.deferred.size >= MAX_DEFERRED_SETTLEMENTS && !this.deferred.has(requestId)) {
      this.log.error({ requestId }, "too many settlements waiting for the database; left to recovery");
      this.inFlight.delete(requestId); // its lease lapses into recovery
      return;
    }
    this.deferred.set(requestId, { settlement: s, failures: 0 });
  }

  /** Settlements waiting for the database. */
  get deferredSettlements(): number {
    return this.deferred.size;
  }

  /**
   * Writes the deferred settlements (called once the database answered). One that keeps failing
   * while the database answers is given up after a few heartbeats and left to recovery.
   */
  private flushDeferred(): Promise<void> {
    this.flushing ??= (async () => {
      let written = 0;
      for (const [requestId, entry] of [...this.deferred]) {
        try {
          await this.settle(requestId, entry.settlement);
          this.deferred.delete(requestId);
          written++;
        } catch (e) {
          if (++entry.failures < DEFERRED_SETTLEMENT_ATTEMPTS) continue;
          this.deferred.delete(requestId);
          this.inFlight.delete(requestId); // its lease lapses into recovery
          this.log.error(
            { requestId, err: e instanceof Error ? e.message : String(e) },
            "deferred settlement keeps failing; left to recovery",
          );
        }
      }
      if (written > 0) this.log.info({ written }, "wrote settlements deferred while the database was away");
    })().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  /** Spendable money of an account (credited plus earned), from the materialised balances. */
  async balance(accountId: string): Promise<bigint> {
    const { rows } = await this.pool.query<{ b: string }>(
      "SELECT coalesce(sum(amount_micro_usd), 0)::text AS b FROM balances WHERE account = $1",
      [accountId],
    );
    return BigInt(rows[0]?.b ?? "0");
  }

  /** Runs one billing statement, retrying when PostgreSQL broke a deadlock or a serialization conflict. */
  private async query<R extends pg.QueryResultRow>(
    sql: string,
    params: unknown[],
  ): Promise<pg.QueryResult<R>> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.pool.query<R>(sql, params);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if ((code !== "40P01" && code !== "40001") || attempt >= RETRIES) throw e;
        await new Promise((r) => setTimeout(r, attempt * 5 * Math.random()));
      }
    }
  }

  /** Reservations this coordinator keeps alive (made, not yet settled). */
  get reservationsInFlight(): number {
    return this.inFlight.size;
  }

  private renewAt(): number {
    // Renewed at half the lease, so a late heartbeat or two never lets a live lease lapse.
    return Date.now() + (this.options.reservationTtlSeconds * 1000) / 2;
  }

  /**
   * Renews the leases of this coordinator's reservations that are due, in one statement, never past
   * the hard bound (reservationMaxSeconds after the reservation was made). One no longer open (a
   * coordinator that presumed this one dead refunded it) is forgotten; its settlement charges late.
   */
  private renewLeases(): Promise<void> {
    this.renewing ??= (async () => {
      const now = Date.now();
      const due = [...this.inFlight].filter(([, at]) => at <= now).map(([id]) => id);
      if (due.length === 0) return;
      const { rows } = await this.pool.query<{ request_id: string }>(
        `UPDATE reservations
            SET expires_at = least(now() + make_interval(secs => $3), created_at + make_interval(secs => $4))
          WHERE request_id = ANY($1::text[]) AND owner_instance = $2 AND state = 'open'
         RETURNING request_id`,
        [due, this.instanceId, this.options.reservationTtlSeconds, this.options.reservationMaxSeconds],
      );
      const renewed = new Set(rows.map((r) => r.request_id));
      const next = this.renewAt();
      for (const id of due) {
        // Settled meanwhile (deleted from the map) or not open any more: nothing to keep alive.
        if (!this.inFlight.has(id)) continue;
        if (renewed.has(id)) this.inFlight.set(id, next);
        else this.inFlight.delete(id);
      }
    })().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  /**
   * Refunds open reservations whose coordinator is presumed dead (silent longer than ownerStaleMs, or
   * unknown) or whose lease lapsed: its owner stopped renewing it (it let go of the request without
   * settling, or the request reached the hard bound). Returns how many were refunded.
   */
  recover(): Promise<number> {
    this.sweeping ??= this.sweep().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  private async sweep(): Promise<number> {
    const { rows } = await this.pool.query<{ request_id: string }>(
      `SELECT r.request_id FROM reservations r
         LEFT JOIN coordinator_instances i ON i.id = r.owner_instance
        WHERE r.state = 'open'
          AND (r.expires_at < now()
               OR (r.owner_instance <> $1
                   AND (i.id IS NULL OR i.last_seen < now() - make_interval(secs => $2::double precision / 1000))))`,
      [this.instanceId, this.options.ownerStaleMs],
    );
    let refunded = 0;
    for (const { request_id } of rows) {
      const r = await this.settle(request_id, {
        chargeMicroUsd: 0n,
        providerAccount: "platform:fees",
        promptTokens: 0,
        completionTokens: 0,
        outcome: "recovered",
      });
      if (r === "settled") refunded++;
    }
    if (refunded > 0) this.log.warn({ refunded }, "refunded reservations left open by a stopped coordinator");
    return refunded;
  }

  private async tick(): Promise<void> {
    try {
      await this.pool.query("UPDATE coordinator_instances SET last_seen = now() WHERE id = $1", [
        this.instanceId,
      ]);
      // Before recovery looks for lapsed leases, so this coordinator never refunds its own live ones.
      await this.renewLeases();
      // The database answers again: write what it could not take meanwhile.
      if (this.deferred.size > 0) await this.flushDeferred();
      await this.recover();
    } catch (e) {
      this.log.warn({ err: e instanceof Error ? e.message : String(e) }, "billing heartbeat failed");
    }
  }
}
