import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, extname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

/** One file of the console, read once at start, as the coordinator serves it. */
export interface ConsoleAsset {
  /** Its path under /console ("/" for the page itself). */
  path: string;
  contentType: string;
  body: Buffer;
  /** The body gzipped (what a browser that accepts gzip gets). */
  gzipped: Buffer;
  /** A strong validator of the body: the same file, the same tag. */
  etag: string;
}

/**
 * The console's Content-Security-Policy: nothing but its own files and its own origin's APIs; no
 * inline script or style, no eval, no frames, no plugins, no other origin reached by any means. The
 * API key a consumer signs in with can then leave the page only to the coordinator that issued it.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** The headers every console response has besides its type and validator. */
export function consoleHeaders(): Record<string, string> {
  return {
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    // Revalidated on every load (cheap: the ETag), so a new coordinator's console is seen at once.
    "Cache-Control": "no-cache",
  };
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

/**
 * The console's files: the page and stylesheet (static/) and the compiled app (dist/app/*.js).
 * Undefined when the app is not built (a coordinator run from sources without `tsc -b`): the
 * coordinator then serves no console rather than a page whose scripts are missing.
 */
export function loadConsole(): ConsoleAsset[] | undefined {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..");
  const app = join(root, "dist", "app");
  if (!existsSync(join(app, "main.js"))) return undefined;
  const assets: ConsoleAsset[] = [];
  const add = (path: string, file: string) => {
    const body = readFileSync(file);
    assets.push({
      path,
      contentType: TYPES[extname(file)] ?? "application/octet-stream",
      body,
      gzipped: gzipSync(body, { level: 9 }),
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`,
    });
  };
  add("/", join(root, "static", "index.html"));
  add("/console.css", join(root, "static", "console.css"));
  add("/favicon.svg", join(root, "static", "favicon.svg"));
  for (const file of walk(app)) {
    if (file.endsWith(".js")) add(`/app/${relative(app, file).split(sep).join("/")}`, file);
  }
  return assets;
}

function* walk(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else yield path;
  }
}
