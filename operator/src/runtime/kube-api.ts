import http from "node:http";
import https from "node:https";
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node";

/**
 * The operator's requests to the Kubernetes API, as raw JSON. @kubernetes/client-node supplies the
 * configuration (in-cluster token and CA, or a kubeconfig) and the informers; writes go through this
 * thin layer instead of its typed clients because those deserialise into their own model classes
 * (dates become Date objects, fields the client's models do not know are dropped), and an update
 * built from such a copy would erase the fields a newer API server added.
 */

/** A resource type as the REST paths name it. */
export interface ResourceType {
  /** "" for the core group. */
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

export type KubeObject = KubernetesObject & { [field: string]: unknown };

/** A failed API call: the Status the server answered, or a transport failure (code 0). */
export class KubeApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "KubeApiError";
  }
}

export const isNotFound = (e: unknown) => e instanceof KubeApiError && e.code === 404;
export const isConflict = (e: unknown) => e instanceof KubeApiError && e.code === 409;
export const isAlreadyExists = (e: unknown) =>
  isConflict(e) && (e as KubeApiError).reason === "AlreadyExists";

/** `/apis/apps/v1/namespaces/ns/deployments/name/status` and the like. */
export function resourcePath(
  type: ResourceType,
  at: { namespace?: string | undefined; name?: string | undefined; subresource?: string } = {},
): string {
  let path = type.group === "" ? `/api/${type.version}` : `/apis/${type.group}/${type.version}`;
  if (type.namespaced && at.namespace !== undefined)
    path += `/namespaces/${encodeURIComponent(at.namespace)}`;
  path += `/${type.plural}`;
  if (at.name !== undefined) path += `/${encodeURIComponent(at.name)}`;
  if (at.subresource !== undefined) path += `/${at.subresource}`;
  return path;
}

const FIELD_MANAGER = "darkbloom-operator";
const REQUEST_TIMEOUT_MS = 30_000;

export class KubeApi {
  constructor(
    private readonly kc: KubeConfig,
    /** Told of every completed call (metrics): verb, resource plural, HTTP code (0 when none). */
    private readonly observe?: (verb: string, plural: string, code: number) => void,
  ) {}

  get<T extends KubeObject>(type: ResourceType, namespace: string | undefined, name: string): Promise<T> {
    return this.call("GET", "get", type, resourcePath(type, { namespace, name }));
  }

  list<T extends KubeObject>(
    type: ResourceType,
    namespace?: string,
    labelSelector?: string,
  ): Promise<{ metadata: { resourceVersion?: string }; items: T[] }> {
    const query = labelSelector ? `?labelSelector=${encodeURIComponent(labelSelector)}` : "";
    return this.call("GET", "list", type, resourcePath(type, { namespace }) + query);
  }

  create<T extends KubeObject>(type: ResourceType, object: T): Promise<T> {
    const namespace = object.metadata?.namespace;
    return this.call("POST", "create", type, this.withManager(resourcePath(type, { namespace })), object);
  }

  /**
   * Replaces the object; it must carry the metadata.resourceVersion it was read at, so a write based
   * on a stale read fails with 409 instead of undoing someone else's change.
   */
  update<T extends KubeObject>(type: ResourceType, object: T, subresource?: "status"): Promise<T> {
    const { namespace, name } = object.metadata ?? {};
    if (!object.metadata?.resourceVersion)
      throw new Error(`update of ${type.plural}/${name} without a resourceVersion`);
    const path = resourcePath(type, { namespace, name, ...(subresource ? { subresource } : {}) });
    return this.call("PUT", "update", type, this.withManager(path), object);
  }

  /** A JSON merge patch (RFC 7386). */
  mergePatch<T extends KubeObject>(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
    patch: unknown,
  ): Promise<T> {
    const path = this.withManager(resourcePath(type, { namespace, name }));
    return this.call("PATCH", "patch", type, path, patch, "application/merge-patch+json");
  }

  /** Deletes in the background (dependents are garbage-collected); absent is not an error. */
  async delete(type: ResourceType, namespace: string | undefined, name: string, uid?: string): Promise<void> {
    const body = {
      apiVersion: "v1",
      kind: "DeleteOptions",
      propagationPolicy: "Background",
      // Only the object that was decided about: never a new one of the same name.
      ...(uid ? { preconditions: { uid } } : {}),
    };
    try {
      await this.call("DELETE", "delete", type, resourcePath(type, { namespace, name }), body);
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }

  private withManager(path: string): string {
    return `${path}?fieldManager=${FIELD_MANAGER}`;
  }

  private async call<T>(
    method: string,
    verb: string,
    type: ResourceType,
    path: string,
    body?: unknown,
    contentType = "application/json",
  ): Promise<T> {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new Error("the kubeconfig has no current cluster");
    const url = new URL(cluster.server.replace(/\/$/, "") + path);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const options: https.RequestOptions = {
      method,
      headers: {
        accept: "application/json",
        "user-agent": "darkbloom-operator",
        // Explicit: Node sends a DELETE's body neither chunked nor with a length by default.
        ...(payload === undefined
          ? {}
          : { "content-type": contentType, "content-length": Buffer.byteLength(payload) }),
      },
      timeout: REQUEST_TIMEOUT_MS,
    };
    await this.kc.applyToHTTPSOptions(options);
    let code = 0;
    try {
      const { status, text } = await send(url, options, payload);
      code = status;
      const parsed = text === "" ? {} : (JSON.parse(text) as Record<string, unknown>);
      if (status >= 200 && status < 300) return parsed as T;
      throw new KubeApiError(
        status,
        typeof parsed.reason === "string" ? parsed.reason : "",
        typeof parsed.message === "string" ? parsed.message : `${method} ${path}: HTTP ${status}`,
        parsed.details,
      );
    } catch (error) {
      if (error instanceof KubeApiError) throw error;
      throw new KubeApiError(0, "", `${method} ${url.pathname}: ${(error as Error).message}`);
    } finally {
      this.observe?.(verb, type.plural, code);
    }
  }
}

function send(
  url: URL,
  options: https.RequestOptions,
  body: string | undefined,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = (url.protocol === "https:" ? https : http).request(url, options, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () =>
        resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }),
      );
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    request.on("error", reject);
    request.end(body);
  });
}
