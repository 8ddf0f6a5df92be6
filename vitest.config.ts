import { defaultClientConditions, defaultServerConditions } from "vite";
import { defineConfig } from "vitest/config";

// Workspace packages export their TypeScript sources under the "@darkbloom/source" condition, so
// tests run against src/ without a build step; bins and the published entry points use dist/.
// Only the custom condition is added: vitest hands these conditions to Node too, and a generic one
// such as "import" would make CommonJS dependencies (pg requiring pg-pool) load ESM builds.
const SOURCE = "@darkbloom/source";

export default defineConfig({
  resolve: { conditions: [SOURCE, ...defaultClientConditions] },
  ssr: { resolve: { conditions: [SOURCE, ...defaultServerConditions], externalConditions: [SOURCE] } },
  test: {
    include: ["services/**/src/**/*.test.ts", "tests/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**"],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: "forks",
  },
});
