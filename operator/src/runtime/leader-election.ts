import type { Logger } from "pino";
import { LEASES } from "../resource-types.js";
import { isAlreadyExists, isConflict, isNotFound, type KubeApi, type KubeObject } from "./kube-api.js";

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  /** This process's identity (the pod name, plus a random suffix against restarts with one name). */
  identity: string;
  /** How long a lease holds without renewal before others may take it (client-go: 15 s). */
  leaseDurationMs: number;
  /** A leader that could not renew for this long stops leading (client-go: 10 s); below leaseDuration. */
  renewDeadlineMs: number;
  /** How often candidates try to acquire and the leader renews (client-go: 2 s). */
  retryPeriodMs: number;
}

interface Lease extends KubeObject {
  spec?: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

/**
 * Lease-based leader election with client-go's rules: a candidate takes the lease only when its
 * holder has not renewed it for a lease duration as measured by this process's own clock since it
 * last saw the lease change (never by comparing clocks across machines); the leader renews every
 * retry period, and gives up leading when it could not renew within the renew deadline, so that it
 * has stopped before anyone else can acquire. Every write carries the resourceVersion it read: of
 * two candidates racing for an expired lease, one gets 409 and stays a follower.
 */
export class LeaderElector {
  private leading = false;
  private observedRecord = "";
  private observedAt = 0;
  private lastRenew = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly api: KubeApi,
    private readonly options: LeaderElectionOptions,
    private readonly log: Logger,
    private readonly callbacks: { onStartedLeading: () => void; onStoppedLeading: () => void },
  ) {
    if (options.renewDeadlineMs >= options.leaseDurationMs) {
      throw new Error("the renew deadline must be shorter than the lease duration");
    }
    if (options.retryPeriodMs >= options.renewDeadlineMs) {
      throw new Error("the retry period must be shorter than the renew deadline");
    }
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.stopped = false;
    this.run();
  }

  /** Stops campaigning; a leader releases the lease so a successor need not wait for it to expire. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    // A renewal in flight would write this process back as the holder after the release below.
    await this.ticking;
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.api.get<Lease>(LEASES, this.options.namespace, this.options.name);
      if (lease.spec?.holderIdentity === this.options.identity) {
        const now = microTime(new Date());
        await this.api.update(LEASES, {
          ...lease,
          spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1, renewTime: now },
        });
        this.log.info({ lease: this.options.name }, "released the leader lease");
      }
    } catch (error) {
      this.log.warn(
        { err: (error as Error).message },
        "could not release the leader lease; it expires by itself",
      );
    }
  }

  /** The try in flight, if any: stop() waits for it. */
  private ticking: Promise<void> | undefined;

  private run(): void {
    this.ticking = this.tick().finally(() => {
      this.ticking = undefined;
    });
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    let renewed = false;
    try {
      renewed = await this.tryAcquireOrRenew();
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, "leader election: could not read or write the lease");
    }
    if (this.stopped) return;
    const now = Date.now();
    if (renewed) {
      this.lastRenew = now;
      if (!this.leading) {
        this.leading = true;
        this.log.info({ identity: this.options.identity }, "became the leader");
        this.callbacks.onStartedLeading();
      }
    } else if (this.leading && now - this.lastRenew >= this.options.renewDeadlineMs) {
      this.leading = false;
      this.log.error({ identity: this.options.identity }, "lost the leader lease");
      this.callbacks.onStoppedLeading();
      return;
    }
    this.timer = setTimeout(() => this.run(), this.options.retryPeriodMs);
  }

  /** True when this process holds the lease after the call. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    const now = new Date();
    const spec = {
      holderIdentity: identity,
      leaseDurationSeconds: Math.ceil(this.options.leaseDurationMs / 1000),
      renewTime: microTime(now),
    };
    let lease: Lease;
    try {
      lease = await this.api.get<Lease>(LEASES, namespace, name);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      try {
        await this.api.create<Lease>(LEASES, {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name, namespace },
          spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
        });
        return true;
      } catch (createError) {
        if (isAlreadyExists(createError)) return false;
        throw createError;
      }
    }
    const record = JSON.stringify(lease.spec ?? {});
    if (record !== this.observedRecord) {
      this.observedRecord = record;
      this.observedAt = now.getTime();
    }
    const holder = lease.spec?.holderIdentity ?? "";
    const heldFor = (lease.spec?.leaseDurationSeconds ?? 0) * 1000;
    if (holder !== "" && holder !== identity && this.observedAt + heldFor > now.getTime()) return false;
    const acquiring = holder !== identity;
    try {
      await this.api.update<Lease>(LEASES, {
        ...lease,
        spec: {
          ...lease.spec,
          ...spec,
          ...(acquiring
            ? {
                acquireTime: microTime(now),
                leaseTransitions: (lease.spec?.leaseTransitions ?? 0) + 1,
              }
            : {}),
        },
      });
      return true;
    } catch (error) {
      if (isConflict(error)) return false;
      throw error;
    }
  }
}

/** A MicroTime: RFC 3339 with microseconds, as the Lease fields require. */
function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}
