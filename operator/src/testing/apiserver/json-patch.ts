import { clone, deepEqual, isObject, type Json, type JsonObject } from "./json.js";
import { ApiError, badRequest } from "./status-errors.js";

// RFC 6902 JSON Patch, with the errors of the library the real server uses (evanphx/json-patch):
// a malformed patch is a 400, a patch that does not apply (including a failed `test`) a 422.

interface Operation {
  op: "add" | "remove" | "replace" | "move" | "copy" | "test";
  path: string[];
  rawPath: string;
  from?: string[];
  rawFrom?: string;
  value?: Json;
}

function parsePointer(pointer: Json | undefined, what: string): string[] {
  if (typeof pointer !== "string") throw badRequest(`json: cannot unmarshal ${what}: missing value`);
  if (pointer === "") return [];
  if (!pointer.startsWith("/")) throw badRequest(`invalid JSON pointer: ${JSON.stringify(pointer)}`);
  return pointer
    .slice(1)
    .split("/")
    .map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function parse(body: Json): Operation[] {
  if (!Array.isArray(body))
    throw badRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch");
  return body.map((raw) => {
    if (!isObject(raw)) throw badRequest("json: cannot unmarshal into Go value of type jsonpatch.Operation");
    const op = raw.op;
    if (
      op !== "add" &&
      op !== "remove" &&
      op !== "replace" &&
      op !== "move" &&
      op !== "copy" &&
      op !== "test"
    ) {
      throw badRequest(`Unexpected kind: ${String(op)}`);
    }
    const operation: Operation = { op, path: parsePointer(raw.path, "path"), rawPath: String(raw.path) };
    if (op === "move" || op === "copy") {
      operation.from = parsePointer(raw.from, "from");
      operation.rawFrom = String(raw.from);
    }
    if (op === "add" || op === "replace" || op === "test") {
      if (!("value" in raw)) throw badRequest(`${op} operation does not apply: missing value`);
      operation.value = raw.value!;
    }
    return operation;
  });
}

function unprocessable(message: string): ApiError {
  return new ApiError(422, "Invalid", message);
}

/** The container of the pointer's last token, and that token. */
function parentOf(doc: Json, path: string[], op: string, raw: string): { parent: Json; key: string } {
  let current = doc;
  for (const token of path.slice(0, -1)) {
    const next: Json | undefined = Array.isArray(current)
      ? current[Number(token)]
      : isObject(current)
        ? current[token]
        : undefined;
    if (next === undefined)
      throw unprocessable(`${op} operation does not apply: doc is missing path: "${raw}": missing value`);
    current = next;
  }
  return { parent: current, key: path[path.length - 1]! };
}

function arrayIndex(list: Json[], key: string, op: string, allowEnd: boolean): number {
  if (allowEnd && key === "-") return list.length;
  const index = /^(0|[1-9]\d*)$/.test(key) ? Number(key) : Number.NaN;
  const max = allowEnd ? list.length : list.length - 1;
  if (Number.isNaN(index) || index > max)
    throw unprocessable(`${op} operation does not apply: index out of bounds: ${key}`);
  return index;
}

function get(doc: Json, path: string[], op: string, raw: string): Json {
  if (path.length === 0) return doc;
  const { parent, key } = parentOf(doc, path, op, raw);
  const value = Array.isArray(parent)
    ? parent[arrayIndex(parent, key, op, false)]
    : isObject(parent)
      ? parent[key]
      : undefined;
  if (value === undefined)
    throw unprocessable(`${op} operation does not apply: doc is missing key: ${raw}: missing value`);
  return value;
}

function add(doc: Json, path: string[], value: Json, raw: string): Json {
  if (path.length === 0) return value;
  const { parent, key } = parentOf(doc, path, "add", raw);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, "add", true), 0, value);
  else if (isObject(parent)) parent[key] = value;
  else throw unprocessable(`add operation does not apply: doc is missing path: "${raw}": missing value`);
  return doc;
}

function remove(doc: Json, path: string[], op: string, raw: string): Json {
  const { parent, key } = parentOf(doc, path, op, raw);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, op, false), 1);
  else if (isObject(parent) && key in parent) delete parent[key];
  else throw unprocessable(`Unable to remove nonexistent key: ${key}: missing value`);
  return doc;
}

/** Applies a JSON patch to a copy of `document`. */
export function applyJsonPatch(document: JsonObject, patch: Json): Json {
  let doc: Json = clone(document);
  for (const o of parse(patch)) {
    switch (o.op) {
      case "add":
        doc = add(doc, o.path, clone(o.value!), o.rawPath);
        break;
      case "remove":
        doc = remove(doc, o.path, "remove", o.rawPath);
        break;
      case "replace":
        get(doc, o.path, "replace", o.rawPath);
        if (o.path.length === 0) doc = clone(o.value!);
        else doc = add(remove(doc, o.path, "replace", o.rawPath), o.path, clone(o.value!), o.rawPath);
        break;
      case "move": {
        const value = get(doc, o.from!, "move", o.rawFrom!);
        doc = add(remove(doc, o.from!, "move", o.rawFrom!), o.path, value, o.rawPath);
        break;
      }
      case "copy":
        doc = add(doc, o.path, clone(get(doc, o.from!, "copy", o.rawFrom!)), o.rawPath);
        break;
      case "test": {
        let actual: Json | undefined;
        try {
          actual = get(doc, o.path, "test", o.rawPath);
        } catch {
          actual = undefined;
        }
        if (!deepEqual(actual, o.value))
          throw unprocessable(`testing value ${o.rawPath} failed: test failed`);
        break;
      }
    }
  }
  return doc;
}
