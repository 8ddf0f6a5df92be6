import type { FieldCause } from "./crd-schema/types.js";
import { deepEqual, goValue, isObject, type Json, type JsonObject, stringMap } from "./json.js";
import {
  duplicate,
  forbiddenField,
  invalidValue,
  labelCauses,
  nameProblems,
  notSupported,
  required,
} from "./names.js";
import { labelSelectorMatches } from "./selectors.js";

// The validation of k8s.io/kubernetes/pkg/apis/*/validation for the built-in kinds, limited to the
// rules a client of this project can trip over, with the real field paths and messages. Object
// metadata is validated by the caller (names.ts) for every kind.

type Validator = (object: JsonObject, old: JsonObject | undefined) => FieldCause[];

function list(value: Json | undefined): JsonObject[] {
  return Array.isArray(value) ? value.filter(isObject) : [];
}

function sub(object: JsonObject, key: string): JsonObject {
  return isObject(object[key]) ? (object[key] as JsonObject) : {};
}

function nonNegative(field: string, value: Json | undefined): FieldCause[] {
  return typeof value === "number" && value < 0
    ? [invalidValue(field, value, "must be greater than or equal to 0")]
    : [];
}

function portRange(field: string, value: Json | undefined): FieldCause[] {
  return typeof value === "number" && (value < 1 || value > 65535)
    ? [invalidValue(field, value, "must be between 1 and 65535, inclusive")]
    : [];
}

const PERCENT = /^[0-9]+%$/;

function intOrPercent(field: string, value: Json | undefined): FieldCause[] {
  if (typeof value === "string" && !PERCENT.test(value)) {
    return [
      invalidValue(
        field,
        value,
        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
      ),
    ];
  }
  return nonNegative(field, value);
}

function containers(
  field: string,
  value: Json | undefined,
  volumes: Set<string>,
  requiredList: boolean,
): FieldCause[] {
  const causes: FieldCause[] = [];
  const items = list(value);
  if (requiredList && items.length === 0) causes.push(required(field));
  const seen = new Set<string>();
  items.forEach((c, i) => {
    const at = `${field}[${i}]`;
    const name = typeof c.name === "string" ? c.name : "";
    if (name === "") causes.push(required(`${at}.name`));
    else {
      for (const p of nameProblems(name, "label")) causes.push(invalidValue(`${at}.name`, name, p));
      if (seen.has(name)) causes.push(duplicate(`${at}.name`, name));
      seen.add(name);
    }
    if (typeof c.image !== "string" || c.image.trim() === "") causes.push(required(`${at}.image`));
    list(c.ports).forEach((p, j) => {
      causes.push(...portRange(`${at}.ports[${j}].containerPort`, p.containerPort ?? 0));
    });
    list(c.env).forEach((e, j) => {
      if (typeof e.name !== "string" || e.name === "") causes.push(required(`${at}.env[${j}].name`));
    });
    list(c.volumeMounts).forEach((m, j) => {
      const mountName = typeof m.name === "string" ? m.name : "";
      if (!volumes.has(mountName)) {
        causes.push({
          reason: "FieldValueNotFound",
          message: `Not found: ${goValue(mountName)}`,
          field: `${at}.volumeMounts[${j}].name`,
        });
      }
      if (typeof m.mountPath !== "string" || m.mountPath === "")
        causes.push(required(`${at}.volumeMounts[${j}].mountPath`));
    });
    const pullPolicies = ["Always", "IfNotPresent", "Never"];
    if (typeof c.imagePullPolicy === "string" && !pullPolicies.includes(c.imagePullPolicy)) {
      causes.push(notSupported(`${at}.imagePullPolicy`, c.imagePullPolicy, pullPolicies));
    }
  });
  return causes;
}

function podSpec(field: string, spec: JsonObject, restartPolicies: string[]): FieldCause[] {
  const causes: FieldCause[] = [];
  const volumes = new Set<string>();
  list(spec.volumes).forEach((v, i) => {
    const name = typeof v.name === "string" ? v.name : "";
    if (name === "") causes.push(required(`${field}.volumes[${i}].name`));
    else if (volumes.has(name)) causes.push(duplicate(`${field}.volumes[${i}].name`, name));
    volumes.add(name);
  });
  causes.push(...containers(`${field}.containers`, spec.containers, volumes, true));
  causes.push(...containers(`${field}.initContainers`, spec.initContainers, volumes, false));
  const policy = spec.restartPolicy;
  if (typeof policy !== "string" || policy === "") {
    causes.push(
      required(
        `${field}.restartPolicy`,
        `valid values: ${restartPolicies.map((p) => JSON.stringify(p)).join(", ")}`,
      ),
    );
  } else if (!restartPolicies.includes(policy)) {
    causes.push(notSupported(`${field}.restartPolicy`, policy, restartPolicies));
  }
  const dnsPolicies = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
  if (typeof spec.dnsPolicy === "string" && !dnsPolicies.includes(spec.dnsPolicy)) {
    causes.push(notSupported(`${field}.dnsPolicy`, spec.dnsPolicy, dnsPolicies));
  }
  causes.push(...nonNegative(`${field}.terminationGracePeriodSeconds`, spec.terminationGracePeriodSeconds));
  causes.push(...labelCauses(`${field}.nodeSelector`, spec.nodeSelector));
  return causes;
}

/** A workload's selector and template: the selector is required, non-empty and must select the template. */
function selectorAndTemplate(spec: JsonObject, restartPolicies: string[], what: string): FieldCause[] {
  const causes: FieldCause[] = [];
  const selector = spec.selector;
  if (!isObject(selector)) causes.push(required("spec.selector"));
  else {
    causes.push(...labelCauses("spec.selector.matchLabels", selector.matchLabels));
    const empty =
      Object.keys(stringMap(selector.matchLabels)).length === 0 &&
      list(selector.matchExpressions).length === 0;
    if (empty) causes.push(invalidValue("spec.selector", selector, `empty selector is invalid for ${what}`));
  }
  const template = sub(spec, "template");
  const labels = stringMap(sub(template, "metadata").labels);
  causes.push(...labelCauses("spec.template.metadata.labels", sub(template, "metadata").labels));
  if (isObject(selector) && !labelSelectorMatches(selector, labels)) {
    causes.push(
      invalidValue("spec.template.metadata.labels", labels, "`selector` does not match template `labels`"),
    );
  }
  causes.push(...podSpec("spec.template.spec", sub(template, "spec"), restartPolicies));
  return causes;
}

function immutable(field: string, value: Json | undefined, old: Json | undefined): FieldCause[] {
  return deepEqual(value ?? null, old ?? null)
    ? []
    : [invalidValue(field, value ?? null, "field is immutable")];
}

const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;

function configKeys(field: string, data: Json | undefined): FieldCause[] {
  if (!isObject(data)) return [];
  return Object.keys(data)
    .filter((k) => !CONFIG_KEY.test(k) || k.length > 253 || k === "." || k === "..")
    .map((k) =>
      invalidValue(
        `${field}[${k}]`,
        k,
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
      ),
    );
}

function immutableData(object: JsonObject, old: JsonObject | undefined, fields: string[]): FieldCause[] {
  if (old?.immutable !== true) return [];
  const causes = fields.flatMap((f) =>
    deepEqual(object[f] ?? null, old[f] ?? null)
      ? []
      : [forbiddenField(f, "field is immutable when `immutable` is set")],
  );
  if (object.immutable !== true)
    causes.push(forbiddenField("immutable", "field is immutable when `immutable` is set"));
  return causes;
}

function rules(value: Json | undefined): FieldCause[] {
  return list(value).flatMap((rule, i) => {
    const causes: FieldCause[] = [];
    if (!Array.isArray(rule.verbs) || rule.verbs.length === 0) {
      causes.push(required(`rules[${i}].verbs`, "verbs must contain at least one value"));
    }
    const hasResources = Array.isArray(rule.resources) && rule.resources.length > 0;
    if (hasResources && !(Array.isArray(rule.apiGroups) && rule.apiGroups.length > 0)) {
      causes.push(required(`rules[${i}].apiGroups`, "resource rules must supply at least one api group"));
    }
    return causes;
  });
}

function binding(clusterScoped: boolean): Validator {
  return (o, old) => {
    const causes: FieldCause[] = [];
    const roleRef = sub(o, "roleRef");
    const kinds = clusterScoped ? ["ClusterRole"] : ["Role", "ClusterRole"];
    if (typeof roleRef.kind !== "string" || !kinds.includes(roleRef.kind))
      causes.push(notSupported("roleRef.kind", roleRef.kind ?? "", kinds));
    if (roleRef.apiGroup !== "rbac.authorization.k8s.io") {
      causes.push(notSupported("roleRef.apiGroup", roleRef.apiGroup ?? "", ["rbac.authorization.k8s.io"]));
    }
    if (typeof roleRef.name !== "string" || roleRef.name === "") causes.push(required("roleRef.name"));
    if (old && !deepEqual(roleRef, old.roleRef ?? null))
      causes.push(invalidValue("roleRef", roleRef, "cannot change roleRef"));
    list(o.subjects).forEach((s, i) => {
      const kinds = ["ServiceAccount", "User", "Group"];
      if (typeof s.kind !== "string" || !kinds.includes(s.kind))
        causes.push(notSupported(`subjects[${i}].kind`, s.kind ?? "", kinds));
      if (typeof s.name !== "string" || s.name === "") causes.push(required(`subjects[${i}].name`));
      if (s.kind === "ServiceAccount" && clusterScoped && !s.namespace)
        causes.push(required(`subjects[${i}].namespace`));
    });
    return causes;
  };
}

const POD_MUTABLE =
  "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`," +
  "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)," +
  "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/** A pod spec with the fields an update may change blanked out, to compare the rest. */
function frozenPodSpec(spec: JsonObject): JsonObject {
  const copy = structuredClone(spec);
  for (const c of [...list(copy.containers), ...list(copy.initContainers)]) delete c.image;
  delete copy.activeDeadlineSeconds;
  delete copy.tolerations;
  return copy;
}

const VALIDATORS: Record<string, Validator> = {
  "/Pod": (o, old) => {
    const spec = sub(o, "spec");
    const causes = podSpec("spec", spec, ["Always", "OnFailure", "Never"]);
    if (old && !deepEqual(frozenPodSpec(spec), frozenPodSpec(sub(old, "spec"))))
      causes.push(forbiddenField("spec", POD_MUTABLE));
    return causes;
  },
  "apps/Deployment": (o, old) => {
    const spec = sub(o, "spec");
    const causes = [
      ...nonNegative("spec.replicas", spec.replicas),
      ...selectorAndTemplate(spec, ["Always"], "deployment"),
    ];
    const strategy = sub(spec, "strategy");
    const types = ["Recreate", "RollingUpdate"];
    if (!types.includes(String(strategy.type)))
      causes.push(notSupported("spec.strategy.type", strategy.type ?? "", types));
    if (strategy.type === "Recreate" && strategy.rollingUpdate != null) {
      causes.push(
        forbiddenField(
          "spec.strategy.rollingUpdate",
          "may not be specified when strategy `type` is 'Recreate'",
        ),
      );
    }
    const rolling = sub(strategy, "rollingUpdate");
    causes.push(...intOrPercent("spec.strategy.rollingUpdate.maxUnavailable", rolling.maxUnavailable));
    causes.push(...intOrPercent("spec.strategy.rollingUpdate.maxSurge", rolling.maxSurge));
    if (
      (rolling.maxUnavailable === 0 || rolling.maxUnavailable === "0%") &&
      (rolling.maxSurge === 0 || rolling.maxSurge === "0%")
    ) {
      causes.push(
        invalidValue(
          "spec.strategy.rollingUpdate.maxUnavailable",
          rolling.maxUnavailable,
          "may not be 0 when `maxSurge` is 0",
        ),
      );
    }
    causes.push(...nonNegative("spec.revisionHistoryLimit", spec.revisionHistoryLimit));
    causes.push(...nonNegative("spec.minReadySeconds", spec.minReadySeconds));
    if (old) causes.push(...immutable("spec.selector", spec.selector, sub(old, "spec").selector));
    return causes;
  },
  "apps/ReplicaSet": (o, old) => {
    const spec = sub(o, "spec");
    const causes = [
      ...nonNegative("spec.replicas", spec.replicas),
      ...selectorAndTemplate(spec, ["Always"], "replicaset"),
    ];
    if (old) causes.push(...immutable("spec.selector", spec.selector, sub(old, "spec").selector));
    return causes;
  },
  "batch/Job": (o, old) => {
    const spec = sub(o, "spec");
    const causes = [
      ...selectorAndTemplate(spec, ["OnFailure", "Never"], "job"),
      ...nonNegative("spec.parallelism", spec.parallelism),
      ...nonNegative("spec.completions", spec.completions),
      ...nonNegative("spec.backoffLimit", spec.backoffLimit),
    ];
    if (old) {
      const oldSpec = sub(old, "spec");
      causes.push(...immutable("spec.selector", spec.selector, oldSpec.selector));
      causes.push(...immutable("spec.completionMode", spec.completionMode, oldSpec.completionMode));
      // A suspended job that never started may change its template (the real rule is narrower).
      if (!(oldSpec.suspend === true && spec.suspend === true))
        causes.push(...immutable("spec.template", spec.template, oldSpec.template));
    }
    return causes;
  },
  "/Service": (o, old) => {
    const spec = sub(o, "spec");
    const causes: FieldCause[] = [];
    const types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if (!types.includes(String(spec.type))) causes.push(notSupported("spec.type", spec.type ?? "", types));
    const ports = list(spec.ports);
    if (spec.type === "ExternalName") {
      if (typeof spec.externalName !== "string" || spec.externalName === "")
        causes.push(required("spec.externalName"));
    } else if (ports.length === 0 && spec.clusterIP !== "None") causes.push(required("spec.ports"));
    const names = new Set<string>();
    ports.forEach((p, i) => {
      const name = typeof p.name === "string" ? p.name : "";
      if (ports.length > 1 && name === "") causes.push(required(`spec.ports[${i}].name`));
      if (name !== "" && names.has(name)) causes.push(duplicate(`spec.ports[${i}].name`, name));
      names.add(name);
      causes.push(...portRange(`spec.ports[${i}].port`, p.port ?? 0));
      if (typeof p.targetPort === "number")
        causes.push(...portRange(`spec.ports[${i}].targetPort`, p.targetPort));
      const protocols = ["SCTP", "TCP", "UDP"];
      if (!protocols.includes(String(p.protocol)))
        causes.push(notSupported(`spec.ports[${i}].protocol`, p.protocol ?? "", protocols));
    });
    causes.push(...labelCauses("spec.selector", spec.selector));
    const affinities = ["ClientIP", "None"];
    if (!affinities.includes(String(spec.sessionAffinity)))
      causes.push(notSupported("spec.sessionAffinity", spec.sessionAffinity ?? "", affinities));
    const oldIp = old && sub(old, "spec").clusterIP;
    if (
      typeof oldIp === "string" &&
      oldIp !== "" &&
      spec.type !== "ExternalName" &&
      spec.clusterIP !== oldIp
    ) {
      causes.push(invalidValue("spec.clusterIPs[0]", spec.clusterIPs ?? [], "may not change once set"));
    }
    return causes;
  },
  "/Secret": (o, old) => {
    const causes = [...configKeys("data", o.data), ...configKeys("stringData", o.stringData)];
    const size = Object.values(stringMap(o.data)).reduce((n, v) => n + Math.floor((v.length * 3) / 4), 0);
    if (size > 1024 * 1024)
      causes.push({
        reason: "TooLong",
        message: "Too long: may not be more than 1048576 bytes",
        field: "data",
      });
    if (old) causes.push(...immutable("type", o.type, old.type), ...immutableData(o, old, ["data"]));
    return causes;
  },
  "/ConfigMap": (o, old) => {
    const causes = [...configKeys("data", o.data), ...configKeys("binaryData", o.binaryData)];
    for (const key of Object.keys(stringMap(o.data))) {
      if (isObject(o.binaryData) && key in o.binaryData) causes.push(duplicate(`data[${key}]`, key));
    }
    if (old) causes.push(...immutableData(o, old, ["data", "binaryData"]));
    return causes;
  },
  "policy/PodDisruptionBudget": (o) => {
    const spec = sub(o, "spec");
    const causes = [
      ...intOrPercent("spec.minAvailable", spec.minAvailable),
      ...intOrPercent("spec.maxUnavailable", spec.maxUnavailable),
    ];
    if (spec.minAvailable != null && spec.maxUnavailable != null) {
      causes.push(invalidValue("spec", spec, "minAvailable and maxUnavailable cannot be both set"));
    }
    if (isObject(spec.selector))
      causes.push(...labelCauses("spec.selector.matchLabels", spec.selector.matchLabels));
    return causes;
  },
  "coordination.k8s.io/Lease": (o) => {
    const spec = sub(o, "spec");
    const causes = nonNegative("spec.leaseTransitions", spec.leaseTransitions);
    if (typeof spec.leaseDurationSeconds === "number" && spec.leaseDurationSeconds <= 0) {
      causes.push(
        invalidValue("spec.leaseDurationSeconds", spec.leaseDurationSeconds, "must be greater than 0"),
      );
    }
    return causes;
  },
  "rbac.authorization.k8s.io/Role": (o) => rules(o.rules),
  "rbac.authorization.k8s.io/ClusterRole": (o) => rules(o.rules),
  "rbac.authorization.k8s.io/RoleBinding": binding(false),
  "rbac.authorization.k8s.io/ClusterRoleBinding": binding(true),
};

/** The kind-specific validation of a built-in kind (by `group/Kind`); `old` is the stored object on update. */
export function validateBuiltin(
  groupKind: string,
  object: JsonObject,
  old: JsonObject | undefined,
): FieldCause[] {
  return VALIDATORS[groupKind]?.(object, old) ?? [];
}
