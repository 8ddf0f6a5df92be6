// The checks every rendered document of the chart passes, beyond what schemas can say: typed
// fields (kubernetes-models' OpenAPI schemas of the built-in kinds), names, selectors, duplicates
// and what the documents reference.
import { CustomResourceDefinition } from "kubernetes-models/apiextensions.k8s.io/v1";
import { Deployment } from "kubernetes-models/apps/v1";
import { Ingress, NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import {
  ClusterRole,
  ClusterRoleBinding,
  Role,
  RoleBinding,
} from "kubernetes-models/rbac.authorization.k8s.io/v1";
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from "kubernetes-models/v1";
import { all, type Json, type Manifest, selects } from "./helm.js";

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: never) => Validatable;

/** The built-in kinds the chart renders, each with its model (which validates typed fields only). */
const MODELS: Record<string, ModelClass> = {
  "v1/ConfigMap": ConfigMap,
  "v1/Namespace": Namespace,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "v1/ServiceAccount": ServiceAccount,
  "apps/v1/Deployment": Deployment,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
  "networking.k8s.io/v1/Ingress": Ingress,
  "rbac.authorization.k8s.io/v1/ClusterRole": ClusterRole,
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": ClusterRoleBinding,
  "rbac.authorization.k8s.io/v1/Role": Role,
  "rbac.authorization.k8s.io/v1/RoleBinding": RoleBinding,
  "apiextensions.k8s.io/v1/CustomResourceDefinition": CustomResourceDefinition,
};

/** Kinds without a model here: the Coordinator (the fake API server checks it against its CRD), and
 * the Gateway API's and Prometheus Operator's kinds, checked field by field by the tests. */
export const SCHEMALESS_KINDS = [
  "darkbloom.dev/v1alpha1/Coordinator",
  "gateway.networking.k8s.io/v1/HTTPRoute",
  "monitoring.coreos.com/v1/ServiceMonitor",
];

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
/** Kinds whose names become DNS labels (a Service's host name, a pod's name prefix). */
const LABEL_NAMED = new Set(["Namespace", "Service", "Deployment", "Coordinator"]);

function typeOf(m: Manifest): string {
  return `${m.apiVersion}/${m.kind}`;
}

/** What is wrong with one document's fields, names and labels (empty when nothing is). */
export function documentProblems(m: Manifest): string[] {
  const id = `${m.kind} ${m.metadata?.name}`;
  const problems: string[] = [];
  const model = MODELS[typeOf(m)];
  if (model) {
    try {
      new model(m as never).validate();
    } catch (error) {
      problems.push(`${id}: ${(error as Error).message}`);
    }
  } else if (!SCHEMALESS_KINDS.includes(typeOf(m))) {
    problems.push(`${id}: ${typeOf(m)} is a kind the checks do not know`);
  }
  const name = m.metadata?.name ?? "";
  if (!(DNS1123_SUBDOMAIN.test(name) && name.length <= 253)) problems.push(`${id}: not a DNS-1123 subdomain`);
  if (LABEL_NAMED.has(m.kind) && !(DNS1123_LABEL.test(name) && name.length <= 63)) {
    problems.push(`${id}: not a DNS-1123 label of at most 63 characters`);
  }
  if (m.kind === "Coordinator" && !DNS1035_LABEL.test(name)) problems.push(`${id}: not a DNS-1035 label`);
  const labelSets: [string, Record<string, string> | undefined][] = [
    ["labels", m.metadata?.labels],
    ["pod labels", m.spec?.template?.metadata?.labels],
  ];
  for (const [where, labels] of labelSets) {
    for (const [key, value] of Object.entries(labels ?? {})) {
      const [prefix, keyName] = key.includes("/") ? key.split("/", 2) : [undefined, key];
      const validKey =
        LABEL_NAME.test(keyName ?? "") &&
        (keyName ?? "").length <= 63 &&
        (prefix === undefined || (DNS1123_SUBDOMAIN.test(prefix) && prefix.length <= 253));
      if (!validKey) problems.push(`${id}: ${where}: bad key ${key}`);
      if (typeof value !== "string" || value.length > 63 || !LABEL_VALUE.test(value)) {
        problems.push(`${id}: ${where}: bad value ${key}=${String(value)}`);
      }
    }
  }
  return problems;
}

/** Two objects of one kind, namespace and name would overwrite each other. */
export function duplicates(manifests: Manifest[]): string[] {
  const seen = new Set<string>();
  const repeated: string[] = [];
  for (const m of manifests) {
    const key = `${m.kind}/${m.metadata.namespace ?? ""}/${m.metadata.name}`;
    if (seen.has(key)) repeated.push(key);
    seen.add(key);
  }
  return repeated;
}

/**
 * Selectors that select none of the rendered pod templates: a Deployment's own, and those of the
 * PodDisruptionBudgets and Services over the operator's pods. (The coordinator's pods are the
 * operator's to make: what selects them is checked against the operator's objects.)
 */
export function selectorProblems(manifests: Manifest[]): string[] {
  const templates = all(manifests, "Deployment").map((d) => (d.spec.template.metadata.labels ?? {}) as Json);
  const problems: string[] = [];
  for (const d of all(manifests, "Deployment")) {
    if (!selects(d.spec.selector.matchLabels, d.spec.template.metadata.labels)) {
      problems.push(`Deployment ${d.metadata.name}: its selector does not select its pod template`);
    }
  }
  for (const m of [...all(manifests, "PodDisruptionBudget"), ...all(manifests, "Service")]) {
    const selector = m.kind === "Service" ? m.spec.selector : m.spec.selector.matchLabels;
    if (!templates.some((labels) => selects(selector, labels))) {
      problems.push(`${m.kind} ${m.metadata.name}: selects no rendered pod template`);
    }
  }
  return problems;
}

/** `Kind/name` of every Secret, ServiceAccount and ConfigMap a document refers to. */
export function references(manifests: Manifest[]): Set<string> {
  const refs = new Set<string>();
  const add = (kind: string, name: unknown) => {
    if (typeof name === "string" && name) refs.add(`${kind}/${name}`);
  };
  for (const m of manifests) {
    const pod: Json | undefined = m.spec?.template?.spec;
    if (pod) {
      add("ServiceAccount", pod.serviceAccountName);
      for (const s of pod.imagePullSecrets ?? []) add("Secret", s.name);
      for (const v of pod.volumes ?? []) {
        add("Secret", v.secret?.secretName);
        add("ConfigMap", v.configMap?.name);
      }
      for (const c of [...(pod.containers ?? []), ...(pod.initContainers ?? [])]) {
        for (const e of c.env ?? []) {
          add("Secret", e.valueFrom?.secretKeyRef?.name);
          add("ConfigMap", e.valueFrom?.configMapKeyRef?.name);
        }
        for (const e of c.envFrom ?? []) {
          add("Secret", e.secretRef?.name);
          add("ConfigMap", e.configMapRef?.name);
        }
      }
    }
    if (m.kind === "Coordinator") {
      add("Secret", m.spec.database.secretRef.name);
      add("Secret", m.spec.adminKeySecretRef.name);
      add("Secret", m.spec.tls?.secretName);
      for (const s of m.spec.imagePullSecrets ?? []) add("Secret", s.name);
    }
    if (m.kind === "Ingress") for (const t of m.spec.tls ?? []) add("Secret", t.secretName);
    for (const subject of m.subjects ?? [])
      if (subject.kind === "ServiceAccount") add("ServiceAccount", subject.name);
  }
  return refs;
}

/** References to objects the chart does not render: the ones users must provide. */
export function unresolved(manifests: Manifest[]): string[] {
  const rendered = new Set(manifests.map((m) => `${m.kind}/${m.metadata.name}`));
  return [...references(manifests)].filter((ref) => !rendered.has(ref)).sort();
}
