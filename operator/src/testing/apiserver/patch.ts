import { parse as parseYaml } from "yaml";
import { clone, isObject, type Json, type JsonObject } from "./json.js";
import { applyJsonPatch } from "./json-patch.js";
import type { ResourceInfo } from "./resources.js";
import { badRequest, unsupportedMediaType } from "./status-errors.js";
import { applyStrategicMergePatch } from "./strategic-merge.js";

export type PatchType = "json" | "merge" | "strategic" | "apply";

const MEDIA_TYPES: Record<string, PatchType> = {
  "application/json-patch+json": "json",
  "application/merge-patch+json": "merge",
  "application/strategic-merge-patch+json": "strategic",
  "application/apply-patch+yaml": "apply",
  "application/apply-patch+cbor": "apply",
};

/** The patch type of a Content-Type; 415 for others, and for strategic merge on custom resources (no Go type to merge by). */
export function patchTypeOf(contentType: string | undefined, r: ResourceInfo): PatchType {
  const media = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  const type = MEDIA_TYPES[media];
  if (type === undefined || (type === "strategic" && r.custom)) {
    const accepted = r.custom
      ? "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
      : "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";
    throw unsupportedMediaType(
      `the body of the request was in an unknown format - accepted media types include: ${accepted}`,
    );
  }
  return type;
}

/** The patch document: JSON, or for apply YAML (of which JSON is a subset). */
export function parsePatch(type: PatchType, body: string): Json {
  try {
    return (type === "apply" ? parseYaml(body) : JSON.parse(body)) as Json;
  } catch (error) {
    const what = type === "apply" ? "error converting YAML to JSON" : "invalid JSON";
    throw badRequest(`${what}: ${(error as Error).message}`);
  }
}

/** RFC 7386: objects merge recursively, null deletes, anything else replaces. */
export function applyMergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const result: JsonObject = isObject(target) ? clone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = applyMergePatch(result[key], value);
  }
  return result;
}

/** The object a non-apply patch turns `current` into (what the update then validates and stores). */
export function patchObject(
  type: Exclude<PatchType, "apply">,
  r: ResourceInfo,
  current: JsonObject,
  patch: Json,
): JsonObject {
  let result: Json;
  if (type === "json") result = applyJsonPatch(current, patch);
  else if (type === "strategic") result = applyStrategicMergePatch(current, patch, r.schema);
  else {
    if (!isObject(patch))
      throw badRequest("json: cannot unmarshal array into Go value of type map[string]interface {}");
    result = applyMergePatch(current, patch);
  }
  if (!isObject(result)) throw badRequest("the patched object is not a JSON object");
  return result;
}
