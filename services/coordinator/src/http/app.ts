import { internalError, methodNotAllowed, notFound } from "../errors/index.js";
import type { Logger } from "../log.js";
import { newRequestId } from "./request-id.js";
import { sendError } from "./respond.js";
import type { Handler, HttpRequest, HttpResponse } from "./types.js";

export interface Route {
  method: "GET" | "HEAD" | "POST";
  path: string;
  handler: Handler;
}

/**
 * The top-level request handler: Connect routes (paths under /darkbloom.) go to the Connect adapter,
 * the rest to the OpenAI and operational routes; anything else gets a 404/405 in OpenAI's shape.
 */
export function createApp(routes: Route[], connect: Handler, log: Logger): Handler {
  const table = new Map<string, Map<string, Handler>>();
  for (const r of routes) {
    const byMethod = table.get(r.path) ?? new Map<string, Handler>();
    byMethod.set(r.method, r.handler);
    table.set(r.path, byMethod);
  }
  return async (req: HttpRequest, res: HttpResponse) => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    try {
      if (path.startsWith("/darkbloom.")) return await connect(req, res);
      const byMethod = table.get(path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path);
      if (!byMethod) return sendError(res, notFound(path), { "X-Request-ID": newRequestId() });
      const handler = byMethod.get(req.method ?? "GET");
      if (!handler) {
        const allowed = [...byMethod.keys()].join(", ");
        return sendError(res, methodNotAllowed(req.method ?? "", path, allowed), {
          "X-Request-ID": newRequestId(),
        });
      }
      await handler(req, res);
    } catch (e) {
      log.error({ err: e, path }, "unhandled error in request handler");
      sendError(res, internalError());
    }
  };
}
