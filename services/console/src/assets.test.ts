import { describe, expect, it } from "vitest";
import { loadConsole, staticImports } from "./assets.js";

describe("the console's files", () => {
  const console = loadConsole();

  it.skipIf(console === undefined)(
    "serve the protocol's portable verifier with everything it imports, and nothing Node's",
    () => {
      const lib = (console?.assets ?? []).filter((a) => a.path.startsWith("/lib/"));
      expect(lib.map((a) => a.path).sort()).toEqual(
        [
          "logprobs",
          "published-key",
          "response-proof",
          "response-record",
          "saved-response",
          "web-verify",
        ].map((m) => `/lib/protocol/${m}.js`),
      );
      for (const asset of lib) {
        const source = asset.body.toString("utf8");
        const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
        // A browser has none of these: code that used them would fail in the page, not here.
        expect(code, asset.path).not.toMatch(/\b(Buffer|process|require)\b|node:/);
        for (const imported of staticImports(source)) expect(imported).toMatch(/^\.\.?\//);
      }
      // The page's import map is allowed by its hash, and nothing else inline is.
      expect(console?.headers["Content-Security-Policy"]).toMatch(
        /script-src 'self' 'sha256-[A-Za-z0-9+/]{43}='; /,
      );
    },
  );

  it("finds a compiled module's imports and re-exports", () => {
    const source = [
      'import { a } from "./a.js";',
      'import {\n  b,\n  c,\n} from "../b.js";',
      'export { d } from "./d.js";',
      'export * from "node:crypto";',
      'const from = "not an import";',
    ].join("\n");
    expect(staticImports(source)).toEqual(["./a.js", "../b.js", "./d.js", "node:crypto"]);
  });
});
