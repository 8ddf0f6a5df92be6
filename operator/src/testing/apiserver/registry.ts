import { randomUUID } from "node:crypto";
import { applyBuiltinDefaults } from "./builtin-defaults.js";
import { OBJECT_META } from "./builtin-schemas.js";
import { validateBuiltin } from "./builtin-validation.js";
import type { FieldCause } from "./crd-schema/types.js";
import type { Crds } from "./crds.js";
import { decode, dropPaths, droppedPaths } from "./decoding.js";
import { clone, deepEqual, isObject, type Json, type JsonObject, meta, nowTimestamp, str } from "./json.js";
import { recordUpdate } from "./managed-fields.js";
import { forbiddenField, generateName, type NameRule, objectMetaCauses } from "./names.js";
import { apiVersionOf, type ResourceInfo, storageKey } from "./resources.js";
import {
  alreadyExists,
  badRequest,
  conflict,
  forbidden,
  invalid,
  MODIFIED_MESSAGE,
  methodNotAllowed,
  notFound,
} from "./status-errors.js";
import type { Store } from "./store.js";
import type { Strategies } from "./strategies.js";

/** How a write request asked to be handled. */
export interface WriteOptions {
  /** The field manager recorded in managedFields. */
  manager: string;
  /** `fieldValidation`: what unknown fields cause. */
  validation: "Strict" | "Warn" | "Ignore";
  dryRun: boolean;
  /** Collects `Warning` headers for the response. */
  warnings: string[];
}

export interface UpdateMode {
  /** The endpoint: "status" changes only status; "scale" writes like the main one but is recorded as such. */
  subresource: "" | "status" | "scale";
  /** managedFields were computed by server-side apply; the write must not record an Update. */
  applied?: boolean;
}

const CRD_KIND = "apiextensions.k8s.io/CustomResourceDefinition";
const NAMESPACE_KIND = "/Namespace";
const RESET_ON_WRITE = [
  "uid",
  "creationTimestamp",
  "deletionTimestamp",
  "deletionGracePeriodSeconds",
  "generation",
  "selfLink",
];

function nameRule(r: ResourceInfo): NameRule {
  if (r.group === "" && r.kind === "Namespace") return "label";
  if (r.group === "" && r.kind === "Service") return "dns1035";
  if (r.group === "rbac.authorization.k8s.io") return "path";
  return "subdomain";
}

function finalizersOf(object: JsonObject): string[] {
  const f = meta(object).finalizers;
  return Array.isArray(f) ? f.filter((x): x is string => typeof x === "string") : [];
}

/** Everything but metadata (and status, when a status subresource owns it): what `generation` tracks. */
function specPart(object: JsonObject, hasStatus: boolean): JsonObject {
  const { metadata: _m, status, ...rest } = object;
  return hasStatus ? rest : { ...rest, status: status ?? null };
}

/**
 * The generic registry store of the real server: the steps every create and update goes through
 * (decoding, metadata rules, the kind's strategy, defaulting, validation, generation, managedFields,
 * finalizers) before the object reaches the store.
 */
export class Registry {
  constructor(
    private readonly store: Store,
    private readonly strategies: Strategies,
    private readonly crds: Crds,
  ) {}

  /** A stored object as a client reads it: in the requested version, with the CRD's defaults applied. */
  present(r: ResourceInfo, object: JsonObject): JsonObject {
    const out = clone(object);
    out.apiVersion = apiVersionOf(r);
    out.kind = r.kind;
    r.custom?.applyDefaults(out);
    return out;
  }

  get(r: ResourceInfo, namespace: string, name: string): JsonObject {
    const object = this.store.get(storageKey(r), r.namespaced ? namespace : "", name);
    if (!object) throw notFound(r.group, r.plural, name);
    return object;
  }

  /** Type checks, then unknown fields: an error (Strict), a warning (Warn) or nothing (Ignore); they are dropped. */
  decode(r: ResourceInfo, body: Json, options: WriteOptions): JsonObject {
    if (!isObject(body)) throw badRequest(`the object provided is unrecognized (must be of type ${r.kind})`);
    const object = clone(body);
    const expected = apiVersionOf(r);
    const cannotHandle = (why: string) =>
      badRequest(`${r.kind} in version "${r.version}" cannot be handled as a ${r.kind}: ${why}`);
    if (object.apiVersion !== undefined && object.apiVersion !== expected) {
      throw badRequest(
        `the API version in the data (${String(object.apiVersion)}) does not match the expected API version (${expected})`,
      );
    }
    if (object.kind !== undefined && object.kind !== r.kind) {
      throw badRequest(
        `the kind in the data (${String(object.kind)}) does not match the expected kind (${r.kind})`,
      );
    }
    object.apiVersion = expected;
    object.kind = r.kind;
    if (object.metadata !== undefined && !isObject(object.metadata)) {
      throw cannotHandle("json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta");
    }
    let unknown: string[];
    if (r.custom) {
      const metaResult = decode(meta(object), OBJECT_META);
      if (metaResult.typeError) throw cannotHandle(metaResult.typeError);
      dropPaths(object.metadata!, metaResult.unknownSegments);
      const before = clone(object);
      r.custom.prune(object);
      unknown = [...metaResult.unknown.map((p) => `metadata.${p}`), ...droppedPaths(before, object)];
    } else {
      const result = decode(object, r.schema);
      if (result.typeError) throw cannotHandle(result.typeError);
      dropPaths(object, result.unknownSegments);
      unknown = result.unknown;
    }
    if (unknown.length > 0) {
      const messages = unknown.map((p) => `unknown field ${JSON.stringify(p)}`);
      if (options.validation === "Strict")
        throw cannotHandle(`strict decoding error: ${messages.join(", ")}`);
      if (options.validation === "Warn") options.warnings.push(...messages);
    }
    return object;
  }

  private requireNamespace(r: ResourceInfo, namespace: string, name: string): void {
    const ns = this.store.get("/namespaces", "", namespace);
    if (!ns) throw notFound("", "namespaces", namespace);
    if (meta(ns).deletionTimestamp) {
      throw forbidden(
        r.group,
        r.plural,
        name,
        `unable to create new content in namespace ${namespace} because it is being terminated`,
      );
    }
  }

  private refuseWhileCrdTerminates(r: ResourceInfo): void {
    if (!r.custom) return;
    const crd = this.store.get(
      `apiextensions.k8s.io/customresourcedefinitions`,
      "",
      `${r.plural}.${r.group}`,
    );
    if (crd && meta(crd).deletionTimestamp) {
      throw methodNotAllowed("create not allowed while custom resource definition is terminating");
    }
  }

  private defaults(r: ResourceInfo, object: JsonObject): void {
    if (r.custom) r.custom.applyDefaults(object);
    else applyBuiltinDefaults(`${r.group}/${r.kind}`, object);
  }

  private validate(r: ResourceInfo, object: JsonObject, old: JsonObject | undefined): void {
    const m = meta(object);
    const causes: FieldCause[] = objectMetaCauses(m, nameRule(r));
    if (old && meta(old).deletionTimestamp) {
      const added = finalizersOf(object).filter((f) => !finalizersOf(old).includes(f));
      if (added.length > 0) {
        const list = added.map((f) => JSON.stringify(f)).join(", ");
        causes.push(
          forbiddenField(
            "metadata.finalizers",
            `no new finalizers can be added if the object is being deleted, found new finalizers []string{${list}}`,
          ),
        );
      }
    }
    if (r.custom) causes.push(...r.custom.validate(object, old));
    else if (`${r.group}/${r.kind}` === CRD_KIND) causes.push(...this.crds.validate(object, old));
    else causes.push(...validateBuiltin(`${r.group}/${r.kind}`, object, old));
    if (causes.length > 0) throw invalid(r.group, r.kind, str(m.name) ?? "", causes);
  }

  /** POST: a new object (managedFields already set when server-side apply creates it). */
  create(r: ResourceInfo, namespace: string, body: Json, options: WriteOptions, applied = false): JsonObject {
    const object = this.decode(r, body, options);
    const m = meta(object);
    if (r.namespaced) {
      if (m.namespace !== undefined && m.namespace !== "" && m.namespace !== namespace) {
        throw badRequest(
          "the namespace of the provided object does not match the namespace sent on the request",
        );
      }
      m.namespace = namespace;
    } else delete m.namespace;
    if (m.resourceVersion !== undefined && m.resourceVersion !== "") {
      throw badRequest("resourceVersion should not be set on objects to be created");
    }
    delete m.resourceVersion;
    if (!str(m.name) && str(m.generateName)) m.name = generateName(str(m.generateName)!);
    const name = str(m.name) ?? "";
    if (r.namespaced) this.requireNamespace(r, namespace, name);
    this.refuseWhileCrdTerminates(r);
    for (const key of RESET_ON_WRITE) delete m[key];
    m.uid = randomUUID();
    m.creationTimestamp = nowTimestamp();
    m.generation = 1;
    if (r.custom && r.status) delete object.status;
    this.strategies.prepareForCreate(r, object);
    if (`${r.group}/${r.kind}` === CRD_KIND) this.crds.prepareForCreate(object);
    this.defaults(r, object);
    this.validate(r, object, undefined);
    if (`${r.group}/${r.kind}` === CRD_KIND) this.crds.establish(object);
    if (name !== "" && this.store.get(storageKey(r), r.namespaced ? namespace : "", name)) {
      throw alreadyExists(r.group, r.plural, name);
    }
    if (!applied) {
      delete m.managedFields;
      recordUpdate(undefined, object, r.schema, {
        manager: options.manager,
        apiVersion: apiVersionOf(r),
        subresource: "",
      });
    }
    if (options.dryRun)
      return this.present(r, { ...object, metadata: { ...m, resourceVersion: this.store.nextRv() } });
    const stored = this.store.create(storageKey(r), object);
    if (`${r.group}/${r.kind}` === CRD_KIND) this.crds.register(stored);
    return this.present(r, stored);
  }

  /** PUT (and the last step of every patch): the body replaces the object, within what the endpoint may change. */
  update(
    r: ResourceInfo,
    namespace: string,
    name: string,
    body: Json,
    options: WriteOptions,
    mode: UpdateMode,
  ): { object: JsonObject; created: boolean } {
    const incoming = this.decode(r, body, options);
    const m = meta(incoming);
    if (m.name !== undefined && m.name !== name) {
      throw badRequest(
        `the name of the object (${String(m.name)}) does not match the name on the URL (${name})`,
      );
    }
    if (r.namespaced && m.namespace !== undefined && m.namespace !== "" && m.namespace !== namespace) {
      throw badRequest(
        "the namespace of the provided object does not match the namespace sent on the request",
      );
    }
    const old = this.store.get(storageKey(r), r.namespaced ? namespace : "", name);
    if (!old) {
      if (!r.createOnUpdate || mode.subresource !== "" || str(m.resourceVersion))
        throw notFound(r.group, r.plural, name);
      m.name = name;
      return { object: this.create(r, namespace, incoming, options, mode.applied), created: true };
    }
    const oldMeta = meta(old);
    if (str(m.resourceVersion) && m.resourceVersion !== oldMeta.resourceVersion) {
      throw conflict(r.group, r.plural, name, MODIFIED_MESSAGE);
    }
    if (str(m.uid) && m.uid !== oldMeta.uid) {
      throw conflict(
        r.group,
        r.plural,
        name,
        `Precondition failed: UID in precondition: ${String(m.uid)}, UID in object meta: ${String(oldMeta.uid)}`,
      );
    }
    const managedFields = Array.isArray(m.managedFields) ? m.managedFields : oldMeta.managedFields;
    let next: JsonObject;
    if (mode.subresource === "status") {
      // The status endpoint changes status only; everything else is kept as stored.
      next = clone(old);
      if (incoming.status === undefined) delete next.status;
      else next.status = incoming.status;
    } else {
      next = incoming;
      for (const key of [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
      ]) {
        if (oldMeta[key] === undefined) delete m[key];
        else m[key] = oldMeta[key]!;
      }
      if (r.namespaced) m.namespace = oldMeta.namespace!;
      else delete m.namespace;
      m.name = name;
      if (r.status) {
        if (old.status === undefined) delete next.status;
        else next.status = old.status;
      }
    }
    const nextMeta = meta(next);
    if (managedFields === undefined) delete nextMeta.managedFields;
    else nextMeta.managedFields = managedFields;
    return { object: this.commit(r, old, next, options, mode), created: false };
  }

  /** The steps after the new object is assembled: strategy, defaults, validation, generation, managedFields, storage. */
  private commit(
    r: ResourceInfo,
    old: JsonObject,
    next: JsonObject,
    options: WriteOptions,
    mode: UpdateMode,
  ): JsonObject {
    this.strategies.prepareForUpdate(r, next, old);
    this.defaults(r, next);
    this.validate(r, next, old);
    if (`${r.group}/${r.kind}` === CRD_KIND) this.crds.establish(next);
    const m = meta(next);
    const generation = typeof meta(old).generation === "number" ? (meta(old).generation as number) : 1;
    const changed = !deepEqual(specPart(old, r.status), specPart(next, r.status));
    m.generation = changed ? generation + 1 : generation;
    if (!mode.applied) {
      recordUpdate(old, next, r.schema, {
        manager: options.manager,
        apiVersion: apiVersionOf(r),
        subresource: mode.subresource,
      });
    }
    m.resourceVersion = meta(old).resourceVersion!;
    // A write that changes nothing is not a write: no new resourceVersion, no watch event.
    if (deepEqual(next, old)) return this.present(r, old);
    if (options.dryRun)
      return this.present(r, { ...next, metadata: { ...m, resourceVersion: this.store.nextRv() } });
    return this.present(r, this.persist(r, next));
  }

  /**
   * Stores an updated object; an object being deleted whose last finalizer went is removed instead
   * (a namespace also waits for its spec finalizers, a terminating pod for its kubelet's delete).
   */
  persist(r: ResourceInfo, next: JsonObject): JsonObject {
    const key = storageKey(r);
    const m = meta(next);
    const specFinalizers =
      `${r.group}/${r.kind}` === NAMESPACE_KIND && isObject(next.spec) && Array.isArray(next.spec.finalizers)
        ? next.spec.finalizers
        : [];
    const graceLeft = typeof m.deletionGracePeriodSeconds === "number" && m.deletionGracePeriodSeconds > 0;
    if (m.deletionTimestamp && !graceLeft && finalizersOf(next).length === 0 && specFinalizers.length === 0) {
      const removed = this.store.remove(key, next);
      if (`${r.group}/${r.kind}` === CRD_KIND) this.crds.unregister(removed);
      return removed;
    }
    const stored = this.store.update(key, next);
    if (`${r.group}/${r.kind}` === CRD_KIND) this.crds.register(stored);
    return stored;
  }

  /** A write by a controller of this fake (garbage collector, namespace and CRD finalizers): no admission. */
  systemUpdate(r: ResourceInfo, next: JsonObject): JsonObject {
    const stored = this.store.get(storageKey(r), str(meta(next).namespace) ?? "", str(meta(next).name) ?? "");
    if (!stored) throw notFound(r.group, r.plural, str(meta(next).name) ?? "");
    if (meta(stored).resourceVersion !== meta(next).resourceVersion) {
      throw conflict(r.group, r.plural, str(meta(next).name) ?? "", MODIFIED_MESSAGE);
    }
    if (deepEqual(stored, next)) return stored;
    return this.persist(r, next);
  }
}
