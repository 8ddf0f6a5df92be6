import { BUILTIN_SCHEMAS } from "./builtin-schemas.js";
import type { CompiledVersion, ScalePaths } from "./crd-schema/types.js";
import { ANY, type Schema } from "./schema.js";

/** One served resource at one version: what routing, discovery, RBAC and storage need to know. */
export interface ResourceInfo {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly singular: string;
  readonly shortNames: readonly string[];
  readonly categories: readonly string[];
  readonly namespaced: boolean;
  readonly verbs: readonly string[];
  /** Has a status subresource: the main endpoint ignores status, /status changes only status. */
  readonly status: boolean;
  /** Has a scale subresource, with where replicas and the selector live. */
  readonly scale: ScalePaths | undefined;
  /** PUT of an absent object creates it (the real strategies' AllowCreateOnUpdate). */
  readonly createOnUpdate: boolean;
  /** Propagation when a delete names none (batch/v1 Jobs orphan their pods, for compatibility). */
  readonly defaultPropagation: "Background" | "Orphan";
  readonly schema: Schema;
  /** Custom resources: the compiled CRD version that prunes, defaults and validates them. */
  readonly custom?: CompiledVersion;
}

const ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

interface BuiltinEntry {
  group: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  shortNames?: string[];
  categories?: string[];
  status?: boolean;
  scale?: boolean;
  createOnUpdate?: boolean;
  orphan?: boolean;
  verbs?: string[];
}

const REPLICAS: ScalePaths = {
  specReplicasPath: ".spec.replicas",
  statusReplicasPath: ".status.replicas",
  labelSelectorPath: ".spec.selector",
};

/** Every built-in this fake serves is at version v1 of its group. */
const BUILTINS: BuiltinEntry[] = [
  {
    group: "",
    kind: "Namespace",
    plural: "namespaces",
    namespaced: false,
    shortNames: ["ns"],
    status: true,
    verbs: ["create", "delete", "get", "list", "patch", "update", "watch"],
  },
  { group: "", kind: "Node", plural: "nodes", namespaced: false, shortNames: ["no"], status: true },
  {
    group: "",
    kind: "Pod",
    plural: "pods",
    namespaced: true,
    shortNames: ["po"],
    categories: ["all"],
    status: true,
  },
  {
    group: "",
    kind: "Service",
    plural: "services",
    namespaced: true,
    shortNames: ["svc"],
    categories: ["all"],
    status: true,
    createOnUpdate: true,
    verbs: ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
  },
  {
    group: "",
    kind: "Endpoints",
    plural: "endpoints",
    namespaced: true,
    shortNames: ["ep"],
    createOnUpdate: true,
  },
  { group: "", kind: "Secret", plural: "secrets", namespaced: true },
  { group: "", kind: "ConfigMap", plural: "configmaps", namespaced: true, shortNames: ["cm"] },
  { group: "", kind: "Event", plural: "events", namespaced: true, shortNames: ["ev"], createOnUpdate: true },
  {
    group: "",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    namespaced: true,
    shortNames: ["sa"],
    createOnUpdate: true,
  },
  {
    group: "apps",
    kind: "Deployment",
    plural: "deployments",
    namespaced: true,
    shortNames: ["deploy"],
    categories: ["all"],
    status: true,
    scale: true,
  },
  {
    group: "apps",
    kind: "ReplicaSet",
    plural: "replicasets",
    namespaced: true,
    shortNames: ["rs"],
    categories: ["all"],
    status: true,
    scale: true,
  },
  {
    group: "batch",
    kind: "Job",
    plural: "jobs",
    namespaced: true,
    categories: ["all"],
    status: true,
    orphan: true,
  },
  {
    group: "policy",
    kind: "PodDisruptionBudget",
    plural: "poddisruptionbudgets",
    namespaced: true,
    shortNames: ["pdb"],
    status: true,
    createOnUpdate: true,
  },
  { group: "coordination.k8s.io", kind: "Lease", plural: "leases", namespaced: true, createOnUpdate: true },
  {
    group: "events.k8s.io",
    kind: "Event",
    plural: "events",
    namespaced: true,
    shortNames: ["ev"],
    createOnUpdate: true,
  },
  {
    group: "rbac.authorization.k8s.io",
    kind: "Role",
    plural: "roles",
    namespaced: true,
    createOnUpdate: true,
  },
  {
    group: "rbac.authorization.k8s.io",
    kind: "RoleBinding",
    plural: "rolebindings",
    namespaced: true,
    createOnUpdate: true,
  },
  {
    group: "rbac.authorization.k8s.io",
    kind: "ClusterRole",
    plural: "clusterroles",
    namespaced: false,
    createOnUpdate: true,
  },
  {
    group: "rbac.authorization.k8s.io",
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    namespaced: false,
    createOnUpdate: true,
  },
  {
    group: "networking.k8s.io",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    namespaced: true,
    shortNames: ["netpol"],
  },
  {
    group: "networking.k8s.io",
    kind: "Ingress",
    plural: "ingresses",
    namespaced: true,
    shortNames: ["ing"],
    status: true,
  },
  { group: "discovery.k8s.io", kind: "EndpointSlice", plural: "endpointslices", namespaced: true },
  {
    group: "apiextensions.k8s.io",
    kind: "CustomResourceDefinition",
    plural: "customresourcedefinitions",
    namespaced: false,
    shortNames: ["crd", "crds"],
    status: true,
  },
];

function builtin(e: BuiltinEntry): ResourceInfo {
  return {
    group: e.group,
    version: "v1",
    kind: e.kind,
    plural: e.plural,
    singular: e.kind.toLowerCase(),
    shortNames: e.shortNames ?? [],
    categories: e.categories ?? [],
    namespaced: e.namespaced,
    verbs: e.verbs ?? ALL_VERBS,
    status: e.status ?? false,
    scale: e.scale ? REPLICAS : undefined,
    createOnUpdate: e.createOnUpdate ?? false,
    defaultPropagation: e.orphan ? "Orphan" : "Background",
    schema: BUILTIN_SCHEMAS[`${e.group}/${e.kind}`] ?? ANY,
  };
}

/** Custom resources, from one compiled CRD version and the names the CRD declares. */
export function customResource(
  compiled: CompiledVersion,
  names: { singular: string; shortNames: string[]; categories: string[] },
  schema: Schema,
): ResourceInfo {
  return {
    group: compiled.group,
    version: compiled.version,
    kind: compiled.kind,
    plural: compiled.plural,
    singular: names.singular,
    shortNames: names.shortNames,
    categories: names.categories,
    namespaced: compiled.namespaced,
    verbs: ALL_VERBS,
    status: compiled.hasStatus,
    scale: compiled.scale,
    createOnUpdate: false,
    defaultPropagation: "Background",
    schema,
    custom: compiled,
  };
}

export function apiVersionOf(r: { group: string; version: string }): string {
  return r.group ? `${r.group}/${r.version}` : r.version;
}

/** Where a resource's objects live, whatever version they are served at. */
export function storageKey(r: { group: string; plural: string }): string {
  return `${r.group}/${r.plural}`;
}

/**
 * Kubernetes' version priority: GA before beta before alpha, higher numbers first, then anything
 * else alphabetically (the order of discovery and of the preferred version).
 */
export function compareVersions(a: string, b: string): number {
  const rank = (v: string): [number, number, number] => {
    const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
    if (!m) return [3, 0, 0];
    const stage = m[2] === undefined ? 0 : m[2] === "beta" ? 1 : 2;
    return [stage, -Number(m[1]), -Number(m[3] ?? 0)];
  };
  const [ra, rb] = [rank(a), rank(b)];
  for (let i = 0; i < 3; i++) if (ra[i] !== rb[i]) return ra[i]! - rb[i]!;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The served resources: the built-in table plus what the established CRDs add. */
export class Resources {
  private readonly builtins = BUILTINS.map(builtin);
  private readonly custom = new Map<string, ResourceInfo[]>();

  all(): ResourceInfo[] {
    return [...this.builtins, ...[...this.custom.values()].flat()];
  }

  find(group: string, version: string, plural: string): ResourceInfo | undefined {
    return this.all().find((r) => r.group === group && r.version === version && r.plural === plural);
  }

  /** Any served version of a kind (owner references and RBAC only need its scope and plural). */
  findKind(group: string, kind: string): ResourceInfo | undefined {
    return this.all().find((r) => r.group === group && r.kind === kind);
  }

  /** The preferred version of the resource stored under `key`. */
  byStorageKey(key: string): ResourceInfo | undefined {
    return this.all()
      .filter((r) => storageKey(r) === key)
      .sort((a, b) => compareVersions(a.version, b.version))[0];
  }

  setCustom(crdName: string, versions: ResourceInfo[]): void {
    this.custom.set(crdName, versions);
  }

  removeCustom(crdName: string): void {
    this.custom.delete(crdName);
  }

  /** Groups and their versions, preferred first; the core group ("") first as in discovery. */
  groups(): { group: string; versions: string[] }[] {
    const byGroup = new Map<string, Set<string>>();
    for (const r of this.all()) {
      if (!byGroup.has(r.group)) byGroup.set(r.group, new Set());
      byGroup.get(r.group)!.add(r.version);
    }
    return [...byGroup].map(([group, versions]) => ({
      group,
      versions: [...versions].sort(compareVersions),
    }));
  }
}
