import { clone, getDotted, isObject, type Json, type JsonObject, meta, setDotted, str } from "./json.js";
import { invalidValue } from "./names.js";
import type { ResourceInfo } from "./resources.js";
import { selectorString } from "./selectors.js";
import { badRequest, conflict, invalid, MODIFIED_MESSAGE } from "./status-errors.js";

// The scale subresource: an autoscaling/v1 Scale view of an object's replica count (Deployments,
// ReplicaSets, and custom resources whose CRD declares `subresources.scale`).

/** The Scale an object shows at `/scale`. */
export function scaleOf(r: ResourceInfo, object: JsonObject): JsonObject {
  const paths = r.scale!;
  const m = meta(object);
  const replicas = getDotted(object, paths.specReplicasPath);
  const status: JsonObject = {
    replicas: (getDotted(object, paths.statusReplicasPath) as number | undefined) ?? 0,
  };
  if (paths.labelSelectorPath) {
    const selector = getDotted(object, paths.labelSelectorPath);
    // Built-ins keep a LabelSelector object there; custom resources a string in the selector syntax.
    const text = isObject(selector) ? selectorString(selector) : typeof selector === "string" ? selector : "";
    if (text !== "") status.selector = text;
  }
  const metadata: JsonObject = {};
  for (const key of ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"]) {
    if (m[key] !== undefined) metadata[key] = m[key]!;
  }
  return {
    kind: "Scale",
    apiVersion: "autoscaling/v1",
    metadata,
    spec: { replicas: typeof replicas === "number" ? replicas : 0 },
    status,
  };
}

/** The object with the replica count of a Scale written by a client; the Scale's resourceVersion is a precondition. */
export function withScale(r: ResourceInfo, object: JsonObject, scale: Json, name: string): JsonObject {
  if (!isObject(scale)) throw badRequest("the object provided is unrecognized (must be of type Scale)");
  const m = isObject(scale.metadata) ? scale.metadata : {};
  if (m.name !== undefined && m.name !== name) {
    throw badRequest(
      `the name of the object (${String(m.name)}) does not match the name on the URL (${name})`,
    );
  }
  if (str(m.resourceVersion) && m.resourceVersion !== meta(object).resourceVersion) {
    throw conflict(r.group, r.plural, name, MODIFIED_MESSAGE);
  }
  const replicas = isObject(scale.spec) ? scale.spec.replicas : undefined;
  if (typeof replicas !== "number" || !Number.isInteger(replicas) || replicas < 0) {
    throw invalid("autoscaling", "Scale", name, [
      invalidValue("spec.replicas", replicas ?? null, "must be greater than or equal to 0"),
    ]);
  }
  const next = clone(object);
  setDotted(next, r.scale!.specReplicasPath, replicas);
  return next;
}
