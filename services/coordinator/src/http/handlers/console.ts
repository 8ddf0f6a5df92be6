import type { Console, ConsoleAsset } from "@darkbloom/console";
import type { Route } from "../app.js";
import type { Handler } from "../types.js";

/**
 * GET (and HEAD) /console (the page) and one route per file of the console: exact paths only, so
 * nothing but the built files is ever served from here. Each file is in memory (read once at start),
 * sent gzipped to a browser that accepts it, and revalidated by its ETag (one per representation).
 */
export function consoleRoutes(console: Console | undefined): Route[] {
  if (console === undefined) return [];
  return console.assets.flatMap((asset) => {
    const path = asset.path === "/" ? "/console" : `/console${asset.path}`;
    const handler = assetHandler(asset, console.headers);
    return [
      { method: "GET" as const, path, handler },
      { method: "HEAD" as const, path, handler },
    ];
  });
}

function assetHandler(asset: ConsoleAsset, common: Record<string, string>): Handler {
  const headers = { ...common, "Content-Type": asset.contentType, Vary: "Accept-Encoding" };
  return (req, res) => {
    const gzip = /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
    const etag = gzip ? asset.gzippedEtag : asset.etag;
    if (req.headers["if-none-match"] === etag) {
      res.writeHead(304, { ...headers, ETag: etag });
      res.end();
      return;
    }
    const body = gzip ? asset.gzipped : asset.body;
    res.writeHead(200, {
      ...headers,
      ETag: etag,
      ...(gzip ? { "Content-Encoding": "gzip" } : {}),
      "Content-Length": body.byteLength,
    });
    res.end(req.method === "HEAD" ? undefined : body);
  };
}
