import { isObject, type Json, type JsonObject } from "./json.js";

// The defaulting functions of k8s.io/kubernetes/pkg/apis/*/v1 (SetDefaults_*) that clients observe:
// objects read back carry these, and controllers and diffing clients rely on them.

function obj(parent: JsonObject, key: string): JsonObject {
  if (!isObject(parent[key])) parent[key] = {};
  return parent[key] as JsonObject;
}

function list(value: Json | undefined): JsonObject[] {
  return Array.isArray(value) ? value.filter(isObject) : [];
}

function setDefault(target: JsonObject, key: string, value: Json): void {
  if (target[key] === undefined || target[key] === null) target[key] = value;
}

/** `Always` for `:latest` or untagged images, `IfNotPresent` otherwise (SetDefaults_Container). */
function pullPolicy(image: Json | undefined): string {
  if (typeof image !== "string") return "IfNotPresent";
  if (image.includes("@")) return "IfNotPresent";
  const lastSegment = image.slice(image.lastIndexOf("/") + 1);
  const tag = lastSegment.includes(":") ? lastSegment.slice(lastSegment.lastIndexOf(":") + 1) : "latest";
  return tag === "latest" ? "Always" : "IfNotPresent";
}

function defaultProbe(probe: Json | undefined): void {
  if (!isObject(probe)) return;
  setDefault(probe, "timeoutSeconds", 1);
  setDefault(probe, "periodSeconds", 10);
  setDefault(probe, "successThreshold", 1);
  setDefault(probe, "failureThreshold", 3);
  if (isObject(probe.httpGet)) setDefault(probe.httpGet, "scheme", "HTTP");
}

function defaultContainer(c: JsonObject): void {
  setDefault(c, "terminationMessagePath", "/dev/termination-log");
  setDefault(c, "terminationMessagePolicy", "File");
  setDefault(c, "imagePullPolicy", pullPolicy(c.image));
  setDefault(c, "resources", {});
  for (const port of list(c.ports)) setDefault(port, "protocol", "TCP");
  for (const env of list(c.env)) {
    if (isObject(env.valueFrom) && isObject(env.valueFrom.fieldRef))
      setDefault(env.valueFrom.fieldRef, "apiVersion", "v1");
  }
  defaultProbe(c.livenessProbe);
  defaultProbe(c.readinessProbe);
  defaultProbe(c.startupProbe);
}

export function defaultPodSpec(spec: JsonObject): void {
  setDefault(spec, "restartPolicy", "Always");
  setDefault(spec, "terminationGracePeriodSeconds", 30);
  setDefault(spec, "dnsPolicy", "ClusterFirst");
  setDefault(spec, "securityContext", {});
  setDefault(spec, "schedulerName", "default-scheduler");
  for (const c of [...list(spec.containers), ...list(spec.initContainers)]) defaultContainer(c);
  for (const v of list(spec.volumes)) {
    for (const source of ["configMap", "secret"])
      if (isObject(v[source])) setDefault(v[source], "defaultMode", 420);
  }
}

function defaultTemplate(spec: JsonObject): void {
  defaultPodSpec(obj(obj(spec, "template"), "spec"));
}

const DEFAULTERS: Record<string, (object: JsonObject) => void> = {
  "/Pod": (o) => {
    const spec = obj(o, "spec");
    defaultPodSpec(spec);
    setDefault(spec, "enableServiceLinks", true);
  },
  "apps/Deployment": (o) => {
    const spec = obj(o, "spec");
    setDefault(spec, "replicas", 1);
    const strategy = obj(spec, "strategy");
    setDefault(strategy, "type", "RollingUpdate");
    if (strategy.type === "RollingUpdate") {
      const rolling = obj(strategy, "rollingUpdate");
      setDefault(rolling, "maxUnavailable", "25%");
      setDefault(rolling, "maxSurge", "25%");
    }
    setDefault(spec, "revisionHistoryLimit", 10);
    setDefault(spec, "progressDeadlineSeconds", 600);
    defaultTemplate(spec);
  },
  "apps/ReplicaSet": (o) => {
    const spec = obj(o, "spec");
    setDefault(spec, "replicas", 1);
    defaultTemplate(spec);
  },
  "batch/Job": (o) => {
    const spec = obj(o, "spec");
    if (spec.completions == null && spec.parallelism == null) {
      spec.completions = 1;
      spec.parallelism = 1;
    }
    setDefault(spec, "parallelism", 1);
    if (spec.backoffLimitPerIndex == null) setDefault(spec, "backoffLimit", 6);
    setDefault(spec, "completionMode", "NonIndexed");
    setDefault(spec, "suspend", false);
    setDefault(spec, "podReplacementPolicy", spec.podFailurePolicy ? "Failed" : "TerminatingOrFailed");
    defaultTemplate(spec);
  },
  "/Service": (o) => {
    const spec = obj(o, "spec");
    setDefault(spec, "type", "ClusterIP");
    setDefault(spec, "sessionAffinity", "None");
    for (const port of list(spec.ports)) {
      setDefault(port, "protocol", "TCP");
      if (typeof port.port === "number") setDefault(port, "targetPort", port.port);
    }
    if (spec.type !== "ExternalName") setDefault(spec, "internalTrafficPolicy", "Cluster");
    if (spec.type === "NodePort" || spec.type === "LoadBalancer")
      setDefault(spec, "externalTrafficPolicy", "Cluster");
    if (spec.type === "LoadBalancer") setDefault(spec, "allocateLoadBalancerNodePorts", true);
  },
  "/Secret": (o) => setDefault(o, "type", "Opaque"),
  "/Namespace": (o) => setDefault(obj(o, "spec"), "finalizers", ["kubernetes"]),
  "rbac.authorization.k8s.io/RoleBinding": defaultSubjects,
  "rbac.authorization.k8s.io/ClusterRoleBinding": defaultSubjects,
  "networking.k8s.io/NetworkPolicy": (o) => {
    const spec = obj(o, "spec");
    if (!Array.isArray(spec.policyTypes) || spec.policyTypes.length === 0) {
      spec.policyTypes = list(spec.egress).length > 0 ? ["Ingress", "Egress"] : ["Ingress"];
    }
    for (const rule of [...list(spec.ingress), ...list(spec.egress)]) {
      for (const port of list(rule.ports)) setDefault(port, "protocol", "TCP");
    }
  },
  "apiextensions.k8s.io/CustomResourceDefinition": (o) => {
    const spec = obj(o, "spec");
    const names = obj(spec, "names");
    if (typeof names.kind === "string") {
      setDefault(names, "singular", names.kind.toLowerCase());
      setDefault(names, "listKind", `${names.kind}List`);
    }
    setDefault(obj(spec, "conversion"), "strategy", "None");
  },
};

function defaultSubjects(o: JsonObject): void {
  for (const s of list(o.subjects)) {
    setDefault(s, "apiGroup", s.kind === "ServiceAccount" ? "" : "rbac.authorization.k8s.io");
  }
}

/** Applies the defaults of a built-in kind (by `group/Kind`); kinds without defaults are left as they are. */
export function applyBuiltinDefaults(groupKind: string, object: JsonObject): void {
  DEFAULTERS[groupKind]?.(object);
}
