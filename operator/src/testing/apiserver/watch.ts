import type { ServerResponse } from "node:http";
import { type JsonObject, meta, stringMap } from "./json.js";
import type { Registry } from "./registry.js";
import { apiVersionOf, type ResourceInfo, storageKey } from "./resources.js";
import type { FieldSelector, LabelSelector } from "./selectors.js";
import { ApiError, badRequest } from "./status-errors.js";
import type { Store, StoredEvent } from "./store.js";
import { type IncludeObject, toTable } from "./table.js";

export interface WatchRequest {
  resource: ResourceInfo;
  /** Undefined: all namespaces (or a cluster-scoped resource). */
  namespace: string | undefined;
  /** Watching one object by the deprecated name-in-URL form. */
  name: string | undefined;
  labels: LabelSelector;
  fields: FieldSelector;
  resourceVersion: string | null;
  sendInitialEvents: boolean;
  allowBookmarks: boolean;
  /** `timeoutSeconds`, in ms. */
  timeoutMs: number | undefined;
  /** Set when the client asked for the Table view. */
  table: IncludeObject | undefined;
}

export interface WatchTiming {
  closeAfterMs: [number, number];
  bookmarkIntervalMs: number;
}

type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";

/** The open watch streams: JSON lines of `{type, object}` until a timeout, closeWatches() or the client leaves. */
export class Watches {
  private readonly closers = new Set<() => void>();

  constructor(
    private readonly store: Store,
    private readonly registry: Registry,
    private readonly timing: WatchTiming,
  ) {}

  closeAll(): void {
    for (const close of [...this.closers]) close();
  }

  serve(w: WatchRequest, res: ServerResponse): void {
    const r = w.resource;
    const key = storageKey(r);
    let since: number | undefined;
    if (w.resourceVersion !== null && w.resourceVersion !== "" && w.resourceVersion !== "0") {
      if (!/^\d+$/.test(w.resourceVersion)) {
        throw badRequest(`resourceVersion: Invalid value: "${w.resourceVersion}": invalid resource version`);
      }
      since = Number(w.resourceVersion);
    }
    const selects = (object: JsonObject): boolean => {
      const m = meta(object);
      if (w.namespace !== undefined && r.namespaced && m.namespace !== w.namespace) return false;
      if (w.name !== undefined && m.name !== w.name) return false;
      return w.labels(stringMap(m.labels)) && w.fields(object);
    };

    res.writeHead(200, { "content-type": "application/json", "cache-control": "no-cache, private" });
    // Clients wait for the headers before reading events: send them now, not with the first event.
    res.flushHeaders();
    let columnsSent = false;
    const send = (type: WatchEventType, object: JsonObject) => {
      let out = type === "ERROR" || type === "BOOKMARK" ? object : this.registry.present(r, object);
      if (w.table && type !== "ERROR" && type !== "BOOKMARK") {
        out = toTable(r, [out], String(meta(object).resourceVersion ?? ""), w.table, !columnsSent);
        columnsSent = true;
      }
      res.write(`${JSON.stringify({ type, object: out })}\n`);
    };
    const bookmark = (annotations?: Record<string, string>) => {
      const metadata: JsonObject = { resourceVersion: String(this.store.currentRv()) };
      if (annotations) metadata.annotations = annotations;
      send("BOOKMARK", { kind: r.kind, apiVersion: apiVersionOf(r), metadata });
    };
    const deliver = (event: StoredEvent) => {
      if (event.storageKey !== key) return;
      const now = selects(event.object);
      const before = event.previous !== undefined && selects(event.previous);
      if (event.type === "MODIFIED") {
        if (now) send(before ? "MODIFIED" : "ADDED", event.object);
        else if (before) send("DELETED", event.object);
      } else if (now) send(event.type, event.object);
    };

    let finished = false;
    const timers: NodeJS.Timeout[] = [];
    let unsubscribe = () => {};
    const close = () => {
      if (finished) return;
      finished = true;
      unsubscribe();
      for (const t of timers) clearTimeout(t);
      this.closers.delete(close);
      res.end();
    };
    this.closers.add(close);
    res.on("close", close);

    if (since === undefined || w.sendInitialEvents) {
      const namespace = r.namespaced ? w.namespace : undefined;
      for (const object of this.store.list(key, namespace)) if (selects(object)) send("ADDED", object);
      if (w.sendInitialEvents) bookmark({ "k8s.io/initial-events-end": "true" });
    } else {
      const history = this.store.eventsSince(key, since);
      if ("tooOld" in history) {
        const expired = new ApiError(
          410,
          "Expired",
          `too old resource version: ${since} (${history.oldest - 1})`,
        );
        send("ERROR", expired.toStatus());
        close();
        return;
      }
      for (const event of history) deliver(event);
    }
    unsubscribe = this.store.subscribe(deliver);

    const [min, max] = this.timing.closeAfterMs;
    const serverTimeout = min + Math.random() * (max - min);
    timers.push(setTimeout(close, Math.min(serverTimeout, w.timeoutMs ?? Number.POSITIVE_INFINITY)));
    if (w.allowBookmarks) {
      const interval = setInterval(() => bookmark(), this.timing.bookmarkIntervalMs);
      timers.push(interval);
    }
    for (const t of timers) t.unref();
  }
}
