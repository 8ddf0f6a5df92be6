import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeApiServer, startFakeApiServer } from "../../testing/apiserver/index.js";
import { type Kubectl, startKubectl } from "../../testing/kubectl.js";

// The committed CRDs as a platform team meets them: installed with the real kubectl 1.35, then
// Coordinators applied, listed, scaled and refused by it. The fake API server enforces the CRDs'
// schemas and CEL rules as the real one does (it has no OpenAPI documents: --validate=false).

const CRD_DIR = fileURLToPath(new URL("../../../config/crd/", import.meta.url));

let server: FakeApiServer;
let k: Kubectl;

beforeAll(async () => {
  server = await startFakeApiServer();
  k = await startKubectl(server);
}, 120_000);

afterAll(async () => {
  await server?.close();
  await k?.close();
});

const kubectl = (...args: string[]) => k.run(...args);
const apply = async (name: string, object: unknown) =>
  k.run("apply", "--validate=false", "-f", await k.manifest(`${name}.yaml`, object));

const coordinator = (name: string, spec: Record<string, unknown> = {}) => ({
  apiVersion: "darkbloom.dev/v1alpha1",
  kind: "Coordinator",
  metadata: { name, namespace: "default" },
  spec: {
    image: "ghcr.io/darkbloom/coordinator:0.1.0",
    database: { secretRef: { name: "db" } },
    adminKeySecretRef: { name: "admin" },
    ...spec,
  },
});

describe("the CRDs under kubectl", () => {
  it("install with server-side apply and appear in discovery with their short names", async () => {
    const installed = await kubectl("apply", "--server-side", "--validate=false", "-f", CRD_DIR);
    expect(installed.stderr).toBe("");
    expect(installed.stdout).toMatch(/coordinators\.darkbloom\.dev serverside-applied/);
    const resources = await kubectl("api-resources", "--api-group", "darkbloom.dev");
    expect(resources.stdout).toMatch(/^coordinators\s+dbc\s+darkbloom\.dev\/v1alpha1\s+true\s+Coordinator$/m);
    expect(resources.stdout).toMatch(
      /^providerreleases\s+dbrel\s+darkbloom\.dev\/v1alpha1\s+true\s+ProviderRelease$/m,
    );
  });

  it("apply a Coordinator with its defaults, list it with the printer columns, and scale it", async () => {
    expect((await apply("main", coordinator("main"))).code).toBe(0);
    const json = JSON.parse((await kubectl("get", "coordinator", "main", "-o", "json")).stdout);
    expect(json.spec).toMatchObject({
      replicas: 2,
      drainSeconds: 30,
      service: { type: "ClusterIP", port: 80 },
      database: { secretRef: { name: "db", key: "url" } },
    });
    const table = await kubectl("get", "dbc");
    expect(table.stdout.split("\n")[0]).toMatch(/^NAME\s+DESIRED\s+READY\s+STATUS\s+AGE$/);
    expect(table.stdout).toMatch(/^main\s+2\s+/m);
    expect((await kubectl("scale", "coordinator", "main", "--replicas", "4")).code).toBe(0);
    const scaled = JSON.parse((await kubectl("get", "coordinator", "main", "-o", "json")).stdout);
    expect(scaled.spec.replicas).toBe(4);
  });

  it("refuse bad Coordinators with the field and the rule's message", async () => {
    const negative = await apply("negative", coordinator("negative", { replicas: -1 }));
    expect(negative.code).not.toBe(0);
    expect(negative.stderr).toContain(
      "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
    );
    const heartbeat = await apply(
      "heartbeat",
      coordinator("heartbeat", { config: { instanceHeartbeat: "30s", instanceStale: "10s" } }),
    );
    expect(heartbeat.code).not.toBe(0);
    expect(heartbeat.stderr).toMatch(/spec\.config.*instanceHeartbeat/);
    const noImage = await apply("noimage", {
      ...coordinator("noimage"),
      spec: { database: { secretRef: { name: "db" } } },
    });
    expect(noImage.stderr).toMatch(/spec\.image: Required value/);
    expect(noImage.stderr).toMatch(/spec\.adminKeySecretRef: Required value/);
  });

  it("keep a ProviderRelease's identity immutable", async () => {
    const release = {
      apiVersion: "darkbloom.dev/v1alpha1",
      kind: "ProviderRelease",
      metadata: { name: "r1", namespace: "default" },
      spec: {
        coordinatorRef: { name: "main" },
        version: "1.2.3",
        platform: "darwin-arm64",
        binarySha256: "ab".repeat(32),
        bundleSha256: "cd".repeat(32),
        url: "https://releases.example/darkbloom-1.2.3.tar.gz",
      },
    };
    expect((await apply("r1", release)).code).toBe(0);
    const changed = await apply("r1-changed", {
      ...release,
      spec: { ...release.spec, binarySha256: "ef".repeat(32) },
    });
    expect(changed.code).not.toBe(0);
    expect(changed.stderr).toContain("immutable");
    const deactivated = await apply("r1-inactive", { ...release, spec: { ...release.spec, active: false } });
    expect(deactivated.code).toBe(0);
    expect((await kubectl("get", "dbrel")).stdout).toMatch(/^r1\s+1\.2\.3\s+darwin-arm64\s+false\s+/m);
  });
});
