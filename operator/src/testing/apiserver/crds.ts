import { OBJECT_META } from "./builtin-schemas.js";
import type { CrdCompileResult, FieldCause } from "./crd-schema/types.js";
import { isObject, type Json, type JsonObject, meta, nowTimestamp, str } from "./json.js";
import { invalidValue } from "./names.js";
import { customResource, type Resources } from "./resources.js";
import {
  ANY,
  BOOL,
  INT,
  INT_OR_STRING,
  type ListSchema,
  map,
  NUMBER,
  object,
  type Schema,
  STRING,
} from "./schema.js";

export type CompileCrd = (crd: object) => CrdCompileResult;

export const CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io";

function sub(o: JsonObject, key: string): JsonObject {
  return isObject(o[key]) ? (o[key] as JsonObject) : {};
}

function strings(value: Json | undefined): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

/**
 * The merge structure of a version's OpenAPI schema, for server-side apply and field ownership:
 * which lists are keyed (x-kubernetes-list-type map) or sets, which maps atomic. Validation, pruning
 * and defaulting are the schema engine's.
 */
function structure(s: Json | undefined): Schema {
  if (!isObject(s)) return ANY;
  if (s["x-kubernetes-int-or-string"] === true) return INT_OR_STRING;
  const atomic = s["x-kubernetes-map-type"] === "atomic";
  if (isObject(s.properties)) {
    const fields = Object.fromEntries(Object.entries(s.properties).map(([k, v]) => [k, structure(v)]));
    return object("", fields, { open: s["x-kubernetes-preserve-unknown-fields"] === true, atomic });
  }
  if (isObject(s.additionalProperties)) return map(structure(s.additionalProperties), { atomic });
  switch (s.type) {
    case "array": {
      const items = structure(s.items);
      const listType = s["x-kubernetes-list-type"];
      if (listType === "map")
        return { kind: "list", items, keys: strings(s["x-kubernetes-list-map-keys"]) } as ListSchema;
      if (listType === "set") return { kind: "list", items, set: true } as ListSchema;
      return { kind: "list", items } as ListSchema;
    }
    case "string":
      return STRING;
    case "integer":
      return INT;
    case "number":
      return NUMBER;
    case "boolean":
      return BOOL;
    default:
      return ANY;
  }
}

function rootStructure(openApi: Json | undefined): Schema {
  const root = structure(openApi);
  const fields = root.kind === "object" ? root.fields : {};
  return object("", { ...fields, apiVersion: STRING, kind: STRING, metadata: OBJECT_META }, { open: true });
}

/** CustomResourceDefinitions: their own validation and status, and the routes their served versions add. */
export class Crds {
  private readonly compiled = new Map<string, { spec: string; result: CrdCompileResult }>();

  constructor(
    private readonly resources: Resources,
    private readonly compileCrd: CompileCrd,
  ) {}

  private compile(crd: JsonObject): CrdCompileResult {
    const name = str(meta(crd).name) ?? "";
    const spec = JSON.stringify(crd.spec ?? null);
    const cached = this.compiled.get(name);
    if (cached?.spec === spec) return cached.result;
    const result = this.compileCrd(structuredClone(crd));
    this.compiled.set(name, { spec, result });
    return result;
  }

  /** The schema engine's verdict on the CRD (names, versions, schemas), plus what may not change on update. */
  validate(crd: JsonObject, old: JsonObject | undefined): FieldCause[] {
    const causes: FieldCause[] = [];
    if (old) {
      const [spec, oldSpec] = [sub(crd, "spec"), sub(old, "spec")];
      if (spec.group !== oldSpec.group)
        causes.push(invalidValue("spec.group", spec.group ?? "", "field is immutable"));
      const [plural, oldPlural] = [sub(spec, "names").plural, sub(oldSpec, "names").plural];
      if (plural !== oldPlural)
        causes.push(invalidValue("spec.names.plural", plural ?? "", "field is immutable"));
    }
    return [...causes, ...this.compile(crd).causes];
  }

  /** On create: the cleanup finalizer (deleting the CRD deletes its objects first). */
  prepareForCreate(crd: JsonObject): void {
    const m = meta(crd);
    const finalizers = strings(m.finalizers);
    if (!finalizers.includes(CRD_CLEANUP_FINALIZER)) m.finalizers = [...finalizers, CRD_CLEANUP_FINALIZER];
    crd.status = {};
  }

  /**
   * The status the establishing and naming controllers would write: names accepted, established,
   * and the storage version recorded.
   */
  establish(crd: JsonObject): void {
    const spec = sub(crd, "spec");
    const status = sub(crd, "status");
    const now = nowTimestamp();
    const condition = (type: string, reason: string, message: string) => {
      const existing = (Array.isArray(status.conditions) ? status.conditions : [])
        .filter(isObject)
        .find((c) => c.type === type);
      return {
        type,
        status: "True",
        lastTransitionTime: str(existing?.lastTransitionTime) ?? now,
        reason,
        message,
      };
    };
    const storage = (Array.isArray(spec.versions) ? spec.versions : [])
      .filter(isObject)
      .find((v) => v.storage === true);
    const stored = new Set([...strings(status.storedVersions), ...(storage ? [String(storage.name)] : [])]);
    crd.status = {
      ...status,
      conditions: [
        condition("NamesAccepted", "NoConflicts", "no conflicts found"),
        condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
      ],
      acceptedNames: structuredClone(sub(spec, "names")),
      storedVersions: [...stored],
    };
  }

  /** Serves the CRD's served versions (after a create or update was stored). */
  register(crd: JsonObject): void {
    const spec = sub(crd, "spec");
    const names = sub(spec, "names");
    const specVersions = (Array.isArray(spec.versions) ? spec.versions : []).filter(isObject);
    const served = this.compile(crd).versions.filter((v) =>
      specVersions.some((s) => s.name === v.version && s.served === true),
    );
    const infos = served.map((compiled) => {
      const version = specVersions.find((s) => s.name === compiled.version)!;
      const schema = rootStructure(sub(version, "schema").openAPIV3Schema);
      return customResource(
        compiled,
        {
          singular: str(names.singular) ?? compiled.kind.toLowerCase(),
          shortNames: strings(names.shortNames),
          categories: strings(names.categories),
        },
        schema,
      );
    });
    this.resources.setCustom(str(meta(crd).name) ?? "", infos);
  }

  unregister(crd: JsonObject): void {
    const name = str(meta(crd).name) ?? "";
    this.resources.removeCustom(name);
    this.compiled.delete(name);
  }
}
