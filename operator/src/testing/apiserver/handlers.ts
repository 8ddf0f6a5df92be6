import type { ServerResponse } from "node:http";
import { parse as parseYaml } from "yaml";
import { type Deleter, parseDeleteOptions } from "./deletion.js";
import { clone, isObject, type Json, type JsonObject, meta, nowTimestamp, str, stringMap } from "./json.js";
import { parsePatch, patchObject, patchTypeOf } from "./patch.js";
import type { Registry, UpdateMode, WriteOptions } from "./registry.js";
import type { RequestInfo } from "./request-info.js";
import { apiVersionOf, type ResourceInfo, storageKey } from "./resources.js";
import { scaleOf, withScale } from "./scale.js";
import { parseFieldSelector, parseLabelSelector } from "./selectors.js";
import { serverSideApply } from "./server-side-apply.js";
import {
  badRequest,
  conflict,
  invalid,
  methodNotAllowed,
  notFound,
  resourceNotFound,
  unsupportedMediaType,
} from "./status-errors.js";
import type { Store } from "./store.js";
import { type IncludeObject, toTable, wantsTable } from "./table.js";
import type { Watches } from "./watch.js";

/** One request for a resource, routed to its ResourceInfo. */
export interface ResourceRequest {
  info: RequestInfo;
  resource: ResourceInfo;
  query: URLSearchParams;
  body: string;
  contentType: string | undefined;
  accept: string | undefined;
  userAgent: string | undefined;
  res: ServerResponse;
}

/** What the router writes back; "streaming" when a watch took the response over. */
export type Reply = { code: number; body: JsonObject; warnings: string[] } | "streaming";

const SUBRESOURCES_READ_WRITE = new Set(["status", "scale"]);

/** `kubectl/v1.35.2 (linux/amd64) kubernetes/abc` → `kubectl`: the default field manager, as the real server derives it. */
function managerFromUserAgent(userAgent: string | undefined): string {
  return (userAgent ?? "").split("/")[0]!.slice(0, 128);
}

function writeOptions(q: URLSearchParams, userAgent: string | undefined): WriteOptions {
  const validation = q.get("fieldValidation") ?? "Warn";
  if (validation !== "Strict" && validation !== "Warn" && validation !== "Ignore") {
    throw badRequest(
      `fieldValidation: Unsupported value: "${validation}": supported values: "Ignore", "Warn", "Strict"`,
    );
  }
  return {
    manager: q.get("fieldManager") ?? managerFromUserAgent(userAgent),
    validation,
    dryRun: q.getAll("dryRun").includes("All"),
    warnings: [],
  };
}

function parseBody(body: string, contentType: string | undefined): Json {
  const media = (contentType ?? "application/json").split(";")[0]!.trim();
  if (media.includes("protobuf") || media.includes("cbor")) {
    throw unsupportedMediaType(
      `the body of the request was in an unknown format - accepted media types include: application/json, application/yaml`,
    );
  }
  try {
    return (media === "application/yaml" ? parseYaml(body) : JSON.parse(body)) as Json;
  } catch (error) {
    throw badRequest(`couldn't get version/kind; json parse error: ${(error as Error).message}`);
  }
}

/** The verbs of the real REST handlers, on top of the registry, deleter and watches. */
export class Handlers {
  constructor(
    private readonly store: Store,
    private readonly registry: Registry,
    private readonly deleter: Deleter,
    private readonly watches: Watches,
  ) {}

  handle(req: ResourceRequest): Reply {
    const { info, resource: r } = req;
    const sub = info.subresource;
    if (
      sub !== "" &&
      !(sub === "status" && r.status) &&
      !(sub === "scale" && r.scale) &&
      !(sub === "binding" && r.kind === "Pod" && r.group === "")
    ) {
      throw notFound(r.group, `${r.plural}/${sub}`, info.name);
    }
    const verbAllowed =
      sub === ""
        ? r.verbs.includes(info.verb)
        : SUBRESOURCES_READ_WRITE.has(sub)
          ? ["get", "update", "patch"].includes(info.verb)
          : info.verb === "create";
    if (!verbAllowed)
      throw methodNotAllowed(`the server does not allow this method on the requested resource`);
    // A cluster-scoped resource has no namespaced path (namespaces themselves excepted).
    if (!r.namespaced && info.namespace !== "" && r.plural !== "namespaces") throw resourceNotFound();
    const namespace = r.namespaced ? info.namespace : "";
    if (
      r.namespaced &&
      namespace === "" &&
      ["create", "update", "patch", "delete", "get"].includes(info.verb)
    ) {
      throw methodNotAllowed("the server does not allow this method on the requested resource");
    }
    const ok = (body: JsonObject, code = 200, warnings: string[] = []) => ({ code, body, warnings });
    switch (info.verb) {
      case "get":
        return ok(this.get(req, namespace));
      case "list":
        return ok(this.list(req));
      case "watch":
        this.watch(req);
        return "streaming";
      case "create": {
        const options = writeOptions(req.query, req.userAgent);
        if (sub === "binding")
          return ok(this.bind(r, namespace, info.name, parseBody(req.body, req.contentType)), 201);
        const created = this.registry.create(r, namespace, parseBody(req.body, req.contentType), options);
        return ok(created, 201, options.warnings);
      }
      case "update": {
        const options = writeOptions(req.query, req.userAgent);
        const body = parseBody(req.body, req.contentType);
        if (sub === "scale")
          return ok(this.writeScale(r, namespace, info.name, body, options), 200, options.warnings);
        const result = this.registry.update(r, namespace, info.name, body, options, {
          subresource: sub as UpdateMode["subresource"],
        });
        return ok(result.object, result.created ? 201 : 200, options.warnings);
      }
      case "patch":
        return this.patch(req, namespace);
      case "delete": {
        const options = parseDeleteOptions(
          req.body.trim() ? parseBody(req.body, req.contentType) : undefined,
          req.query,
        );
        const { code, body } = this.deleter.delete(r, namespace, info.name, options);
        return ok(body, code);
      }
      case "deletecollection": {
        const options = parseDeleteOptions(
          req.body.trim() ? parseBody(req.body, req.contentType) : undefined,
          req.query,
        );
        return ok(this.deleter.deleteCollection(r, this.select(req), options));
      }
      default:
        throw methodNotAllowed("the server does not allow this method on the requested resource");
    }
  }

  private include(req: ResourceRequest): IncludeObject | undefined {
    if (!wantsTable(req.accept)) return undefined;
    const include = req.query.get("includeObject") ?? "Metadata";
    if (include !== "None" && include !== "Metadata" && include !== "Object") {
      throw badRequest(`includeObject: Unsupported value: "${include}"`);
    }
    return include;
  }

  private get(req: ResourceRequest, namespace: string): JsonObject {
    const r = req.resource;
    const object = this.registry.present(r, this.registry.get(r, namespace, req.info.name));
    if (req.info.subresource === "scale") return scaleOf(r, object);
    const include = this.include(req);
    if (include) return toTable(r, [object], str(meta(object).resourceVersion) ?? "", include);
    return object;
  }

  /** The objects a list, watch or deletecollection selects. */
  private select(req: ResourceRequest): JsonObject[] {
    const r = req.resource;
    const labels = parseLabelSelector(req.query.get("labelSelector"));
    const fields = parseFieldSelector(req.query.get("fieldSelector"), r);
    const namespace = r.namespaced && req.info.namespace ? req.info.namespace : undefined;
    return this.store
      .list(storageKey(r), namespace)
      .filter((o) => labels(stringMap(meta(o).labels)) && fields(o))
      .map((o) => this.registry.present(r, o));
  }

  private list(req: ResourceRequest): JsonObject {
    const r = req.resource;
    const resourceVersion = String(this.store.currentRv());
    const items = this.select(req);
    const include = this.include(req);
    if (include) return toTable(r, items, resourceVersion, include);
    return { kind: `${r.kind}List`, apiVersion: apiVersionOf(r), metadata: { resourceVersion }, items };
  }

  private watch(req: ResourceRequest): void {
    const r = req.resource;
    const q = req.query;
    const timeout = q.get("timeoutSeconds");
    this.watches.serve(
      {
        resource: r,
        namespace: r.namespaced && req.info.namespace ? req.info.namespace : undefined,
        name: req.info.name || undefined,
        labels: parseLabelSelector(q.get("labelSelector")),
        fields: parseFieldSelector(q.get("fieldSelector"), r),
        resourceVersion: q.get("resourceVersion"),
        sendInitialEvents: q.get("sendInitialEvents") === "true",
        allowBookmarks: q.get("allowWatchBookmarks") === "true",
        timeoutMs: timeout !== null && /^\d+$/.test(timeout) ? Number(timeout) * 1000 : undefined,
        table: this.include(req),
      },
      req.res,
    );
  }

  private patch(req: ResourceRequest, namespace: string): Reply {
    const { info, resource: r, query } = req;
    const type = patchTypeOf(req.contentType, r);
    const options = writeOptions(query, req.userAgent);
    const force = query.get("force");
    if (type !== "apply" && force !== null) {
      throw invalid("meta.k8s.io", "PatchOptions", "", [
        {
          reason: "FieldValueForbidden",
          message: "Forbidden: may not be specified for non-apply patch",
          field: "force",
        },
      ]);
    }
    const patch = parsePatch(type, req.body);
    if (type === "apply") {
      if (!query.get("fieldManager")) {
        throw invalid("meta.k8s.io", "PatchOptions", "", [
          {
            reason: "FieldValueRequired",
            message: "Required value: is required for apply patch",
            field: "fieldManager",
          },
        ]);
      }
      return this.apply(r, namespace, info, patch, options, force === "true");
    }
    const current = this.registry.present(r, this.registry.get(r, namespace, info.name));
    if (info.subresource === "scale") {
      const scale = patchObject(type, r, scaleOf(r, current), patch);
      return {
        code: 200,
        body: this.writeScale(r, namespace, info.name, scale, options),
        warnings: options.warnings,
      };
    }
    const patched = patchObject(type, r, current, patch);
    const mode = { subresource: info.subresource as UpdateMode["subresource"] };
    const { object } = this.registry.update(r, namespace, info.name, patched, options, mode);
    return { code: 200, body: object, warnings: options.warnings };
  }

  /** Server-side apply: creates the object when absent, else merges the configuration with field ownership. */
  private apply(
    r: ResourceInfo,
    namespace: string,
    info: RequestInfo,
    patch: Json,
    options: WriteOptions,
    force: boolean,
  ): Reply {
    if (!isObject(patch)) throw badRequest("error decoding YAML: the applied configuration is not an object");
    if (isObject(patch.metadata) && patch.metadata.managedFields !== undefined)
      throw badRequest("metadata.managedFields must be nil");
    if (patch.apiVersion === undefined || patch.kind === undefined) {
      throw badRequest(
        `invalid object type: ${String(patch.apiVersion ?? "")}, Kind=${String(patch.kind ?? "")}`,
      );
    }
    const config = this.registry.decode(r, patch, options);
    const m = meta(config);
    if (m.name !== undefined && m.name !== info.name) {
      throw badRequest(
        `the name of the object (${String(m.name)}) does not match the name on the URL (${info.name})`,
      );
    }
    m.name = info.name;
    const subresource = info.subresource as UpdateMode["subresource"];
    if (subresource === "scale")
      throw methodNotAllowed("server-side apply is not supported on the scale subresource here");
    if (subresource === "status") {
      for (const key of Object.keys(config))
        if (!["apiVersion", "kind", "metadata", "status"].includes(key)) delete config[key];
      config.metadata = { name: info.name, ...(m.namespace ? { namespace: m.namespace } : {}) };
    } else if (r.status) delete config.status;
    const stored = this.store.get(storageKey(r), namespace, info.name);
    if (!stored && subresource !== "") throw notFound(r.group, r.plural, info.name);
    const live = stored && this.registry.present(r, stored);
    const merged = serverSideApply({
      live,
      config,
      schema: r.schema,
      manager: options.manager,
      force,
      apiVersion: apiVersionOf(r),
      subresource,
    });
    if (!stored)
      return {
        code: 201,
        body: this.registry.create(r, namespace, merged, options, true),
        warnings: options.warnings,
      };
    const { object } = this.registry.update(r, namespace, info.name, merged, options, {
      subresource,
      applied: true,
    });
    return { code: 200, body: object, warnings: options.warnings };
  }

  private writeScale(
    r: ResourceInfo,
    namespace: string,
    name: string,
    scale: Json,
    options: WriteOptions,
  ): JsonObject {
    const current = this.registry.present(r, this.registry.get(r, namespace, name));
    const next = withScale(r, current, scale, name);
    const { object } = this.registry.update(r, namespace, name, next, options, { subresource: "scale" });
    return scaleOf(r, object);
  }

  /** `pods/{name}/binding`: what the scheduler posts to put a pod on a node. */
  private bind(r: ResourceInfo, namespace: string, name: string, body: Json): JsonObject {
    const target = isObject(body) && isObject(body.target) ? body.target : {};
    const node = str(target.name);
    if (!node)
      throw invalid("", "Binding", name, [
        { reason: "FieldValueRequired", message: "Required value", field: "target.name" },
      ]);
    const pod = clone(this.registry.get(r, namespace, name));
    const spec = isObject(pod.spec) ? pod.spec : {};
    if (str(spec.nodeName)) {
      throw conflict(
        "",
        "pods/binding",
        name,
        `pod ${name} is already assigned to node "${String(spec.nodeName)}"`,
      );
    }
    pod.spec = { ...spec, nodeName: node };
    const status = isObject(pod.status) ? pod.status : {};
    const conditions = (Array.isArray(status.conditions) ? status.conditions : []).filter(
      (c) => !(isObject(c) && c.type === "PodScheduled"),
    );
    pod.status = {
      ...status,
      conditions: [
        ...conditions,
        { type: "PodScheduled", status: "True", lastProbeTime: null, lastTransitionTime: nowTimestamp() },
      ],
    };
    this.registry.systemUpdate(r, pod);
    return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", code: 201 };
  }
}
