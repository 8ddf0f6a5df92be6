// A version's additionalPrinterColumns and scale subresource: checked as the server checks them
// when the CRD is created (ValidateCustomResourceColumnDefinition, ValidateCustomResourceDefinitionSubresources),
// and the cells of the Table view as its table convertor computes them (tableconvertor.go): the first
// value the path selects, typed by the column; a string column prints any value, lists and maps as JSON.

import { goNumber, invalid, required } from "./causes.js";
import { canonicalJson } from "./json.js";
import { evaluateJsonPath, parseJsonPath, type Segment } from "./json-path.js";
import { isObject, type JsonObject } from "./schema.js";
import type { FieldCause, Json, PrinterColumn, ScalePaths } from "./types.js";

const COLUMN_TYPES = ["boolean", "date", "integer", "number", "string"];
const COLUMN_FORMATS = ["byte", "date", "date-time", "double", "float", "int32", "int64", "password"];

export interface Column {
  readonly column: PrinterColumn;
  readonly path: readonly Segment[];
}

/** The columns of `spec.versions[i].additionalPrinterColumns` at `path`, and the causes against them. */
export function readColumns(
  raw: Json | undefined,
  path: string,
): { columns: Column[]; causes: FieldCause[] } {
  const columns: Column[] = [];
  const causes: FieldCause[] = [];
  (Array.isArray(raw) ? raw : []).forEach((entry, i) => {
    const at = `${path}[${i}]`;
    const spec = isObject(entry) ? entry : {};
    const text = (name: string) => (typeof spec[name] === "string" ? (spec[name] as string) : "");
    const [name, type, format, jsonPath] = [text("name"), text("type"), text("format"), text("jsonPath")];
    if (name === "") causes.push(required(`${at}.name`));
    const types = `must be one of ${COLUMN_TYPES.join(",")}`;
    if (type === "") causes.push(required(`${at}.type`, types));
    else if (!COLUMN_TYPES.includes(type)) causes.push(invalid(`${at}.type`, type, types));
    if (format !== "" && !COLUMN_FORMATS.includes(format)) {
      causes.push(invalid(`${at}.format`, format, `must be one of ${COLUMN_FORMATS.join(",")}`));
    }
    // The server names this field "JSONPath" in its errors.
    const pathErrors =
      jsonPath === "" ? [required(`${at}.JSONPath`)] : simplePathErrors(jsonPath, `${at}.JSONPath`);
    causes.push(...pathErrors);
    let segments: Segment[] = [];
    if (pathErrors.length === 0) {
      try {
        segments = parseJsonPath(jsonPath);
      } catch (e) {
        causes.push(
          invalid(`${at}.JSONPath`, jsonPath, `must be a valid JSON path: ${(e as Error).message}`),
        );
      }
    }
    const column: PrinterColumn = {
      name,
      type,
      priority: typeof spec.priority === "number" ? spec.priority : 0,
      jsonPath,
      ...(format !== "" ? { format } : {}),
      ...(typeof spec.description === "string" ? { description: spec.description } : {}),
    };
    columns.push({ column, path: segments });
  });
  return { columns, causes };
}

/** validateSimpleJSONPath: a path in dot notation starting with `.`. */
function simplePathErrors(path: string, field: string): FieldCause[] {
  if (path === "") return [invalid(field, path, "must not be empty")];
  if (!path.startsWith(".")) return [invalid(field, path, "must be a simple json path starting with .")];
  return [];
}

/** The paths of `subresources.scale` at `path`, or undefined when the version has no scale subresource. */
export function readScale(
  raw: Json | undefined,
  path: string,
): { scale: ScalePaths | undefined; causes: FieldCause[] } {
  if (!isObject(raw)) return { scale: undefined, causes: [] };
  const causes: FieldCause[] = [];
  const text = (name: string) => (typeof raw[name] === "string" ? (raw[name] as string) : "");
  const checked = (name: string, prefixes: string[], detail: string): string => {
    const value = text(name);
    const at = `${path}.${name}`;
    if (value === "") return value;
    const errors = simplePathErrors(value, at);
    if (errors.length > 0) causes.push(...errors);
    else if (!prefixes.some((prefix) => value.startsWith(prefix))) causes.push(invalid(at, value, detail));
    return value;
  };
  if (text("specReplicasPath") === "") causes.push(required(`${path}.specReplicasPath`));
  if (text("statusReplicasPath") === "") causes.push(required(`${path}.statusReplicasPath`));
  const specReplicasPath = checked("specReplicasPath", [".spec."], "should be a json path under .spec");
  const statusReplicasPath = checked(
    "statusReplicasPath",
    [".status."],
    "should be a json path under .status",
  );
  const labelSelectorPath = checked(
    "labelSelectorPath",
    [".spec.", ".status."],
    "should be a json path under either .spec or .status",
  );
  const scale: ScalePaths = {
    specReplicasPath,
    statusReplicasPath,
    ...(labelSelectorPath !== "" ? { labelSelectorPath } : {}),
  };
  return { scale, causes };
}

/** The Table cells of one object: null where the path selects nothing or the value does not fit the type. */
export function cells(object: JsonObject, columns: readonly Column[]): Json[] {
  return columns.map(({ column, path }) => {
    const [value] = evaluateJsonPath(path, object);
    return value === undefined ? null : cell(column.type, value);
  });
}

function cell(type: string, value: Json): Json {
  if (value === null) return null;
  switch (type) {
    case "integer":
      return typeof value === "number" ? Math.trunc(value) : null;
    case "number":
    case "boolean":
      return typeof value === (type === "number" ? "number" : "boolean") ? value : null;
    case "date":
      // The server returns a metav1.Time: RFC 3339 in UTC to the second; clients print the age.
      if (typeof value !== "string") return null;
      return Number.isNaN(Date.parse(value))
        ? "<invalid>"
        : new Date(value).toISOString().replace(/\.\d{3}Z$/, "Z");
    case "string":
      return printed(value);
    default:
      return null;
  }
}

/** jsonpath's printing of a value: strings as they are, lists and maps as JSON, the rest with %v. */
function printed(value: Json): string {
  if (typeof value === "string") return value;
  if (typeof value === "number") return goNumber(value);
  if (typeof value === "boolean") return String(value);
  return canonicalJson(value);
}
