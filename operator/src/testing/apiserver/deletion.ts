import { clone, isObject, type Json, type JsonObject, meta, str } from "./json.js";
import type { Registry } from "./registry.js";
import { apiVersionOf, type ResourceInfo, storageKey } from "./resources.js";
import { badRequest, conflict, forbidden } from "./status-errors.js";
import type { Store } from "./store.js";

export type Propagation = "Background" | "Foreground" | "Orphan";

export interface DeleteOptions {
  propagationPolicy?: Propagation;
  /** Only pods are deleted gracefully; for them it replaces spec.terminationGracePeriodSeconds. */
  gracePeriodSeconds?: number;
  preconditions: { uid?: string; resourceVersion?: string };
  dryRun: boolean;
}

const POLICIES = ["Background", "Foreground", "Orphan"];

/** DeleteOptions from the body (kubectl, client-go) or the query (curl-style clients). */
export function parseDeleteOptions(body: Json | undefined, query: URLSearchParams): DeleteOptions {
  const o = isObject(body) ? body : {};
  const policy = o.propagationPolicy ?? query.get("propagationPolicy") ?? undefined;
  const orphanQuery = query.get("orphanDependents");
  const orphan = o.orphanDependents ?? (orphanQuery === null ? undefined : orphanQuery === "true");
  if (policy !== undefined && policy !== null && !POLICIES.includes(String(policy))) {
    throw badRequest(
      `propagationPolicy: Unsupported value: ${JSON.stringify(policy)}: supported values: "Foreground", "Background", "Orphan"`,
    );
  }
  if (policy != null && orphan != null)
    throw badRequest("orphanDependents and deletionPropagation cannot be both set");
  const preconditions = isObject(o.preconditions) ? o.preconditions : {};
  const dryRun = Array.isArray(o.dryRun) ? o.dryRun.includes("All") : query.getAll("dryRun").includes("All");
  const options: DeleteOptions = { preconditions: {}, dryRun };
  if (policy != null) options.propagationPolicy = policy as Propagation;
  else if (orphan != null) options.propagationPolicy = orphan ? "Orphan" : "Background";
  const grace = o.gracePeriodSeconds ?? query.get("gracePeriodSeconds") ?? undefined;
  if (grace !== undefined && grace !== null) {
    if (!/^-?\d+$/.test(String(grace)))
      throw badRequest(`gracePeriodSeconds: invalid value ${JSON.stringify(grace)}`);
    options.gracePeriodSeconds = Number(grace);
  }
  if (str(preconditions.uid)) options.preconditions.uid = str(preconditions.uid)!;
  if (str(preconditions.resourceVersion))
    options.preconditions.resourceVersion = str(preconditions.resourceVersion)!;
  return options;
}

const FINALIZER: Record<Propagation, string | undefined> = {
  Background: undefined,
  Foreground: "foregroundDeletion",
  Orphan: "orphan",
};

/**
 * How long a pod may take to terminate: its kubelet confirms with a delete of grace 0. A pod no
 * kubelet runs (unscheduled, or finished) goes at once, as the real pod strategy decides.
 */
function podGracePeriod(r: ResourceInfo, pod: JsonObject, options: DeleteOptions): number {
  if (r.group !== "" || r.kind !== "Pod") return 0;
  const spec = isObject(pod.spec) ? pod.spec : {};
  const phase = isObject(pod.status) ? pod.status.phase : undefined;
  if (!str(spec.nodeName) || phase === "Succeeded" || phase === "Failed") return 0;
  const fromSpec =
    typeof spec.terminationGracePeriodSeconds === "number" ? spec.terminationGracePeriodSeconds : 30;
  return Math.max(0, options.gracePeriodSeconds ?? fromSpec);
}

/** The namespaces a cluster cannot work without; the real server refuses to delete them. */
const UNDELETABLE_NAMESPACES = ["default", "kube-system", "kube-public"];

/**
 * Deletion: immediate when nothing holds the object; otherwise (finalizers, foreground or orphan
 * propagation, a namespace's content, a running pod's grace period) the object gets a
 * deletionTimestamp and stays until the finalizers are gone (and, for a pod, until its kubelet
 * deletes it with grace 0). Dependents are the garbage collector's business.
 */
export class Deleter {
  constructor(
    private readonly store: Store,
    private readonly registry: Registry,
  ) {}

  delete(
    r: ResourceInfo,
    namespace: string,
    name: string,
    options: DeleteOptions,
  ): { code: number; body: JsonObject } {
    const old = this.registry.get(r, namespace, name);
    const m = meta(old);
    const { uid, resourceVersion } = options.preconditions;
    if (uid !== undefined && uid !== m.uid) {
      throw conflict(
        r.group,
        r.plural,
        name,
        `Precondition failed: UID in precondition: ${uid}, UID in object meta: ${String(m.uid)}`,
      );
    }
    if (resourceVersion !== undefined && resourceVersion !== m.resourceVersion) {
      throw conflict(
        r.group,
        r.plural,
        name,
        `Precondition failed: ResourceVersion in precondition: ${resourceVersion}, ResourceVersion in meta: ${String(m.resourceVersion)}`,
      );
    }
    const isNamespace = r.group === "" && r.kind === "Namespace";
    if (isNamespace && UNDELETABLE_NAMESPACES.includes(name)) {
      throw forbidden("", "namespaces", name, "this namespace may not be deleted");
    }
    const policy = options.propagationPolicy ?? r.defaultPropagation;
    const wanted = FINALIZER[policy];
    const finalizers = (Array.isArray(m.finalizers) ? m.finalizers : []).filter(
      (f): f is string => typeof f === "string",
    );
    const specFinalizers =
      isNamespace && isObject(old.spec) && Array.isArray(old.spec.finalizers) ? old.spec.finalizers : [];
    const grace = podGracePeriod(r, old, options);
    const pending = grace > 0 || finalizers.length > 0 || wanted !== undefined || specFinalizers.length > 0;

    if (!pending) {
      if (options.dryRun) return this.deleted(r, old);
      return this.deleted(r, this.store.remove(storageKey(r), old));
    }
    const next = clone(old);
    const nextMeta = meta(next);
    // A terminating pod keeps its deadline unless this delete shortens it (by the difference, as
    // the real BeforeDelete computes it).
    const currentGrace =
      typeof m.deletionGracePeriodSeconds === "number" ? m.deletionGracePeriodSeconds : undefined;
    if (!m.deletionTimestamp || (currentGrace !== undefined && grace < currentGrace)) {
      const start = m.deletionTimestamp
        ? Date.parse(String(m.deletionTimestamp)) - (currentGrace ?? 0) * 1000
        : Date.now();
      nextMeta.deletionTimestamp = new Date(start + grace * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
      nextMeta.deletionGracePeriodSeconds = grace;
    }
    // The propagation finalizers replace each other: the latest delete's policy wins.
    const kept = finalizers.filter((f) => f !== "foregroundDeletion" && f !== "orphan" && f !== wanted);
    const previous = finalizers.filter((f) => f === "foregroundDeletion" || f === "orphan");
    const propagation = wanted ? [wanted] : m.deletionTimestamp ? previous : [];
    if (kept.length + propagation.length > 0) nextMeta.finalizers = [...kept, ...propagation];
    else delete nextMeta.finalizers;
    if (isNamespace) next.status = { ...(isObject(next.status) ? next.status : {}), phase: "Terminating" };
    const stored = options.dryRun ? next : this.registry.systemUpdate(r, next);
    return { code: 200, body: this.registry.present(r, stored) };
  }

  /** What a completed delete answers: the object for pods, namespaces and custom resources, else a Status. */
  private deleted(r: ResourceInfo, object: JsonObject): { code: number; body: JsonObject } {
    if (r.custom || (r.group === "" && (r.kind === "Pod" || r.kind === "Namespace"))) {
      return { code: 200, body: this.registry.present(r, object) };
    }
    const details: JsonObject = {
      name: str(meta(object).name) ?? "",
      kind: r.plural,
      uid: str(meta(object).uid) ?? "",
    };
    if (r.group) details.group = r.group;
    return {
      code: 200,
      body: { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", details },
    };
  }

  /** DELETE on a list URL: deletes every selected object, answering the list of them as they were left. */
  deleteCollection(r: ResourceInfo, objects: JsonObject[], options: DeleteOptions): JsonObject {
    const items = objects.map((o) => {
      const m = meta(o);
      const result = this.delete(r, str(m.namespace) ?? "", str(m.name) ?? "", {
        ...options,
        preconditions: {},
      });
      return result.body.kind === "Status" ? this.registry.present(r, o) : result.body;
    });
    return {
      kind: `${r.kind}List`,
      apiVersion: apiVersionOf(r),
      metadata: { resourceVersion: String(this.store.currentRv()) },
      items,
    };
  }
}
