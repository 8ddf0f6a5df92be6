import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, extname, join, posix, relative, sep } from "node:path";
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
  /** The gzipped body's validator (another representation, so another strong tag). */
  gzippedEtag: string;
}

/** The console's files and the headers every one of them is served with. */
export interface Console {
  assets: ConsoleAsset[];
  headers: Record<string, string>;
}

/**
 * The console's Content-Security-Policy: nothing but its own files and its own origin's APIs; no
 * inline script or style (but the page's import map, by its hash), no eval, no frames, no plugins,
 * no other origin reached by any means. The API key a consumer signs in with can then leave the page
 * only to the coordinator that issued it.
 */
export function consoleCsp(importMapSha256: string): string {
  return [
    "default-src 'none'",
    `script-src 'self' 'sha256-${importMapSha256}'`,
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/** The headers every console response has besides its type and validator. */
function consoleHeaders(importMapSha256: string): Record<string, string> {
  return {
    "Content-Security-Policy": consoleCsp(importMapSha256),
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
 * The console's files: the page and stylesheet (static/), the compiled app (dist/app/*.js), and the
 * portable modules of @darkbloom/protocol the page's import map names (the response verifier: the
 * browser runs the very code `darkbloom verify` runs). Undefined when the app is not built (a
 * coordinator run from sources without `tsc -b`): the coordinator then serves no console rather than
 * a page whose scripts are missing.
 */
export function loadConsole(): Console | undefined {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..");
  const app = join(root, "dist", "app");
  if (!existsSync(join(app, "main.js"))) return undefined;
  const assets: ConsoleAsset[] = [];
  const add = (path: string, body: Buffer, type: string) => {
    const tag = createHash("sha256").update(body).digest("base64url").slice(0, 22);
    assets.push({
      path,
      contentType: TYPES[type] ?? "application/octet-stream",
      body,
      gzipped: gzipSync(body, { level: 9 }),
      etag: `"${tag}"`,
      gzippedEtag: `"${tag}-gz"`,
    });
  };
  const page = readFileSync(join(root, "static", "index.html"));
  const importMap = readImportMap(page.toString("utf8"));
  add("/", page, ".html");
  for (const name of ["console.css", "favicon.svg"]) {
    add(`/${name}`, readFileSync(join(root, "static", name)), extname(name));
  }
  for (const file of walk(app)) {
    if (file.endsWith(".js"))
      add(`/app/${relative(app, file).split(sep).join("/")}`, readFileSync(file), ".js");
  }
  for (const [path, body] of libraryModules(importMap.imports)) add(path, body, ".js");
  return { assets, headers: consoleHeaders(importMap.sha256) };
}

const LIB = "/console/lib/";

/** The page's import map: what it maps, and the hash its inline script is allowed by. */
function readImportMap(page: string): { imports: Record<string, string>; sha256: string } {
  const match = /<script type="importmap">([^<]*)<\/script>/.exec(page);
  if (!match) throw new Error("the console's index.html has no import map");
  const text = match[1] as string;
  const imports = (JSON.parse(text) as { imports: Record<string, string> }).imports;
  return { imports, sha256: createHash("sha256").update(text).digest("base64") };
}

/**
 * The library modules the import map names, each mapped under /console/lib/<package>/, with every
 * module they import relatively. They must be portable: a bare import (a Node built-in, another
 * package) would fail in the browser, so it fails here, at start.
 */
function libraryModules(imports: Record<string, string>): Map<string, Buffer> {
  const require = createRequire(import.meta.url);
  const out = new Map<string, Buffer>();
  for (const [specifier, url] of Object.entries(imports)) {
    if (!url.startsWith(LIB)) throw new Error(`the import map maps ${specifier} outside ${LIB}`);
    const file = builtModule(require, specifier);
    const pending: Array<[string, string]> = [[file, url.slice("/console".length)]];
    while (pending.length > 0) {
      const [path, served] = pending.pop() as [string, string];
      if (out.has(served)) continue;
      const body = readFileSync(path);
      out.set(served, body);
      for (const imported of staticImports(body.toString("utf8"))) {
        if (!imported.startsWith("./") && !imported.startsWith("../")) {
          throw new Error(
            `${specifier} is not portable: ${relative(process.cwd(), path)} imports ${imported}`,
          );
        }
        pending.push([join(dirname(path), imported), posix.join(posix.dirname(served), imported)]);
      }
    }
  }
  return out;
}

/**
 * The built JavaScript file a package export names (its "default" condition), whatever conditions
 * this process resolves with (tests resolve workspace packages to their TypeScript sources): the
 * browser needs the built file.
 */
function builtModule(require: NodeJS.Require, specifier: string): string {
  const [scope, name, ...rest] = specifier.split("/");
  const packageName = `${scope}/${name}`;
  let root = dirname(require.resolve(specifier));
  while (!existsSync(join(root, "package.json")) || readPackage(root).name !== packageName) {
    const up = dirname(root);
    if (up === root) throw new Error(`cannot find the package of ${specifier}`);
    root = up;
  }
  const exported = readPackage(root).exports?.[["."].concat(rest).join("/")];
  const file = typeof exported === "string" ? exported : exported?.default;
  if (file === undefined) throw new Error(`${packageName} exports no default for ${specifier}`);
  return join(root, file);
}

function readPackage(root: string): {
  name?: string;
  exports?: Record<string, string | { default?: string }>;
} {
  return JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
}

/** The specifiers of a compiled module's static imports and re-exports. */
export function staticImports(source: string): string[] {
  return [...source.matchAll(/^(?:import|export)\s[^;]*?from\s*"([^"]+)";/gms)].map((m) => m[1] as string);
}

function* walk(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else yield path;
  }
}
