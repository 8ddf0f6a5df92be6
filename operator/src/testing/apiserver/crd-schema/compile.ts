// compileCrd: the API server's checks of an apiextensions.k8s.io/v1 CustomResourceDefinition
// (apiextensions validation.go: ValidateCustomResourceDefinition) and the compilation of each served
// version. Defaults the server applies to a CRD before checking it are assumed here too: singular is
// the lower-cased kind, listKind is `<Kind>List`.

import { GoRepr, invalid, notSupported, quote, required } from "./causes.js";
import { readColumns, readScale } from "./columns.js";
import { checkDefaults } from "./defaults.js";
import { dns1035LabelErrors, dns1123SubdomainErrors } from "./names.js";
import { compileRules } from "./rules.js";
import { isObject, type JsonObject, parseSchema } from "./schema.js";
import { checkSchema } from "./structural.js";
import type { CompiledVersion, CrdCompileResult, FieldCause, Json } from "./types.js";
import { compiledVersion } from "./version.js";

export function compileCrd(crd: object): CrdCompileResult {
  const raw = crd as JsonObject;
  const spec = objectAt(raw, "spec");
  const names = objectAt(spec, "names");
  const group = text(spec, "group");
  const kind = text(names, "kind");
  const plural = text(names, "plural");
  const scope = text(spec, "scope");
  const causes: FieldCause[] = [
    ...checkMetadata(objectAt(raw, "metadata"), plural, group),
    ...checkGroup(group),
    ...checkNames(names),
  ];
  if (scope === "") causes.push(required("spec.scope"));
  else if (scope !== "Cluster" && scope !== "Namespaced") {
    causes.push(notSupported("spec.scope", scope, ["Cluster", "Namespaced"]));
  }
  if (spec.preserveUnknownFields === true) {
    const detail =
      "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead";
    causes.push(invalid("spec.preserveUnknownFields", true, detail));
  }
  const conversion = spec.conversion;
  if (isObject(conversion)) {
    const strategy = text(conversion, "strategy");
    if (strategy === "") causes.push(required("spec.conversion.strategy"));
    else if (strategy !== "None" && strategy !== "Webhook") {
      causes.push(notSupported("spec.conversion.strategy", strategy, ["None", "Webhook"]));
    }
  }

  const versions = Array.isArray(spec.versions) ? spec.versions.filter(isObject) : [];
  const compiled: CompiledVersion[] = [];
  versions.forEach((version, i) => {
    const at = `spec.versions[${i}]`;
    const name = text(version, "name");
    const nameErrors = dns1035LabelErrors(name);
    if (nameErrors.length > 0) causes.push(invalid(`${at}.name`, name, nameErrors.join(",")));
    const result = compileVersion(version, at, { group, kind, plural, namespaced: scope === "Namespaced" });
    causes.push(...result.causes);
    if (result.version !== undefined && version.served === true) compiled.push(result.version);
  });
  const versionNames = versions.map((version) => text(version, "name"));
  if (new Set(versionNames).size !== versionNames.length) {
    causes.push(invalid("spec.versions", versionsRepr(versions), "must contain unique version names"));
  }
  if (versions.filter((version) => version.storage === true).length !== 1) {
    const detail = "must have exactly one version marked as storage version";
    causes.push(invalid("spec.versions", versionsRepr(versions), detail));
  }
  return { versions: causes.length === 0 ? compiled : [], causes };
}

interface Identity {
  readonly group: string;
  readonly kind: string;
  readonly plural: string;
  readonly namespaced: boolean;
}

function compileVersion(
  version: JsonObject,
  at: string,
  identity: Identity,
): { version: CompiledVersion | undefined; causes: FieldCause[] } {
  const schemaPath = `${at}.schema.openAPIV3Schema`;
  const raw = objectAt(version, "schema").openAPIV3Schema;
  const subresources = objectAt(version, "subresources");
  const { columns, causes: columnCauses } = readColumns(
    version.additionalPrinterColumns,
    `${at}.additionalPrinterColumns`,
  );
  const { scale, causes: scaleCauses } = readScale(subresources.scale, `${at}.subresources.scale`);
  const causes = [...columnCauses, ...scaleCauses];
  if (!isObject(raw)) {
    causes.push(required(schemaPath, "schemas are required"));
    return { version: undefined, causes };
  }
  const schemaCauses = checkSchema(raw, schemaPath);
  // As on the server, rules are only compiled, and defaults only checked, in a structural schema.
  if (schemaCauses.length > 0) return { version: undefined, causes: [...causes, ...schemaCauses] };
  const schema = parseSchema(raw);
  const { rules, causes: ruleCauses } = compileRules(schema, schemaPath);
  if (ruleCauses.length > 0) return { version: undefined, causes: [...causes, ...ruleCauses] };
  causes.push(...checkDefaults(schema, schemaPath, rules));
  const parts = {
    ...identity,
    version: text(version, "name"),
    hasStatus: isObject(subresources.status),
    scale,
    columns,
    schema,
    rules,
  };
  return { version: causes.length === 0 ? compiledVersion(parts) : undefined, causes };
}

function checkMetadata(metadata: JsonObject, plural: string, group: string): FieldCause[] {
  const name = text(metadata, "name");
  if (name === "") {
    return text(metadata, "generateName") === ""
      ? [required("metadata.name", "name or generateName is required")]
      : [];
  }
  const causes = dns1123SubdomainErrors(name).map((message) => invalid("metadata.name", name, message));
  if (name !== `${plural}.${group}`)
    causes.push(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'));
  return causes;
}

function checkGroup(group: string): FieldCause[] {
  if (group === "") return [required("spec.group")];
  const errors = dns1123SubdomainErrors(group);
  if (errors.length > 0) return [invalid("spec.group", group, errors.join(","))];
  return group.split(".").length < 2
    ? [invalid("spec.group", group, "should be a domain with at least one dot")]
    : [];
}

function checkNames(names: JsonObject): FieldCause[] {
  const causes: FieldCause[] = [];
  const kind = text(names, "kind");
  const plural = text(names, "plural");
  const singular = text(names, "singular") || kind.toLowerCase();
  const listKind = text(names, "listKind") || (kind === "" ? "" : `${kind}List`);
  const label = (field: string, value: string, lower = false) => {
    const errors = dns1035LabelErrors(lower ? value.toLowerCase() : value);
    if (value === "" || errors.length === 0) return;
    const detail = lower
      ? `may have mixed case, but should otherwise match: ${errors.join(",")}`
      : errors.join(",");
    causes.push(invalid(`spec.names.${field}`, value, detail));
  };
  for (const [field, value] of [
    ["plural", plural],
    ["singular", singular],
    ["kind", kind],
    ["listKind", listKind],
  ] as const) {
    if (value === "") causes.push(required(`spec.names.${field}`));
  }
  label("plural", plural);
  label("singular", singular);
  label("kind", kind, true);
  label("listKind", listKind, true);
  strings(names.shortNames).forEach((shortName, i) => {
    const errors = dns1035LabelErrors(shortName);
    if (errors.length > 0) causes.push(invalid(`spec.names.shortNames[${i}]`, shortName, errors.join(",")));
  });
  if (kind !== "" && kind === listKind) {
    causes.push(invalid("spec.names.listKind", listKind, "kind and listKind may not be the same"));
  }
  strings(names.categories).forEach((category, i) => {
    const errors = dns1035LabelErrors(category);
    if (errors.length > 0) causes.push(invalid(`spec.names.categories[${i}]`, category, errors.join(",")));
  });
  return causes;
}

/** The versions as the server prints them in its errors (Go's %#v), shortened to what identifies them. */
function versionsRepr(versions: readonly JsonObject[]): GoRepr {
  const items = versions.map(
    (v) =>
      `apiextensions.CustomResourceDefinitionVersion{Name:${quote(text(v, "name"))}, Served:${v.served === true}, Storage:${v.storage === true}, ...}`,
  );
  return new GoRepr(`[]apiextensions.CustomResourceDefinitionVersion{${items.join(", ")}}`);
}

function objectAt(raw: JsonObject, name: string): JsonObject {
  const value = raw[name];
  return isObject(value) ? value : {};
}

function text(raw: JsonObject, name: string): string {
  const value = raw[name];
  return typeof value === "string" ? value : "";
}

function strings(value: Json | undefined): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}
