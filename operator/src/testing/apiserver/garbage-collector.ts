import { CRD_CLEANUP_FINALIZER } from "./crds.js";
import type { Deleter, Propagation } from "./deletion.js";
import { clone, isObject, type JsonObject, meta, str } from "./json.js";
import type { Registry } from "./registry.js";
import { type Resources, storageKey } from "./resources.js";
import type { Store } from "./store.js";

/** How long after a write the collector looks again: asynchronous like the real one, but quick. */
const DELAY_MS = 5;

interface Owner {
  uid: string;
  name: string;
  apiVersion: string;
  kind: string;
  blockOwnerDeletion: boolean;
}

function owners(object: JsonObject): Owner[] {
  const refs = meta(object).ownerReferences;
  return (Array.isArray(refs) ? refs : []).filter(isObject).map((r) => ({
    uid: str(r.uid) ?? "",
    name: str(r.name) ?? "",
    apiVersion: str(r.apiVersion) ?? "",
    kind: str(r.kind) ?? "",
    blockOwnerDeletion: r.blockOwnerDeletion === true,
  }));
}

function finalizers(object: JsonObject): string[] {
  const f = meta(object).finalizers;
  return Array.isArray(f) ? f.filter((x): x is string => typeof x === "string") : [];
}

function withoutFinalizer(object: JsonObject, finalizer: string): JsonObject {
  const next = clone(object);
  const rest = finalizers(object).filter((f) => f !== finalizer);
  if (rest.length > 0) meta(next).finalizers = rest;
  else delete meta(next).finalizers;
  return next;
}

/**
 * The controllers of kube-controller-manager that delete things: the garbage collector (owner
 * references, foreground and orphan deletion), the namespace controller (a deleted namespace's
 * content) and the CRD finalizer (a deleted CRD's objects). Each pass runs shortly after writes.
 */
export class GarbageCollector {
  private timer: NodeJS.Timeout | undefined;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly store: Store,
    private readonly resources: Resources,
    private readonly registry: Registry,
    private readonly deleter: Deleter,
  ) {
    this.unsubscribe = store.subscribe(() => this.schedule());
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sweep();
    }, DELAY_MS);
    this.timer.unref();
  }

  close(): void {
    this.unsubscribe();
    clearTimeout(this.timer);
  }

  private all(): { key: string; object: JsonObject }[] {
    return this.store.storageKeys().flatMap((key) => this.store.list(key).map((object) => ({ key, object })));
  }

  /**
   * An owner reference resolves when an object with that uid and name exists where the dependent may
   * see it: a namespaced owner only in the dependent's own namespace, as the real collector requires.
   */
  private resolve(dependent: JsonObject, ref: Owner): JsonObject | undefined {
    const found = this.store.byUid(ref.uid);
    if (!found || meta(found.object).name !== ref.name) return undefined;
    const ownerNamespace = str(meta(found.object).namespace) ?? "";
    if (ownerNamespace !== "" && ownerNamespace !== (str(meta(dependent).namespace) ?? "")) return undefined;
    return found.object;
  }

  private sweep(): void {
    for (const { key, object: seen } of this.all()) {
      const m = meta(seen);
      // Earlier steps of this pass may have changed or removed it: work on what is stored now.
      const object = this.store.get(key, str(m.namespace) ?? "", str(m.name) ?? "");
      if (!object) continue;
      try {
        this.collectDependent(key, object);
        if (meta(object).deletionTimestamp) this.finalize(key, object);
      } catch {
        // It changed or went meanwhile; the write that did it schedules another pass.
      }
    }
  }

  private resource(key: string) {
    const r = this.resources.byStorageKey(key);
    if (!r) throw new Error(`no resource for ${key}`);
    return r;
  }

  private deleteObject(key: string, object: JsonObject, policy: Propagation): void {
    const m = meta(object);
    this.deleter.delete(this.resource(key), str(m.namespace) ?? "", str(m.name) ?? "", {
      propagationPolicy: policy,
      preconditions: { uid: str(m.uid) ?? "" },
      dryRun: false,
    });
  }

  /** A dependent whose owners are all gone (or all being deleted in the foreground) is deleted; dangling references beside a live owner are dropped. */
  private collectDependent(key: string, object: JsonObject): void {
    const refs = owners(object);
    if (refs.length === 0) return;
    const resolved = refs.map((ref) => ({ ref, owner: this.resolve(object, ref) }));
    const dangling = resolved.filter((x) => !x.owner);
    const waiting = resolved.filter((x) => x.owner && finalizers(x.owner).includes("foregroundDeletion"));
    const solid = resolved.length - dangling.length - waiting.length;
    if (solid === 0) {
      if (!meta(object).deletionTimestamp)
        this.deleteObject(key, object, waiting.length > 0 ? "Foreground" : "Background");
      return;
    }
    if (dangling.length > 0) {
      const next = clone(object);
      const gone = new Set(dangling.map((x) => x.ref.uid));
      meta(next).ownerReferences = (meta(object).ownerReferences as JsonObject[]).filter(
        (r) => !gone.has(str(r.uid) ?? ""),
      );
      this.registry.systemUpdate(this.resource(key), next);
    }
  }

  private dependentsOf(owner: JsonObject) {
    const uid = meta(owner).uid;
    return this.all().filter(({ object }) => owners(object).some((r) => r.uid === uid));
  }

  private finalize(key: string, object: JsonObject): void {
    const r = this.resource(key);
    const f = finalizers(object);
    const uid = str(meta(object).uid);
    if (f.includes("orphan")) {
      for (const d of this.dependentsOf(object)) {
        const next = clone(d.object);
        meta(next).ownerReferences = (meta(d.object).ownerReferences as JsonObject[]).filter(
          (ref) => ref.uid !== uid,
        );
        if ((meta(next).ownerReferences as JsonObject[]).length === 0) delete meta(next).ownerReferences;
        this.registry.systemUpdate(this.resource(d.key), next);
      }
      this.registry.systemUpdate(r, withoutFinalizer(object, "orphan"));
      return;
    }
    if (f.includes("foregroundDeletion")) {
      const blocking = this.dependentsOf(object).filter(({ object: d }) =>
        owners(d).some((ref) => ref.uid === uid && ref.blockOwnerDeletion),
      );
      if (blocking.length === 0)
        this.registry.systemUpdate(r, withoutFinalizer(object, "foregroundDeletion"));
      return;
    }
    if (r.group === "" && r.kind === "Namespace") this.finalizeNamespace(object);
    if (r.group === "apiextensions.k8s.io" && f.includes(CRD_CLEANUP_FINALIZER)) this.finalizeCrd(object);
  }

  /** The namespace controller: deletes everything in the namespace, then clears the namespace's spec finalizer. */
  private finalizeNamespace(namespace: JsonObject): void {
    const name = str(meta(namespace).name);
    const content = this.all().filter(({ object }) => meta(object).namespace === name);
    for (const { key, object } of content) {
      if (!meta(object).deletionTimestamp) this.deleteObject(key, object, "Background");
    }
    if (content.length > 0) return;
    const next = clone(namespace);
    next.spec = { ...(isObject(next.spec) ? next.spec : {}), finalizers: [] };
    this.registry.systemUpdate(this.resource("/namespaces"), next);
  }

  /** The CRD finalizer: deletes every object of the CRD, then lets the CRD go. */
  private finalizeCrd(crd: JsonObject): void {
    const spec = isObject(crd.spec) ? crd.spec : {};
    const names = isObject(spec.names) ? spec.names : {};
    const key = storageKey({ group: str(spec.group) ?? "", plural: str(names.plural) ?? "" });
    const content = this.store.list(key).map((object) => ({ object }));
    for (const { object } of content) {
      if (!meta(object).deletionTimestamp) this.deleteObject(key, object, "Background");
    }
    if (content.length === 0) {
      this.registry.systemUpdate(
        this.resource("apiextensions.k8s.io/customresourcedefinitions"),
        withoutFinalizer(crd, CRD_CLEANUP_FINALIZER),
      );
    }
  }
}
