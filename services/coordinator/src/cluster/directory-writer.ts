import type pg from "pg";
import type { Logger } from "../log.js";
import type { ProviderRegistry } from "../routing/provider-registry.js";
import type { TrustManager } from "../trust/trust-manager.js";
import { type DirectoryEntry, entryOf } from "./directory-row.js";

/** The channel every change to provider_directory is announced on (no payload: readers re-read). */
export const DIRECTORY_CHANNEL = "provider_directory";

export interface DirectoryWriterOptions {
  /** This coordinator's coordinator_instances id (billing's, when billing runs). */
  instanceId: string;
  /** Where other replicas reach this one (see advertise()). */
  advertiseUrl: string;
  /** Changes other than a session opening or ending are written at most this often. */
  flushMs: number;
  /**
   * Every row is rewritten this often (the liveness heartbeat's period): another replica deletes the
   * rows of an instance it saw stale, and a live one that was only slow must get them back.
   */
  refreshMs: number;
  /**
   * Whether the writer records the instance alive itself: billing does when it runs; without it
   * nothing else would, and every replica would ignore this one's rows.
   */
  ownsLiveness: boolean;
}

/**
 * Keeps this coordinator's rows of the provider directory equal to its sessions: a session that
 * opens or ends is written at once; free slots, trust and drain state are compared with what was
 * last written every flushMs and written only when they differ, so a busy provider costs at most one
 * write a period, whatever its request rate. Writes that fail (the database unreachable) are retried
 * on the next period. Memory: one serialized entry per local session, and a pending delete per
 * session ended since the last successful write.
 */
export class DirectoryWriter {
  /** The entry last written for each provider, serialized for comparison. */
  private readonly written = new Map<string, string>();
  private readonly dirty = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private flushing: Promise<void> | undefined;
  private again = false;
  private forceNext = false;
  private lastRefresh = Date.now();
  private stopped = false;
  private advertiseUrl: string;

  constructor(
    private readonly pool: pg.Pool,
    private readonly registry: ProviderRegistry,
    private readonly trust: TrustManager | undefined,
    private readonly options: DirectoryWriterOptions,
    private readonly log: Logger,
  ) {
    this.advertiseUrl = options.advertiseUrl;
  }

  /**
   * Sets the address recorded with this replica's providers, once it is known (a listen port of 0 is
   * chosen when the server starts, before any provider can connect).
   */
  advertise(url: string): void {
    this.advertiseUrl = url;
  }

  get instanceId(): string {
    return this.options.instanceId;
  }

  async start(): Promise<void> {
    if (this.options.ownsLiveness) {
      await this.pool.query(
        `INSERT INTO coordinator_instances (id) VALUES ($1)
           ON CONFLICT (id) DO UPDATE SET last_seen = now()`,
        [this.options.instanceId],
      );
    }
    this.unsubscribe = this.registry.subscribe((e) => {
      if (e.kind === "capacity") return; // compared on the next period
      this.dirty.add(e.provider.id);
      void this.flush();
    });
    this.timer = setInterval(() => this.tick(), this.options.flushMs);
    this.timer.unref();
  }

  /** The entry of a local session as it stands now (what the next write would record). */
  entryOf(providerId: string): DirectoryEntry | undefined {
    const handle = this.registry.get(providerId);
    if (!handle) return undefined;
    return entryOf(handle, this.trust?.get(providerId), {
      instanceId: this.options.instanceId,
      advertiseUrl: this.advertiseUrl,
    });
  }

  /** Writes whatever changed; resolves once the database has it (or the write failed and was logged). */
  flush(force = false): Promise<void> {
    // A refresh asked for while a write runs is kept for the next one: it renews the liveness row.
    this.forceNext ||= force;
    if (this.flushing) {
      this.again = true;
      return this.flushing;
    }
    this.flushing = (async () => {
      try {
        do {
          this.again = false;
          const forced = this.forceNext;
          this.forceNext = false;
          await this.write(forced);
        } while (this.again && !this.stopped);
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  /** Stops writing and deletes this instance's rows (a clean shutdown: no reader waits for staleness). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.unsubscribe?.();
    await this.flushing;
    let client: pg.PoolClient | undefined;
    try {
      client = await checkOut(this.pool);
      await client.query("BEGIN");
      await client.query("DELETE FROM provider_directory WHERE instance_id = $1", [this.options.instanceId]);
      await client.query("SELECT pg_notify($1, '')", [DIRECTORY_CHANNEL]);
      await client.query("COMMIT");
      client.release();
    } catch (e) {
      await client?.query("ROLLBACK").catch(() => undefined);
      client?.release(e as Error);
      // Left to the other replicas: they ignore and delete the rows once this instance looks stale.
      this.log.warn({ err: (e as Error).message }, "could not delete this coordinator's directory rows");
    }
    this.written.clear();
  }

  private tick(): void {
    for (const handle of this.registry.all()) this.dirty.add(handle.id);
    const force = Date.now() - this.lastRefresh >= this.options.refreshMs;
    if (force) {
      this.lastRefresh = Date.now();
      for (const id of this.written.keys()) this.dirty.add(id);
    }
    void this.flush(force);
  }

  private async write(force: boolean): Promise<void> {
    if (this.stopped) return;
    const ids = [...this.dirty];
    this.dirty.clear();
    const upserts: Array<{ entry: DirectoryEntry; key: string; changed: boolean }> = [];
    const deletes: string[] = [];
    for (const id of ids) {
      const entry = this.entryOf(id);
      if (entry) {
        const key = JSON.stringify(entry);
        const changed = this.written.get(id) !== key;
        if (force || changed) upserts.push({ entry, key, changed });
      } else if (this.written.has(id)) {
        deletes.push(id);
      }
    }
    if (upserts.length === 0 && deletes.length === 0 && !(force && this.options.ownsLiveness)) return;
    const client = await checkOut(this.pool).catch((e: Error) => e);
    if (client instanceof Error) {
      this.retry(ids, client);
      return;
    }
    try {
      await client.query("BEGIN");
      if (force && this.options.ownsLiveness) {
        await client.query("UPDATE coordinator_instances SET last_seen = now() WHERE id = $1", [
          this.options.instanceId,
        ]);
      }
      let changed = deletes.length > 0;
      if (deletes.length > 0) {
        await client.query(
          "DELETE FROM provider_directory WHERE provider_id = ANY($1) AND instance_id = $2",
          [deletes, this.options.instanceId],
        );
      }
      if (upserts.length > 0) {
        const { rows } = await client.query<{ inserted: boolean }>(UPSERT, [
          JSON.stringify(upserts.map((u) => toRecord(u.entry))),
        ]);
        // Rows a refresh rewrote unchanged tell no one; a real change does, and so does a row that had
        // to be inserted again (another replica deleted it, having seen this one stale).
        changed ||= upserts.some((u) => u.changed) || rows.some((r) => r.inserted);
      }
      if (changed) await client.query("SELECT pg_notify($1, '')", [DIRECTORY_CHANNEL]);
      await client.query("COMMIT");
      for (const id of deletes) this.written.delete(id);
      for (const { entry, key } of upserts) this.written.set(entry.providerId, key);
      client.release();
    } catch (e) {
      await client.query("ROLLBACK").catch(() => undefined);
      // Not returned to the pool: the connection may be the one that failed.
      client.release(e as Error);
      this.retry(ids, e as Error);
    }
  }

  private retry(ids: string[], e: Error): void {
    for (const id of ids) this.dirty.add(id);
    this.log.warn({ err: e.message }, "provider directory write failed; retrying next period");
  }
}

/**
 * A pooled client for a transaction. The pool handles errors of idle clients only: one whose server
 * goes away while it is checked out would emit an unhandled "error" and crash the process; the
 * failure reaches the transaction's queries anyway.
 */
async function checkOut(pool: pg.Pool): Promise<pg.PoolClient> {
  const client = await pool.connect();
  const ignore = () => undefined;
  client.on("error", ignore);
  const release = client.release;
  // Released clients go back to the pool (and its own listener): this one must not pile up.
  client.release = (err?: Error | boolean) => {
    client.off("error", ignore);
    client.release = release;
    release.call(client, err);
  };
  return client;
}

function toRecord(e: DirectoryEntry): Record<string, unknown> {
  return {
    provider_id: e.providerId,
    instance_id: e.instanceId,
    advertise_url: e.advertiseUrl,
    machine_id: e.machineId,
    models: e.models,
    max_batch: e.maxBatch,
    free_slots: e.freeSlots,
    trust_level: e.trustLevel,
    trust_reasons: e.trustReasons,
    attested: e.attested,
    routable: e.routable,
    draining: e.draining,
    daemon_version: e.daemonVersion,
    chip: e.chip,
    attestation: e.attestation ?? null,
    dispatch: e.dispatch ?? {},
    connected_at: new Date(e.connectedAt).toISOString(),
  };
}

/** One statement for any number of rows; xmax = 0 tells an inserted row from an updated one. */
const UPSERT = `
INSERT INTO provider_directory AS d
  (provider_id, instance_id, advertise_url, machine_id, models, max_batch, free_slots, trust_level,
   trust_reasons, attested, routable, draining, daemon_version, chip, attestation, dispatch, connected_at,
   updated_at)
SELECT provider_id, instance_id, advertise_url, machine_id, models, max_batch, free_slots, trust_level,
       trust_reasons, attested, routable, draining, daemon_version, chip, attestation, dispatch,
       connected_at, now()
  FROM jsonb_to_recordset($1::jsonb) AS r(
    provider_id text, instance_id text, advertise_url text, machine_id text, models jsonb,
    max_batch integer, free_slots integer, trust_level text, trust_reasons text[], attested boolean,
    routable boolean, draining boolean, daemon_version text, chip text, attestation jsonb,
    dispatch jsonb, connected_at timestamptz)
ON CONFLICT (provider_id) DO UPDATE SET
  advertise_url = EXCLUDED.advertise_url, machine_id = EXCLUDED.machine_id, models = EXCLUDED.models,
  max_batch = EXCLUDED.max_batch, free_slots = EXCLUDED.free_slots, trust_level = EXCLUDED.trust_level,
  trust_reasons = EXCLUDED.trust_reasons, attested = EXCLUDED.attested, routable = EXCLUDED.routable,
  draining = EXCLUDED.draining, daemon_version = EXCLUDED.daemon_version, chip = EXCLUDED.chip,
  attestation = EXCLUDED.attestation, dispatch = EXCLUDED.dispatch, updated_at = now()
  WHERE d.instance_id = EXCLUDED.instance_id
RETURNING (xmax = 0) AS inserted`;
