import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { apiVersions, groupInfo, groupList, resourceList, VERSION_INFO } from "./discovery.js";
import type { Handlers } from "./handlers.js";
import type { JsonObject } from "./json.js";
import { authorize, denied } from "./rbac.js";
import { requestInfo } from "./request-info.js";
import type { Resources } from "./resources.js";
import { ApiError, reasonForCode, resourceNotFound } from "./status-errors.js";
import type { Store } from "./store.js";
import type { Users } from "./users.js";

/** One authenticated request, as `FakeApiServer.audit` lists them. */
export interface AuditEntry {
  user: string;
  /** get, list, watch, create, update, patch, delete, deletecollection (non-resource requests: the HTTP verb's). */
  verb: string;
  /** "" for the core group. */
  apiGroup: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
  /** The response's status code (set when the response starts). */
  code: number;
  /** The request path, for non-resource requests (discovery) in particular. */
  path: string;
}

export interface Fault {
  verb?: string;
  /** A resource ("deployments") or resource/subresource ("deployments/status"). */
  resource?: string;
  code: number;
  times: number;
}

/** The real server's limit on request bodies. */
const MAX_BODY_BYTES = 3 * 1024 * 1024;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES)
        reject(new ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728"));
      else chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

export interface ServerParts {
  store: Store;
  resources: Resources;
  users: Users;
  handlers: Handlers;
  audit: AuditEntry[];
  faults: Fault[];
  authorization: "rbac" | "allow-all";
  /** host:port, for APIVersions' serverAddressByClientCIDRs. */
  address: () => string;
}

/** The HTTP front: authentication, audit, injected faults, authorization, then discovery or the REST handlers. */
export function requestListener(parts: ServerParts): (req: IncomingMessage, res: ServerResponse) => void {
  const send = (res: ServerResponse, code: number, body: JsonObject, warnings: string[] = []) => {
    const headers: Record<string, string | string[]> = {
      "content-type": "application/json",
      "cache-control": "no-cache, private",
      "audit-id": randomUUID(),
    };
    if (warnings.length > 0) headers.warning = warnings.map((w) => `299 - ${JSON.stringify(w)}`);
    if (code === 429) headers["retry-after"] = "1";
    res.writeHead(code, headers);
    res.end(JSON.stringify(body));
  };

  const takeFault = (verb: string, resource: string, subresource: string): Fault | undefined => {
    const fault = parts.faults.find(
      (f) =>
        f.times > 0 &&
        (f.verb === undefined || f.verb === verb) &&
        (f.resource === undefined || f.resource === resource || f.resource === `${resource}/${subresource}`),
    );
    if (fault) fault.times -= 1;
    return fault;
  };

  const discovery = (path: string): JsonObject | undefined => {
    const segments = path.split("/").filter((s) => s !== "");
    if (path === "/version") return VERSION_INFO;
    if (segments[0] === "api") {
      if (segments.length === 1) return apiVersions(parts.address());
      if (segments.length === 2) return resourceList(parts.resources, "", segments[1]!);
    }
    if (segments[0] === "apis") {
      if (segments.length === 1) return groupList(parts.resources);
      if (segments.length === 2) return groupInfo(parts.resources, segments[1]!);
      if (segments.length === 3) return resourceList(parts.resources, segments[1]!, segments[2]!);
    }
    return undefined;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const user = parts.users.authenticate(req.headers.authorization);
    if (!user) {
      send(res, 401, new ApiError(401, "Unauthorized", "Unauthorized").toStatus());
      return;
    }
    const info = requestInfo(req.method ?? "GET", url);
    const entry: AuditEntry = {
      user: user.name,
      verb: info.verb,
      apiGroup: info.apiGroup,
      resource: info.resource,
      subresource: info.subresource,
      namespace: info.namespace,
      name: info.name,
      code: 0,
      path: info.path,
    };
    parts.audit.push(entry);
    res.on("close", () => {
      if (entry.code === 0) entry.code = res.statusCode;
    });
    const reply = (code: number, body: JsonObject, warnings?: string[]) => {
      entry.code = code;
      send(res, code, body, warnings);
    };
    try {
      const body = await readBody(req);
      const fault = takeFault(info.verb, info.resource, info.subresource);
      if (fault) {
        throw new ApiError(fault.code, reasonForCode(fault.code), `injected fault: ${fault.code}`, {
          ...(fault.code === 429 ? { retryAfterSeconds: 1 } : {}),
        });
      }
      if (parts.authorization === "rbac" && !authorize(parts.store, { user, ...info }))
        throw denied({ user, ...info });
      if (!info.isResource) {
        if (["/healthz", "/livez", "/readyz"].includes(info.path)) {
          entry.code = 200;
          res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end("ok");
          return;
        }
        const found = info.verb === "get" ? discovery(info.path) : undefined;
        if (!found) throw resourceNotFound();
        reply(200, found);
        return;
      }
      const resource = parts.resources.find(info.apiGroup, info.apiVersion, info.resource);
      if (!resource) throw resourceNotFound();
      const result = parts.handlers.handle({
        info,
        resource,
        query: url.searchParams,
        body,
        contentType: req.headers["content-type"],
        accept: req.headers.accept,
        userAgent: req.headers["user-agent"],
        res,
      });
      if (result === "streaming") entry.code = 200;
      else reply(result.code, result.body, result.warnings);
    } catch (error) {
      const apiError =
        error instanceof ApiError
          ? error
          : new ApiError(500, "InternalError", `Internal error occurred: ${(error as Error).message}`);
      if (res.headersSent) res.end();
      else reply(apiError.code, apiError.toStatus());
    }
  };

  return (req, res) => {
    void handle(req, res);
  };
}
