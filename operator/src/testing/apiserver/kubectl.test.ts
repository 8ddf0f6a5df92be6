import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Kubectl, startKubectl } from "../kubectl.js";
import { type FakeApiServer, startFakeApiServer } from "./index.js";
import { deployment, gadgetCrd, testClient } from "./test-client.js";

// The real kubectl 1.35 as a second client (see ../kubectl.ts on --validate=false).

let server: FakeApiServer;
let k: Kubectl;

beforeAll(async () => {
  server = await startFakeApiServer();
  k = await startKubectl(server);
  await testClient(server).post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", gadgetCrd());
}, 120_000);

afterAll(async () => {
  await server?.close();
  await k?.close();
});

/** kubectl's stdout; a failure throws with its stderr. */
async function kubectl(...args: string[]): Promise<string> {
  const result = await k.run(...args);
  if (result.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed: ${result.stderr}`);
  return result.stdout;
}

const manifest = (name: string, ...objects: unknown[]) => k.manifest(name, ...objects);

describe("kubectl", () => {
  it("lists the API resources from discovery", async () => {
    const out = await kubectl("api-resources");
    expect(out).toMatch(/^deployments\s+deploy\s+apps\/v1\s+true\s+Deployment$/m);
    expect(out).toMatch(/^gadgets\s+gd\s+example\.com\/v1\s+true\s+Gadget$/m);
    expect(out).toMatch(/^leases\s+coordination\.k8s\.io\/v1\s+true\s+Lease$/m);
  });

  it("creates from a file and gets as JSON", async () => {
    const file = await manifest("web.yaml", deployment("web"));
    expect(await kubectl("create", "-f", file, "--validate=false")).toContain("deployment.apps/web created");
    const web = JSON.parse(await kubectl("get", "deployment", "web", "-o", "json", "--show-managed-fields"));
    expect(web.spec.replicas).toBe(1);
    expect(web.metadata.managedFields[0].manager).toBe("kubectl-create");
  });

  it("applies client-side twice (create, then a three-way strategic merge patch)", async () => {
    const cm = (data: Record<string, string>) => ({
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "settings" },
      data,
    });
    expect(
      await kubectl("apply", "-f", await manifest("cm1.yaml", cm({ a: "1", b: "2" })), "--validate=false"),
    ).toContain("configmap/settings created");
    expect(
      await kubectl("apply", "-f", await manifest("cm2.yaml", cm({ a: "10" })), "--validate=false"),
    ).toContain("configmap/settings configured");
    const settings = JSON.parse(await kubectl("get", "configmap", "settings", "-o", "json"));
    expect(settings.data).toEqual({ a: "10" });
    expect(settings.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]).toContain(
      '"a":"10"',
    );

    const d = deployment("web");
    const spec = (d.spec as { template: { spec: { containers: Record<string, unknown>[] } } }).template.spec;
    spec.containers.push({ name: "sidecar", image: "busybox:1.36" });
    await kubectl("apply", "-f", await manifest("web-apply.yaml", d), "--validate=false");
    spec.containers.pop();
    spec.containers[0]!.image = "nginx:1.28";
    await kubectl("apply", "-f", await manifest("web-apply2.yaml", d), "--validate=false");
    const web = JSON.parse(await kubectl("get", "deployment", "web", "-o", "json"));
    expect(
      web.spec.template.spec.containers.map((c: { name: string; image: string }) => `${c.name}=${c.image}`),
    ).toEqual(["app=nginx:1.28"]);
  });

  it("applies server-side and shows a CRD's printer columns", async () => {
    const gadget = {
      apiVersion: "example.com/v1",
      kind: "Gadget",
      metadata: { name: "g1" },
      spec: { size: "large", replicas: 2 },
    };
    expect(
      await kubectl("apply", "--server-side", "--validate=false", "-f", await manifest("g1.yaml", gadget)),
    ).toContain("gadget.example.com/g1 serverside-applied");
    const table = await kubectl("get", "gadgets");
    expect(table).toMatch(/^NAME\s+SIZE\s+REPLICAS\s+PHASE\n/);
    expect(table).toMatch(/^g1\s+large\s+2\s*$/m);
    const g1 = JSON.parse(await kubectl("get", "gd", "g1", "-o", "json", "--show-managed-fields"));
    expect(g1.metadata.managedFields[0]).toMatchObject({ manager: "kubectl", operation: "Apply" });
  });

  it("patches with merge, json and strategic patches", async () => {
    await kubectl("patch", "configmap", "settings", "--type", "merge", "-p", '{"data":{"m":"1"}}');
    await kubectl(
      "patch",
      "configmap",
      "settings",
      "--type",
      "json",
      "-p",
      '[{"op":"add","path":"/data/j","value":"2"}]',
    );
    await kubectl(
      "patch",
      "deployment",
      "web",
      "--type",
      "strategic",
      "-p",
      '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:1.29"}]}}}}',
    );
    const settings = JSON.parse(await kubectl("get", "configmap", "settings", "-o", "json"));
    expect(settings.data).toEqual({ a: "10", m: "1", j: "2" });
    const web = JSON.parse(await kubectl("get", "deployment", "web", "-o", "json"));
    expect(web.spec.template.spec.containers[0].image).toBe("nginx:1.29");
  });

  it("scales deployments and custom resources", async () => {
    expect(await kubectl("scale", "deployment", "web", "--replicas=3")).toContain(
      "deployment.apps/web scaled",
    );
    expect(JSON.parse(await kubectl("get", "deployment", "web", "-o", "json")).spec.replicas).toBe(3);
    await kubectl("scale", "gadget", "g1", "--replicas=4");
    expect(JSON.parse(await kubectl("get", "gadget", "g1", "-o", "json")).spec.replicas).toBe(4);
  });

  it("waits for a jsonpath condition and watches", async () => {
    const waiting = kubectl(
      "wait",
      "gadget/g1",
      "--for=jsonpath={.status.phase}=Ready",
      "--timeout=15s",
    ).catch((error: Error) => error.message);
    await waitFor(() => server.audit.some((e) => e.verb === "watch" && e.resource === "gadgets"));
    await testClient(server).patch(
      "/apis/example.com/v1/namespaces/default/gadgets/g1/status",
      { status: { phase: "Ready" } },
      "application/merge-patch+json",
    );
    expect(await waiting).toContain("gadget.example.com/g1 condition met");

    const watch = spawn(k.path, [
      "--kubeconfig",
      k.kubeconfig,
      "get",
      "configmaps",
      "--watch",
      "--output-watch-events",
    ]);
    let out = "";
    watch.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
    });
    try {
      await waitFor(() => /ADDED\s+settings/.test(out));
      await testClient(server).patch(
        "/api/v1/namespaces/default/configmaps/settings",
        { data: { w: "1" } },
        "application/merge-patch+json",
      );
      await waitFor(() => /MODIFIED\s+settings/.test(out));
    } finally {
      watch.kill();
    }
  });

  it("deletes without waiting", async () => {
    expect(await kubectl("delete", "deployment", "web", "--wait=false")).toContain(
      'deployment.apps "web" deleted',
    );
    expect(await kubectl("get", "deployments", "-o", "name")).not.toContain("web");
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}
