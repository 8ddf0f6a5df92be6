import { defaultClientConditions, defaultServerConditions } from "vite";
import { defineConfig } from "vitest/config";

// Workspace packages export their TypeScript sources under the "@darkbloom/source" condition, so
// tests run against src/ without a build step; bins and the published entry points use dist/.
// Only the custom condition is added: vitest hands these conditions to Node too, and a generic one
// such as "import" would make CommonJS dependencies (pg requiring pg-pool) load ESM builds.
const SOURCE = "@darkbloom/source";

// Tests that run the llama.cpp engine (directly, or in the provider daemons of the testbed and the
// local network) use both cores by themselves: on a 2-core machine they run after everything else,
// one file at a time, or their timings (and timeouts) depend on what else runs.
const ENGINE_TESTS = [
  "services/provider/src/engine/llama/**/*.test.ts",
  "services/provider/src/engine/native/**/*.test.ts",
  "services/provider/src/engine/mlx/**/*.test.ts",
  "services/provider/src/cli/doctor-engine.test.ts",
  "services/provider/src/cli/serve-llama.test.ts",
  "services/provider/src/link/embeddings-llama.test.ts",
  "tests/e2e/**/*.test.ts",
  "tests/drills/**/*.test.ts",
  // Real coordinator processes under the operator, rolled and killed: timings matter here too.
  "tests/kubernetes/**/*.test.ts",
  // Builds the container images' stages (npm ci, tsc -b): a minute of both cores.
  "tests/images/**/*.test.ts",
];
const ALL_TESTS = [
  "services/**/src/**/*.test.ts",
  "native/src/**/*.test.ts",
  "operator/src/**/*.test.ts",
  "tests/**/*.test.ts",
];
const IGNORED = ["**/node_modules/**", "**/dist/**"];

export default defineConfig({
  resolve: { conditions: [SOURCE, ...defaultClientConditions] },
  // Not vite's "module" condition on the server side: Node does not know it, and a package whose
  // "module" export is a bundler-only ESM build (@opentelemetry/api under the Vercel AI SDK: imports
  // without extensions) would be handed to Node to load.
  ssr: {
    resolve: {
      conditions: [SOURCE, ...defaultServerConditions.filter((c) => c !== "module")],
      externalConditions: [SOURCE],
    },
  },
  test: {
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: "forks",
    projects: [
      {
        extends: true,
        test: {
          name: "system",
          include: ALL_TESTS,
          exclude: [...IGNORED, ...ENGINE_TESTS],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: "engine",
          include: ENGINE_TESTS,
          exclude: IGNORED,
          fileParallelism: false,
          testTimeout: 120_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
