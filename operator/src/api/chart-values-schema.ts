import type { JSONSchemaProps, Json } from "./schema.js";
import { type CustomResourceDefinition, coordinatorCrd, providerReleaseCrd } from "./v1alpha1/crds.js";

// The Helm chart's values.schema.json. What the chart passes through to a custom resource
// (coordinator.config is the Coordinator's spec.config) is checked by `helm install` against the CRD's
// own schema, converted here, so no hand-kept copy drifts from the operator's types; the CEL rules stay
// the API server's. The rest (the chart's own values) is hand-written in
// charts/darkbloom/values.schema.base.json, where `{ "$generated": "<Kind>.<field>.<field>…" }` stands
// for a CRD field. write-crds.ts writes the result with the CRDs; tests/helm/values.test.ts fails while
// the committed file differs.

/** The chart's folder, from src/api and from dist/api alike. */
export const CHART_DIRECTORY = new URL("../../../charts/darkbloom/", import.meta.url);
/** The skeleton (in the chart's .helmignore: Helm reads only values.schema.json). */
export const VALUES_SCHEMA_BASE = "values.schema.base.json";
export const VALUES_SCHEMA = "values.schema.json";

const REGENERATE = "npm run build && node operator/dist/api/write-crds.js";

/** values.schema.json's `$comment` (JSON has no comments; Helm's validator ignores this keyword). */
export const VALUES_SCHEMA_NOTICE =
  `Generated from ${VALUES_SCHEMA_BASE} and the CRDs (operator/src/api/v1alpha1) by ` +
  `operator/src/api/write-crds.ts: do not edit. Regenerate with: ${REGENERATE}`;

/** Biome's line width (biome.json): the generated file passes `biome check` as written. */
const LINE_WIDTH = 110;

type JsonObject = { [key: string]: Json };

/** The keywords a CRD node shares with JSON Schema draft-07 and that mean the same there. */
const ASSERTIONS = [
  "enum",
  "pattern",
  "minimum",
  "maximum",
  "minLength",
  "maxLength",
  "minItems",
  "maxItems",
] as const;

/**
 * A CRD schema node as a JSON Schema for Helm, refusing what the API server's structural schema
 * refuses: its descriptions and JSON Schema assertions, objects closed (the API server prunes or, with
 * strict field validation, refuses unknown fields; Helm can only refuse them), `set` lists unique.
 * Dropped: the Kubernetes extensions and the CEL rules (the API server still checks those when Helm
 * applies the resource), `format` (OpenAPI's int32 and int64 are no JSON Schema formats, and Helm
 * asserts none), and `default`, which Helm never applies from a values schema: the API server
 * defaults the resource instead.
 */
export function helmSchema(node: JSONSchemaProps): JsonObject {
  const out: JsonObject = {};
  if (node.description !== undefined) out.description = node.description;
  const type: Json | undefined = node["x-kubernetes-int-or-string"] ? ["integer", "string"] : node.type;
  if (type !== undefined) out.type = node.nullable ? [type, "null"].flat() : type;
  for (const key of ASSERTIONS) {
    const value = node[key];
    if (value !== undefined) out[key] = Array.isArray(value) ? [...value] : value;
  }
  // OpenAPI's nullable admits null whatever the enum lists; JSON Schema's enum must list it.
  if (node.nullable && Array.isArray(out.enum)) out.enum.push(null);
  if (node["x-kubernetes-list-type"] === "set") out.uniqueItems = true;
  if (node.items) out.items = helmSchema(node.items);
  if (node.properties) {
    out.properties = Object.fromEntries(
      Object.entries(node.properties).map(([key, child]) => [key, helmSchema(child)]),
    );
  }
  if (node.additionalProperties) out.additionalProperties = helmSchema(node.additionalProperties);
  else if (node.type === "object" && !node["x-kubernetes-preserve-unknown-fields"]) {
    out.additionalProperties = false;
  }
  if (node.required?.length) out.required = [...node.required];
  return out;
}

/** The CRD field a placeholder names: `Coordinator.spec.config` is the Coordinator's spec.config. */
export function crdField(reference: string, crds: CustomResourceDefinition[] = allCrds()): JSONSchemaProps {
  const [kind, ...path] = reference.split(".");
  const crd = crds.find((c) => c.spec.names.kind === kind);
  const root = crd?.spec.versions[0]?.schema.openAPIV3Schema;
  if (!root) throw new Error(`"$generated": "${reference}": no CRD of kind ${kind}`);
  let node = root;
  for (const [index, key] of path.entries()) {
    const child = node.properties?.[key];
    if (!child) {
      throw new Error(`"$generated": "${reference}": ${kind} has no ${path.slice(0, index + 1).join(".")}`);
    }
    node = child;
  }
  return node;
}

function allCrds(): CustomResourceDefinition[] {
  return [coordinatorCrd(), providerReleaseCrd()];
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `value` with every `{ "$generated": reference }` replaced by that CRD field's schema for Helm. */
function fill(value: Json, crds: CustomResourceDefinition[], path: string): Json {
  if (Array.isArray(value)) return value.map((item, i) => fill(item, crds, `${path}[${i}]`));
  if (!isObject(value)) return value;
  if ("$generated" in value) {
    const reference = value.$generated;
    if (typeof reference !== "string" || Object.keys(value).length !== 1) {
      throw new Error(`${path}: a placeholder is exactly { "$generated": "<Kind>.<field>…" }`);
    }
    return helmSchema(crdField(reference, crds));
  }
  return Object.fromEntries(
    Object.entries(value).map(([key, child]) => [key, fill(child, crds, `${path}/${key}`)]),
  );
}

/**
 * values.schema.json from the text of values.schema.base.json: the placeholders filled, the base's
 * `$comment` (which says what the base is) replaced by the generated file's notice, formatted as Biome
 * formats JSON.
 */
export function renderValuesSchema(baseText: string, crds: CustomResourceDefinition[] = allCrds()): string {
  let base: Json;
  try {
    base = JSON.parse(baseText) as Json;
  } catch (error) {
    throw new Error(`${VALUES_SCHEMA_BASE}: ${(error as Error).message}`);
  }
  if (!isObject(base)) throw new Error(`${VALUES_SCHEMA_BASE}: not a JSON object`);
  const { $schema, $comment: _, ...rest } = base;
  const filled = fill(rest, crds, VALUES_SCHEMA_BASE) as JsonObject;
  const schema: JsonObject = $schema === undefined ? {} : { $schema };
  return formatJson({ ...schema, $comment: VALUES_SCHEMA_NOTICE, ...filled });
}

/**
 * JSON as Biome writes it (2-space indent, LINE_WIDTH): a value on one line where it fits (Biome keeps
 * it so), else one entry a line (Biome keeps an object expanded, and breaks an array that does not
 * fit so).
 */
export function formatJson(value: Json): string {
  return `${print(value, "", 0, 0)}\n`;
}

function oneLine(value: Json): string {
  if (Array.isArray(value)) return `[${value.map(oneLine).join(", ")}]`;
  if (isObject(value)) {
    const entries = Object.entries(value).map(([key, child]) => `${JSON.stringify(key)}: ${oneLine(child)}`);
    return entries.length === 0 ? "{}" : `{ ${entries.join(", ")} }`;
  }
  return scalar(value);
}

/** JSON.stringify's, but for exponents: Biome writes 1e21, not 1e+21. */
function scalar(value: Json): string {
  return typeof value === "number" ? String(value).replace("e+", "e") : JSON.stringify(value);
}

/** `value` at `indent`, after `before` characters of its line and before `after` (a comma). */
function print(value: Json, indent: string, before: number, after: number): string {
  const one = oneLine(value);
  if (indent.length + before + one.length + after <= LINE_WIDTH) return one;
  const inner = `${indent}  `;
  const last = (i: number, length: number) => (i < length - 1 ? 1 : 0);
  if (Array.isArray(value) && value.every((item) => typeof item === "number")) {
    return `[\n${fillLines(value.map(scalar), inner)}\n${indent}]`;
  }
  if (Array.isArray(value)) {
    const lines = value.map((item, i) => inner + print(item, inner, 0, last(i, value.length)));
    return `[\n${lines.join(",\n")}\n${indent}]`;
  }
  if (!isObject(value)) return one;
  const entries = Object.entries(value);
  const lines = entries.map(([key, child], i) => {
    const prefix = `${JSON.stringify(key)}: `;
    return inner + prefix + print(child, inner, prefix.length, last(i, entries.length));
  });
  return `{\n${lines.join(",\n")}\n${indent}}`;
}

/** A broken array of numbers, as Biome fills it: as many a line as fit, each but the last with its comma. */
function fillLines(items: string[], indent: string): string {
  const lines: string[] = [];
  let line = "";
  for (const [i, item] of items.entries()) {
    const text = i < items.length - 1 ? `${item},` : item;
    if (line !== "" && indent.length + line.length + 1 + text.length > LINE_WIDTH) {
      lines.push(indent + line);
      line = text;
    } else line = line === "" ? text : `${line} ${text}`;
  }
  return [...lines, indent + line].join("\n");
}
