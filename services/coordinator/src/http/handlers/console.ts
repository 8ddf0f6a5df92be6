import { type ConsoleAsset, consoleHeaders } from "@darkbloom/console";
import type { Route } from "../app.js";
import type { Handler } from "../types.js";

/**
 * GET /console (the page) and one route per file of the console's app: exact paths only, so nothing
 * but the built files is ever served from here. Each file is in memory (read once at start), sent
 * gzipped to a browser that accepts it, and revalidated by its ETag.
 */
export function consoleRoutes(assets: readonly ConsoleAsset[] | undefined): Route[] {
  if (assets === undefined) return [];
  return assets.map((asset) => ({
    method: "GET",
    path: asset.path === "/" ? "/console" : `/console${asset.path}`,
    handler: assetHandler(asset),
  }));
}

function assetHandler(asset: ConsoleAsset): Handler {
  const headers = {
    ...consoleHeaders(),
    "Content-Type": asset.contentType,
    ETag: asset.etag,
    Vary: "Accept-Encoding",
  };
  return (req, res) => {
    if (req.headers["if-none-match"] === asset.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const gzip = /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
    const body = gzip ? asset.gzipped : asset.body;
    res.writeHead(200, {
      ...headers,
      ...(gzip ? { "Content-Encoding": "gzip" } : {}),
      "Content-Length": body.byteLength,
    });
    res.end(body);
  };
}
