/**
 * A small Kubernetes REST client over `fetch`: the fake cluster's components talk to the API server the
 * way kube-controller-manager and the kubelet do (JSON over HTTP, bearer token, optimistic concurrency
 * with resourceVersion), and nothing else. Watches live in informer.ts.
 */
import type { KubeObject } from "./types.js";

/** Where a kind lives in the REST tree. */
export interface ResourceType {
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
}

export const PODS: ResourceType = { group: "", version: "v1", plural: "pods", namespaced: true };
export const SERVICES: ResourceType = { group: "", version: "v1", plural: "services", namespaced: true };
export const ENDPOINTS: ResourceType = { group: "", version: "v1", plural: "endpoints", namespaced: true };
export const SECRETS: ResourceType = { group: "", version: "v1", plural: "secrets", namespaced: true };
export const CONFIGMAPS: ResourceType = { group: "", version: "v1", plural: "configmaps", namespaced: true };
export const DEPLOYMENTS: ResourceType = {
  group: "apps",
  version: "v1",
  plural: "deployments",
  namespaced: true,
};
export const REPLICASETS: ResourceType = {
  group: "apps",
  version: "v1",
  plural: "replicasets",
  namespaced: true,
};
export const JOBS: ResourceType = { group: "batch", version: "v1", plural: "jobs", namespaced: true };

/** A non-2xx answer, with the Status object's reason ("NotFound", "Conflict", "AlreadyExists", ...). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export const isNotFound = (err: unknown): boolean => err instanceof ApiError && err.status === 404;
export const isConflict = (err: unknown): boolean => err instanceof ApiError && err.status === 409;

export function resourcePath(type: ResourceType, namespace?: string, name?: string, sub?: string): string {
  let path = type.group === "" ? `/api/${type.version}` : `/apis/${type.group}/${type.version}`;
  if (type.namespaced && namespace !== undefined) path += `/namespaces/${encodeURIComponent(namespace)}`;
  path += `/${type.plural}`;
  if (name !== undefined) path += `/${encodeURIComponent(name)}`;
  if (sub !== undefined) path += `/${sub}`;
  return path;
}

export interface ListResult<T> {
  items: T[];
  resourceVersion: string;
}

export class KubeClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
  ) {}

  /** The headers every request carries (also used by the watch reader). */
  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, accept: "application/json", ...extra };
  }

  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    contentType = "application/json",
    signal?: AbortSignal,
  ): Promise<T> {
    const init: RequestInit = {
      method,
      headers: this.headers(body === undefined ? {} : { "content-type": contentType }),
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    // A request that hangs must not wedge a controller's work queue: give up, and let it retry.
    init.signal = signal ?? AbortSignal.timeout(30_000);
    const res = await fetch(this.baseUrl + path, init);
    const text = await res.text();
    if (!res.ok) {
      let reason = "";
      let message = `${method} ${path}: HTTP ${res.status}`;
      try {
        const status = JSON.parse(text) as { reason?: string; message?: string };
        reason = status.reason ?? "";
        if (status.message) message = `${message}: ${status.message}`;
      } catch {
        if (text) message = `${message}: ${text.slice(0, 200)}`;
      }
      throw new ApiError(res.status, reason, message);
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }

  async list<T extends KubeObject>(
    type: ResourceType,
    namespace?: string,
    signal?: AbortSignal,
  ): Promise<ListResult<T>> {
    const list = await this.request<{ items?: T[]; metadata?: { resourceVersion?: string } }>(
      "GET",
      resourcePath(type, namespace),
      undefined,
      undefined,
      signal,
    );
    return { items: list.items ?? [], resourceVersion: list.metadata?.resourceVersion ?? "" };
  }

  get<T extends KubeObject>(type: ResourceType, namespace: string, name: string): Promise<T> {
    return this.request<T>("GET", resourcePath(type, namespace, name));
  }

  create<T extends KubeObject>(type: ResourceType, namespace: string, obj: T): Promise<T> {
    return this.request<T>("POST", resourcePath(type, namespace), obj);
  }

  /** PUT with the object's resourceVersion: a stale write is a 409 Conflict, as for the real controllers. */
  update<T extends KubeObject>(type: ResourceType, obj: T, sub?: string): Promise<T> {
    return this.request<T>("PUT", resourcePath(type, obj.metadata.namespace, obj.metadata.name, sub), obj);
  }

  /** A JSON merge patch (RFC 7386), optionally on a subresource such as "status". */
  mergePatch<T extends KubeObject>(
    type: ResourceType,
    namespace: string,
    name: string,
    patch: unknown,
    sub?: string,
  ): Promise<T> {
    return this.request<T>(
      "PATCH",
      resourcePath(type, namespace, name, sub),
      patch,
      "application/merge-patch+json",
    );
  }

  delete(
    type: ResourceType,
    namespace: string,
    name: string,
    options: { gracePeriodSeconds?: number; uid?: string; propagationPolicy?: string } = {},
  ): Promise<unknown> {
    const body: Record<string, unknown> = { apiVersion: "v1", kind: "DeleteOptions" };
    if (options.gracePeriodSeconds !== undefined) body.gracePeriodSeconds = options.gracePeriodSeconds;
    if (options.uid !== undefined) body.preconditions = { uid: options.uid };
    if (options.propagationPolicy !== undefined) body.propagationPolicy = options.propagationPolicy;
    return this.request("DELETE", resourcePath(type, namespace, name), body);
  }
}
