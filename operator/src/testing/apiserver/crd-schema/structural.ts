// The checks the API server makes on a version's openAPIV3Schema before it accepts a CRD
// (apiextensions validation.go: ValidateCustomResourceDefinitionOpenAPISchema; schema/validation.go
// and complete.go: ValidateStructural). A structural schema types every node (or marks it
// int-or-string / preserve-unknown-fields), keeps allOf/anyOf/oneOf/not to value validations that
// only restate fields declared outside them, restricts metadata at the root to name and generateName,
// and uses the Kubernetes extensions consistently. Paths and wording are the server's.

import { forbidden, invalid, notSupported, required } from "./causes.js";
import { deepEqual } from "./json.js";
import { key } from "./paths.js";
import { compilePattern, isObject, type JsonObject } from "./schema.js";
import type { FieldCause, Json } from "./types.js";

const TYPES = ["array", "boolean", "integer", "number", "object", "string"];
const META_FIELDS = new Set(["apiVersion", "kind", "metadata"]);
const REASONS = ["FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"];
const NEWLINE = /[\n\r]/;

type Level = "root" | "items" | "field";

interface Context {
  readonly level: Level;
  /** Inside apiVersion, kind or metadata of the root or of an embedded resource. */
  readonly insideMeta: boolean;
  /** Why defaults are forbidden here, when they are. */
  readonly noDefaults: string | undefined;
}

/** The causes for one version's schema; `path` is `spec.versions[i].schema.openAPIV3Schema`. */
export function checkSchema(raw: JsonObject, path: string): FieldCause[] {
  const out: FieldCause[] = [];
  if (raw.nullable === true) out.push(forbidden(`${path}.nullable`, "nullable cannot be true at the root"));
  checkNode(raw, path, { level: "root", insideMeta: false, noDefaults: undefined }, out);
  return out;
}

function checkNode(raw: JsonObject, path: string, ctx: Context, out: FieldCause[]): void {
  checkKeywords(raw, path, ctx, out);
  checkNodeShape(raw, path, ctx, out);
  checkExtensions(raw, path, out);
  checkRuleEntries(raw, path, out);
  checkValueValidations(raw, path, ctx.level, out);

  const type = raw.type;
  const isResource = ctx.level === "root" || raw["x-kubernetes-embedded-resource"] === true;
  const properties = isObject(raw.properties) ? raw.properties : {};
  const ap = raw.additionalProperties;
  if (ap !== undefined && ap !== null) {
    if (Object.keys(properties).length > 0 && ap !== true) {
      out.push(
        forbidden(`${path}.additionalProperties`, "additionalProperties and properties are mutual exclusive"),
      );
    }
    if (isObject(ap)) {
      const noDefaults = ctx.insideMeta
        ? "inside additionalProperties applying to object metadata"
        : ctx.noDefaults;
      checkNode(ap, `${path}.additionalProperties`, { ...ctx, level: "field", noDefaults }, out);
    }
  }
  for (const [name, property] of Object.entries(properties)) {
    if (!isObject(property)) continue;
    const meta = isResource && META_FIELDS.has(name);
    const noDefaults =
      ctx.level === "root" && META_FIELDS.has(name) ? `in top-level ${name}` : ctx.noDefaults;
    const sub = { level: "field" as const, insideMeta: ctx.insideMeta || meta, noDefaults };
    checkNode(property, key(`${path}.properties`, name), sub, out);
  }
  if (isObject(raw.items)) checkNode(raw.items, `${path}.items`, { ...ctx, level: "items" }, out);
  else if (type === "array" && raw.items === undefined)
    out.push(required(`${path}.items`, "must be specified"));
}

/** OpenAPI keywords a CRD schema may not use, and the types it may. */
function checkKeywords(raw: JsonObject, path: string, ctx: Context, out: FieldCause[]): void {
  const type = raw.type;
  if (type !== undefined && typeof type !== "string")
    out.push(invalid(`${path}.type`, type, "must be a string"));
  if (typeof type === "string" && type !== "" && !TYPES.includes(type)) {
    out.push(notSupported(`${path}.type`, type, TYPES));
  }
  if (type === "null") {
    out.push(forbidden(`${path}.type`, "type cannot be set to null, use nullable as an alternative"));
  }
  if (raw.default !== undefined && raw.default !== null && ctx.noDefaults !== undefined) {
    out.push(forbidden(`${path}.default`, `must not be set ${ctx.noDefaults}`));
  }
  const unsupported: [string, boolean][] = [
    ["id", raw.id !== undefined],
    ["additionalItems", raw.additionalItems !== undefined],
    ["patternProperties", isObject(raw.patternProperties) && Object.keys(raw.patternProperties).length > 0],
    ["definitions", isObject(raw.definitions) && Object.keys(raw.definitions).length > 0],
    ["dependencies", raw.dependencies !== undefined],
    ["$ref", raw.$ref !== undefined],
  ];
  for (const [name, present] of unsupported) {
    if (present) out.push(forbidden(`${path}.${name}`, `${name} is not supported`));
  }
  if (Array.isArray(raw.items)) {
    out.push(forbidden(`${path}.items`, "items must be a schema object and not an array"));
  }
  if (ctx.insideMeta && raw["x-kubernetes-embedded-resource"] === true) {
    out.push(forbidden(`${path}.x-kubernetes-embedded-resource`, "must not be used inside of resource meta"));
  }
  if (raw.uniqueItems === true) {
    out.push(
      forbidden(
        `${path}.uniqueItems`,
        "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
      ),
    );
  }
  if (typeof raw.pattern === "string" && compilePattern(raw.pattern) === undefined) {
    const detail = `must be a valid regular expression, but isn't: ${patternError(raw.pattern)}`;
    out.push(invalid(`${path}.pattern`, raw.pattern, detail));
  }
}

function patternError(pattern: string): string {
  try {
    new RegExp(pattern);
    return "";
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** Structural invariants: types, the root, embedded resources and metadata. */
function checkNodeShape(raw: JsonObject, path: string, ctx: Context, out: FieldCause[]): void {
  const type = typeof raw.type === "string" ? raw.type : "";
  const embedded = raw["x-kubernetes-embedded-resource"] === true;
  const intOrString = raw["x-kubernetes-int-or-string"] === true;
  const preserve = raw["x-kubernetes-preserve-unknown-fields"] === true;
  if (embedded && type !== "object") {
    const detail = "must be object if x-kubernetes-embedded-resource is true";
    out.push(type === "" ? required(`${path}.type`, detail) : invalid(`${path}.type`, type, detail));
  } else if (type === "" && !intOrString && !preserve) {
    const where = {
      root: "at the root",
      items: "for specified array items",
      field: "for specified object fields",
    };
    out.push(required(`${path}.type`, `must not be empty ${where[ctx.level]}`));
  }
  if (ctx.level === "root" && type !== "" && type !== "object") {
    out.push(invalid(`${path}.type`, type, "must be object at the root"));
  }
  const ap = raw.additionalProperties;
  if (ap !== undefined && ap !== null && ctx.level === "root") {
    out.push(forbidden(`${path}.additionalProperties`, "must not be used at the root"));
  }
  if (ap !== undefined && ap !== null && embedded) {
    out.push(
      forbidden(`${path}.additionalProperties`, "must not be used if x-kubernetes-embedded-resource is set"),
    );
  }
  if (intOrString && preserve) {
    const detail = "must be false if x-kubernetes-int-or-string is true";
    out.push(invalid(`${path}.x-kubernetes-preserve-unknown-fields`, true, detail));
  }
  if (intOrString && embedded) {
    out.push(
      invalid(
        `${path}.x-kubernetes-embedded-resource`,
        true,
        "must be false if x-kubernetes-int-or-string is true",
      ),
    );
  }
  const properties = isObject(raw.properties) ? raw.properties : {};
  if (embedded && !preserve && Object.keys(properties).length === 0) {
    const detail =
      "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields";
    out.push(required(`${path}.properties`, detail));
  }
  const isResource = ctx.level === "root" || embedded;
  for (const name of ["kind", "apiVersion"]) {
    const property = properties[name];
    if (isResource && isObject(property) && property.type !== "string") {
      out.push(invalid(`${key(`${path}.properties`, name)}.type`, property.type ?? "", "must be string"));
    }
  }
  const metadata = properties.metadata;
  if (isObject(metadata))
    checkMetadata(metadata, key(`${path}.properties`, "metadata"), ctx.level, isResource, out);
}

/** The root's metadata may only restrict name and generateName; the server fills in the rest. */
function checkMetadata(
  raw: JsonObject,
  path: string,
  level: Level,
  isResource: boolean,
  out: FieldCause[],
): void {
  if (isResource && raw.type !== "object")
    out.push(invalid(`${path}.type`, raw.type ?? "", "must be object"));
  if (level !== "root") return;
  const properties = isObject(raw.properties) ? Object.keys(raw.properties) : [];
  const onlyNames = properties.every((name) => name === "name" || name === "generateName");
  const ignored = new Set(["type", "default", "properties", "example", "externalDocs"]);
  const others = Object.keys(raw).filter((k) => !ignored.has(k));
  if (!onlyNames || others.length > 0) {
    const detail =
      "must not specify anything other than name and generateName, but metadata is implicitly specified";
    out.push(forbidden(path, detail));
  }
}

/** x-kubernetes-* extensions: values, the types they need, list-map keys. */
function checkExtensions(raw: JsonObject, path: string, out: FieldCause[]): void {
  const type = typeof raw.type === "string" ? raw.type : "";
  const typeMust = (expected: string, detail: string) => {
    if (type === expected) return;
    out.push(type === "" ? required(`${path}.type`, detail) : invalid(`${path}.type`, type, detail));
  };
  if (raw["x-kubernetes-preserve-unknown-fields"] === false) {
    out.push(invalid(`${path}.x-kubernetes-preserve-unknown-fields`, false, "must be true or undefined"));
  }
  const mapType = raw["x-kubernetes-map-type"];
  if (mapType !== undefined) {
    typeMust("object", "must be object if x-kubernetes-map-type is specified");
    if (mapType !== "atomic" && mapType !== "granular") {
      out.push(notSupported(`${path}.x-kubernetes-map-type`, mapType, ["atomic", "granular"]));
    }
  }
  const listType = raw["x-kubernetes-list-type"];
  const items = isObject(raw.items) ? raw.items : undefined;
  if (listType !== undefined) {
    typeMust("array", "must be array if x-kubernetes-list-type is specified");
    if (listType !== "atomic" && listType !== "set" && listType !== "map") {
      out.push(notSupported(`${path}.x-kubernetes-list-type`, listType, ["atomic", "set", "map"]));
    }
  }
  if (type === "array" && listType === "set" && items !== undefined) {
    const detail = "must be atomic as item of a list with x-kubernetes-list-type=set";
    const itemsListType = items["x-kubernetes-list-type"];
    if (items.type === "array" && itemsListType !== undefined && itemsListType !== "atomic") {
      out.push(invalid(`${path}.items.x-kubernetes-list-type`, itemsListType, detail));
    }
    if (items.type === "object" && items["x-kubernetes-map-type"] !== "atomic") {
      out.push(
        invalid(`${path}.items.x-kubernetes-map-type`, items["x-kubernetes-map-type"] ?? null, detail),
      );
    }
  }
  const keys = Array.isArray(raw["x-kubernetes-list-map-keys"]) ? raw["x-kubernetes-list-map-keys"] : [];
  if (keys.length > 0 && listType !== "map") {
    const detail = "must be map if x-kubernetes-list-map-keys is non-empty";
    const at = `${path}.x-kubernetes-list-type`;
    out.push(listType === undefined ? required(at, detail) : invalid(at, listType, detail));
  }
  if (listType === "map") checkListMap(raw, path, keys, items, out);
  if ((listType === "set" || listType === "map") && items?.nullable === true) {
    out.push(
      forbidden(`${path}.items.nullable`, `cannot be nullable when x-kubernetes-list-type is ${listType}`),
    );
  }
}

function checkListMap(
  raw: JsonObject,
  path: string,
  keys: Json[],
  items: JsonObject | undefined,
  out: FieldCause[],
) {
  const keysPath = `${path}.x-kubernetes-list-map-keys`;
  if (keys.length === 0) out.push(required(keysPath, "must not be empty if x-kubernetes-list-type is map"));
  if (items === undefined) {
    if (raw.items === undefined)
      out.push(required(`${path}.items`, "must have a schema if x-kubernetes-list-type is map"));
    return;
  }
  if (items.type !== "object") {
    const detail = "must be object if parent array's x-kubernetes-list-type is map";
    out.push(invalid(`${path}.items.type`, items.type ?? "", detail));
    return;
  }
  const properties = isObject(items.properties) ? items.properties : {};
  const requiredKeys = Array.isArray(items.required) ? items.required : [];
  const seen = new Set<Json>();
  for (const k of keys) {
    const property = typeof k === "string" ? properties[k] : undefined;
    const at = `${key(`${path}.items.properties`, String(k))}`;
    if (!isObject(property)) {
      out.push(invalid(keysPath, keys, "entries must all be names of item properties"));
    } else {
      if (property.type === "array" || property.type === "object") {
        const detail = "must be a scalar type if parent array's x-kubernetes-list-type is map";
        out.push(invalid(`${at}.type`, items.type, detail));
      }
      if (!requiredKeys.includes(k) && (property.default === undefined || property.default === null)) {
        const detail =
          "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property";
        out.push(required(`${at}.default`, detail));
      }
      if (property.nullable === true) {
        const detail = "this property is in x-kubernetes-list-map-keys, so it cannot be nullable";
        out.push(forbidden(`${at}.nullable`, detail));
      }
    }
    if (seen.has(k)) out.push(invalid(keysPath, keys, "must not contain duplicate entries"));
    seen.add(k);
  }
}

/** The entries of x-kubernetes-validations, before their rules are compiled. */
function checkRuleEntries(raw: JsonObject, path: string, out: FieldCause[]): void {
  const rules = raw["x-kubernetes-validations"];
  if (!Array.isArray(rules)) return;
  rules.forEach((entry, i) => {
    const at = `${path}.x-kubernetes-validations[${i}]`;
    const rule = isObject(entry) && typeof entry.rule === "string" ? entry.rule : "";
    const message = isObject(entry) && typeof entry.message === "string" ? entry.message : "";
    const spec = isObject(entry) ? entry : {};
    if (rule.trim() === "") out.push(required(`${at}.rule`, "rule is not specified"));
    else if (message !== "" && message.trim() === "") {
      out.push(invalid(`${at}.message`, message, "message must be non-empty if specified"));
    } else if (NEWLINE.test(message.trim())) {
      out.push(invalid(`${at}.message`, message, "message must not contain line breaks"));
    } else if (NEWLINE.test(rule.trim()) && message.trim() === "") {
      out.push(required(`${at}.message`, "message must be specified if rule contains line breaks"));
    }
    const messageExpression = spec.messageExpression;
    if (
      typeof messageExpression === "string" &&
      messageExpression !== "" &&
      messageExpression.trim() === ""
    ) {
      out.push(required(`${at}.messageExpression`, "messageExpression must be non-empty if specified"));
    }
    const reason = spec.reason;
    if (reason !== undefined && (typeof reason !== "string" || !REASONS.includes(reason))) {
      out.push(notSupported(`${at}.reason`, reason, REASONS));
    }
    const fieldPath = spec.fieldPath;
    if (typeof fieldPath === "string" && fieldPath !== "" && fieldPath.trim() === "") {
      out.push(invalid(`${at}.fieldPath`, fieldPath, "fieldPath must be non-empty if specified"));
    }
    if (typeof fieldPath === "string" && NEWLINE.test(fieldPath)) {
      out.push(invalid(`${at}.fieldPath`, fieldPath, "fieldPath must not contain line breaks"));
    }
  });
}

const INT_OR_STRING_ANY_OF: Json = [{ type: "integer" }, { type: "string" }];

/** allOf/anyOf/oneOf/not: value validations only, over fields declared outside them. */
function checkValueValidations(raw: JsonObject, path: string, level: Level, out: FieldCause[]): void {
  // The two int-or-string idioms may name the types: anyOf [integer, string], or that as allOf[0].
  const skipAnyOf = deepEqual(raw.anyOf, INT_OR_STRING_ANY_OF);
  const allOf = Array.isArray(raw.allOf) ? raw.allOf : [];
  const first = allOf[0];
  const skipFirstAllOfAnyOf = isObject(first) && deepEqual(first.anyOf, INT_OR_STRING_ANY_OF);
  for (const [junctor, skip] of [
    ["anyOf", skipAnyOf],
    ["allOf", false],
    ["oneOf", false],
  ] as const) {
    const clauses = raw[junctor];
    if (!Array.isArray(clauses)) continue;
    clauses.forEach((clause, i) => {
      if (!isObject(clause) || skip) return;
      const at = `${path}.${junctor}[${i}]`;
      checkNested(clause, at, level, junctor === "allOf" && i === 0 && skipFirstAllOfAnyOf, out);
      checkComplete(clause, raw, path, at, out);
    });
  }
  if (isObject(raw.not)) {
    checkNested(raw.not, `${path}.not`, level, false, out);
    checkComplete(raw.not, raw, path, `${path}.not`, out);
  }
}

const NESTED_FORBIDDEN: [string, (value: Json) => boolean, string][] = [
  ["type", (v) => typeof v === "string" && v !== "", "must be empty to be structural"],
  ["additionalProperties", (v) => v !== null, "must be undefined to be structural"],
  ["default", (v) => v !== null, "must be undefined to be structural"],
  ["title", (v) => typeof v === "string" && v !== "", "must be empty to be structural"],
  ["description", (v) => typeof v === "string" && v !== "", "must be empty to be structural"],
  ["nullable", (v) => v === true, "must be false to be structural"],
  ["externalDocs", (v) => v !== null, "must be undefined to be structural"],
  ["x-kubernetes-preserve-unknown-fields", (v) => v === true, "must be false to be structural"],
  ["x-kubernetes-embedded-resource", (v) => v === true, "must be false to be structural"],
  ["x-kubernetes-int-or-string", (v) => v === true, "must be false to be structural"],
  ["x-kubernetes-list-map-keys", (v) => Array.isArray(v) && v.length > 0, "must be empty to be structural"],
  ["x-kubernetes-list-type", (v) => v !== null, "must be undefined to be structural"],
  ["x-kubernetes-map-type", (v) => v !== null, "must be undefined to be structural"],
  ["x-kubernetes-validations", (v) => Array.isArray(v) && v.length > 0, "must be empty to be structural"],
];

function checkNested(
  raw: JsonObject,
  path: string,
  level: Level,
  skipAnyOf: boolean,
  out: FieldCause[],
): void {
  for (const [name, present, detail] of NESTED_FORBIDDEN) {
    const value = raw[name];
    if (value !== undefined && present(value)) out.push(forbidden(`${path}.${name}`, detail));
  }
  const properties = isObject(raw.properties) ? raw.properties : {};
  if (properties.metadata !== undefined) {
    out.push(forbidden(key(`${path}.properties`, "metadata"), "must not be specified in a nested context"));
  }
  for (const [name, property] of Object.entries(properties)) {
    if (isObject(property)) checkNested(property, key(`${path}.properties`, name), "field", false, out);
  }
  if (isObject(raw.items)) checkNested(raw.items, `${path}.items`, level, false, out);
  for (const junctor of ["anyOf", "allOf", "oneOf"] as const) {
    const clauses = raw[junctor];
    if (!Array.isArray(clauses) || (junctor === "anyOf" && skipAnyOf)) continue;
    clauses.forEach((clause, i) => {
      if (isObject(clause)) checkNested(clause, `${path}.${junctor}[${i}]`, level, false, out);
    });
  }
  if (isObject(raw.not)) checkNested(raw.not, `${path}.not`, level, false, out);
}

/** Every field or item a value validation speaks of must be declared in the structural schema. */
function checkComplete(
  nested: JsonObject,
  structural: JsonObject,
  sPath: string,
  vPath: string,
  out: FieldCause[],
) {
  const properties = isObject(nested.properties) ? nested.properties : {};
  const declared = isObject(structural.properties) ? structural.properties : {};
  for (const [name, property] of Object.entries(properties)) {
    const target = declared[name];
    const at = key(`${sPath}.properties`, name);
    const from = key(`${vPath}.properties`, name);
    if (!isObject(target)) out.push(required(at, `because it is defined in ${from}`));
    else if (isObject(property)) checkComplete(property, target, at, from, out);
  }
  if (isObject(nested.items)) {
    if (!isObject(structural.items))
      out.push(required(`${sPath}.items`, `because it is defined in ${vPath}.items`));
    else checkComplete(nested.items, structural.items, `${sPath}.items`, `${vPath}.items`, out);
  }
  for (const junctor of ["anyOf", "allOf", "oneOf"] as const) {
    const clauses = nested[junctor];
    if (!Array.isArray(clauses)) continue;
    clauses.forEach((clause, i) => {
      if (isObject(clause)) checkComplete(clause, structural, sPath, `${vPath}.${junctor}[${i}]`, out);
    });
  }
  if (isObject(nested.not)) checkComplete(nested.not, structural, sPath, `${vPath}.not`, out);
}
