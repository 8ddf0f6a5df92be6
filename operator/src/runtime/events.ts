import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { EVENTS } from "../resource-types.js";
import type { KubeApi, KubeObject } from "./kube-api.js";

/** Repeats of one event within this window update its count instead of creating another. */
const AGGREGATION_WINDOW_MS = 10 * 60_000;
/** Events kept in memory for aggregation; the oldest are forgotten first. */
const MAX_TRACKED = 4096;

export type EventType = "Normal" | "Warning";

/**
 * Kubernetes Events about the operator's resources (what `kubectl describe` shows), aggregated as
 * client-go's recorder does: the same reason and message about the same object within ten minutes
 * bump one event's count, so a failing reconcile retried with backoff does not flood the namespace.
 * Recording is best effort: an event that cannot be written is logged, never fails a reconcile.
 */
export class EventRecorder {
  private readonly recent = new Map<string, { name: string; count: number; at: number }>();

  constructor(
    private readonly api: KubeApi,
    private readonly log: Logger,
    private readonly instance: string,
  ) {}

  async record(object: KubeObject, type: EventType, reason: string, message: string): Promise<void> {
    const { name, namespace, uid } = object.metadata ?? {};
    if (!name || !namespace) return;
    const key = `${uid}\u0000${type}\u0000${reason}\u0000${message}`;
    const now = new Date();
    const seen = this.recent.get(key);
    try {
      if (seen && now.getTime() - seen.at < AGGREGATION_WINDOW_MS) {
        seen.count += 1;
        seen.at = now.getTime();
        await this.api.mergePatch(EVENTS, namespace, seen.name, {
          count: seen.count,
          lastTimestamp: now.toISOString().replace(/\.\d{3}Z$/, "Z"),
        });
        return;
      }
      const eventName = `${name}.${randomBytes(8).toString("hex")}`;
      const timestamp = now.toISOString().replace(/\.\d{3}Z$/, "Z");
      await this.api.create(EVENTS, {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: eventName, namespace },
        involvedObject: {
          apiVersion: object.apiVersion,
          kind: object.kind,
          name,
          namespace,
          uid,
          resourceVersion: object.metadata?.resourceVersion,
        },
        type,
        reason,
        message,
        count: 1,
        firstTimestamp: timestamp,
        lastTimestamp: timestamp,
        source: { component: "darkbloom-operator" },
        reportingComponent: "darkbloom.dev/operator",
        reportingInstance: this.instance,
      });
      this.recent.set(key, { name: eventName, count: 1, at: now.getTime() });
      if (this.recent.size > MAX_TRACKED) {
        const oldest = this.recent.keys().next().value;
        if (oldest !== undefined) this.recent.delete(oldest);
      }
    } catch (error) {
      this.recent.delete(key);
      this.log.warn(
        { reason, object: `${namespace}/${name}`, err: (error as Error).message },
        "could not record an event",
      );
    }
  }
}
