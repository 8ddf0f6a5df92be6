import type pg from "pg";
import type { Logger } from "../log.js";
import { type DirectoryEntry, type DirectoryRow, entryFromRow } from "./directory-row.js";
import { DIRECTORY_CHANNEL } from "./directory-writer.js";
import type { Notifications } from "./notifications.js";

export interface DirectoryReaderOptions {
  /** This coordinator's instance id: its own rows are left out (its sessions are read live). */
  instanceId: string;
  /** The directory is re-read this often even without a NOTIFY, and a lost LISTEN is re-opened. */
  pollMs: number;
  /** Rows of an instance whose liveness row is older than this are ignored, and deleted. */
  staleMs: number;
}

/** Told the other replicas' live providers after every read of the directory. */
export type DirectoryListener = (remote: DirectoryEntry[]) => void;

/**
 * A cached view of the other replicas' providers in the directory, for the answers every replica
 * must give alike (model list, attestations, admin listing) and for forwarding. Re-read at once on
 * every NOTIFY (Notifications' LISTEN connection); polling every pollMs is the backstop for a NOTIFY
 * lost with that connection, which the poll also re-opens. Rows of instances whose liveness went stale are ignored
 * and deleted here (whichever replica sees them first). Memory: one entry per provider connected to
 * the cluster, a number each replica's connection caps bound.
 */
export class DirectoryReader {
  /** The last read, each entry with when (this process's clock) its owner's liveness goes stale. */
  private entries: ReadonlyArray<{ entry: DirectoryEntry; staleAt: number }> = [];
  private timer: NodeJS.Timeout | undefined;
  private reading: Promise<void> | undefined;
  private readonly unsubscribe: Array<() => void> = [];
  private again = false;
  private stopped = false;
  private readonly listeners = new Set<DirectoryListener>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly notifications: Notifications,
    private readonly options: DirectoryReaderOptions,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe.push(
      this.notifications.on(DIRECTORY_CHANNEL, () => void this.refresh()),
      // Changes announced while no connection listened are read now.
      this.notifications.onReconnect(() => void this.refresh()),
    );
    await this.notifications.ensure();
    await this.refresh();
    this.timer = setInterval(() => void this.poll(), this.options.pollMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    for (const unsubscribe of this.unsubscribe.splice(0)) unsubscribe();
    await this.reading;
  }

  /** Calls `listener` after every read from now on; returns the unsubscribe. */
  subscribe(listener: DirectoryListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The other replicas' live providers, as last read (sorted by provider id). */
  remote(): DirectoryEntry[] {
    const now = Date.now();
    return this.entries.filter((e) => e.staleAt > now).map((e) => e.entry);
  }

  /** Re-reads the directory; a call while a read runs makes it read once more afterwards. */
  refresh(): Promise<void> {
    if (this.reading) {
      this.again = true;
      return this.reading;
    }
    this.reading = (async () => {
      try {
        do {
          this.again = false;
          await this.read();
        } while (this.again && !this.stopped);
      } catch (e) {
        // The last view stands until the database answers again.
        this.log.warn({ err: (e as Error).message }, "could not read the provider directory");
      } finally {
        this.reading = undefined;
      }
    })();
    return this.reading;
  }

  private async read(): Promise<void> {
    // How long each owner stays live is measured on the database's clock and kept as a duration, so
    // an owner that stops heartbeating drops out on time between reads, whatever the clocks' skew.
    const started = Date.now();
    const { rows } = await this.pool.query<DirectoryRow & { live_ms: number }>(
      `SELECT d.*,
              extract(epoch FROM i.last_seen - now())::double precision * 1000 + $2::double precision AS live_ms
         FROM provider_directory d
         JOIN coordinator_instances i ON i.id = d.instance_id
        WHERE d.instance_id <> $1
          AND i.last_seen >= now() - make_interval(secs => $2::double precision / 1000)
        ORDER BY d.provider_id`,
      [this.options.instanceId, this.options.staleMs],
    );
    this.entries = rows.map((r) => ({ entry: entryFromRow(r), staleAt: started + r.live_ms }));
    if (this.listeners.size > 0) {
      const remote = this.remote();
      for (const listener of this.listeners) listener(remote);
    }
  }

  private async poll(): Promise<void> {
    if (this.stopped) return;
    await this.notifications.ensure();
    try {
      // Another replica's rows once it looks dead: it cannot delete them itself.
      const { rowCount } = await this.pool.query(
        `WITH gone AS (
           DELETE FROM provider_directory d
            WHERE d.instance_id <> $1
              AND NOT EXISTS (SELECT 1 FROM coordinator_instances i
                               WHERE i.id = d.instance_id
                                 AND i.last_seen >= now() - make_interval(secs => $2::double precision / 1000))
           RETURNING 1)
         SELECT pg_notify($3, '') FROM (SELECT count(*) AS n FROM gone) g WHERE g.n > 0`,
        [this.options.instanceId, this.options.staleMs, DIRECTORY_CHANNEL],
      );
      if (rowCount) this.log.info("removed directory rows of a coordinator presumed dead");
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "could not sweep stale directory rows");
    }
    await this.refresh();
  }
}
