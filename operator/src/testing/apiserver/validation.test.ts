import { describe, expect, it } from "vitest";
import { deployment, useFakeApiServer } from "./test-client.js";

// Validation and defaulting of the built-in kinds, and strict field validation.

const { api } = useFakeApiServer();

const NS = "/api/v1/namespaces/default";
const APPS = "/apis/apps/v1/namespaces/default";

function causes(body: { details?: { causes?: { field: string; reason: string }[] } }) {
  return (body.details?.causes ?? []).map((c) => `${c.reason} ${c.field}`);
}

describe("object metadata", () => {
  it("requires a name or generateName", async () => {
    const res = await api.post(`${NS}/configmaps`, { metadata: {} });
    expect(res.status).toBe(422);
    expect(res.body.message).toBe(
      'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required',
    );
    expect(res.body.details).toEqual({
      kind: "ConfigMap",
      name: "",
      causes: [
        {
          reason: "FieldValueRequired",
          message: "Required value: name or generateName is required",
          field: "metadata.name",
        },
      ],
    });
  });

  it("requires DNS-1123 subdomain names (labels for namespaces, DNS-1035 labels for services)", async () => {
    const bad = await api.post(`${NS}/configmaps`, { metadata: { name: "Bad_Name" } });
    expect(bad.status).toBe(422);
    expect(bad.body.message).toContain(
      'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain',
    );
    expect((await api.post(`${NS}/configmaps`, { metadata: { name: "a.b-c" } })).status).toBe(201);
    expect((await api.post("/api/v1/namespaces", { metadata: { name: "a.b" } })).status).toBe(422);
    const svc = await api.post(`${NS}/services`, {
      metadata: { name: "1svc" },
      spec: { ports: [{ port: 80 }] },
    });
    expect(svc.status).toBe(422);
    expect(svc.body.message).toContain("DNS-1035 label");
    expect((await api.post(`${NS}/configmaps`, { metadata: { name: "x".repeat(254) } })).status).toBe(422);
  });

  it("validates label keys and values", async () => {
    const res = await api.post(`${NS}/configmaps`, {
      metadata: { name: "labels", labels: { "bad key": "v", ok: "bad value!" } },
    });
    expect(res.status).toBe(422);
    expect(causes(res.body)).toEqual([
      "FieldValueInvalid metadata.labels",
      "FieldValueInvalid metadata.labels",
    ]);
  });
});

describe("workloads", () => {
  it("requires a selector that matches the template labels", async () => {
    const noSelector = deployment("d1");
    delete (noSelector.spec as Record<string, unknown>).selector;
    const res1 = await api.post(`${APPS}/deployments`, noSelector);
    expect(res1.status).toBe(422);
    expect(causes(res1.body)).toContain("FieldValueRequired spec.selector");

    const mismatch = deployment("d2");
    (mismatch.spec as { selector: unknown }).selector = { matchLabels: { app: "other" } };
    const res2 = await api.post(`${APPS}/deployments`, mismatch);
    expect(res2.status).toBe(422);
    expect(res2.body.message).toBe(
      'Deployment.apps "d2" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"d2"}: `selector` does not match template `labels`',
    );
  });

  it("requires containers with unique DNS-label names and images", async () => {
    const d = deployment("d3");
    (d.spec as { template: { spec: unknown } }).template.spec = {
      containers: [{ name: "a", image: "x" }, { name: "a" }, { name: "B", image: "y" }],
    };
    const res = await api.post(`${APPS}/deployments`, d);
    expect(res.status).toBe(422);
    expect(causes(res.body)).toEqual([
      "FieldValueDuplicate spec.template.spec.containers[1].name",
      "FieldValueRequired spec.template.spec.containers[1].image",
      "FieldValueInvalid spec.template.spec.containers[2].name",
    ]);
    const none = deployment("d4");
    (none.spec as { template: { spec: unknown } }).template.spec = { containers: [] };
    expect(causes((await api.post(`${APPS}/deployments`, none)).body)).toContain(
      "FieldValueRequired spec.template.spec.containers",
    );
  });

  it("keeps a Deployment's selector immutable", async () => {
    await api.post(`${APPS}/deployments`, deployment("immutable"));
    const { body } = await api.get(`${APPS}/deployments/immutable`);
    body.spec.selector = { matchLabels: { app: "immutable", extra: "x" } };
    body.spec.template.metadata.labels = { app: "immutable", extra: "x" };
    const res = await api.put(`${APPS}/deployments/immutable`, body);
    expect(res.status).toBe(422);
    expect(causes(res.body)).toEqual(["FieldValueInvalid spec.selector"]);
    expect(res.body.details.causes[0].message).toContain("field is immutable");
  });

  it("defaults a Job (selector from its uid, backoffLimit) and requires restartPolicy Never or OnFailure", async () => {
    const job = (restartPolicy?: string) => ({
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name: restartPolicy ? `job-${restartPolicy.toLowerCase()}` : "job-default" },
      spec: {
        template: {
          spec: {
            ...(restartPolicy ? { restartPolicy } : {}),
            containers: [{ name: "c", image: "busybox" }],
          },
        },
      },
    });
    const bad = await api.post("/apis/batch/v1/namespaces/default/jobs", job());
    expect(bad.status).toBe(422);
    expect(bad.body.details.causes).toEqual([
      {
        reason: "FieldValueNotSupported",
        message: 'Unsupported value: "Always": supported values: "OnFailure", "Never"',
        field: "spec.template.spec.restartPolicy",
      },
    ]);
    const ok = await api.post("/apis/batch/v1/namespaces/default/jobs", job("Never"));
    expect(ok.status).toBe(201);
    const uid = ok.body.metadata.uid;
    expect(ok.body.spec).toMatchObject({
      backoffLimit: 6,
      completions: 1,
      parallelism: 1,
      selector: { matchLabels: { "batch.kubernetes.io/controller-uid": uid } },
    });
    expect(ok.body.spec.template.metadata.labels).toMatchObject({
      "controller-uid": uid,
      "job-name": "job-never",
    });
    const changed = structuredClone(ok.body);
    changed.spec.template.spec.containers[0].image = "other";
    expect((await api.put("/apis/batch/v1/namespaces/default/jobs/job-never", changed)).status).toBe(422);
  });

  it("forbids pod spec changes other than images", async () => {
    const pod = await api.post(`${NS}/pods`, {
      metadata: { name: "frozen" },
      spec: { containers: [{ name: "c", image: "busybox:1" }] },
    });
    const image = structuredClone(pod.body);
    image.spec.containers[0].image = "busybox:2";
    expect((await api.put(`${NS}/pods/frozen`, image)).status).toBe(200);
    const node = await api.patch(
      `${NS}/pods/frozen`,
      { spec: { nodeName: "n1" } },
      "application/merge-patch+json",
    );
    expect(node.status).toBe(422);
    expect(node.body.details.causes[0]).toMatchObject({ reason: "FieldValueForbidden", field: "spec" });
    const bound = await api.post(`${NS}/pods/frozen/binding`, {
      apiVersion: "v1",
      kind: "Binding",
      metadata: { name: "frozen" },
      target: { kind: "Node", name: "n1" },
    });
    expect(bound.status).toBe(201);
    expect((await api.get(`${NS}/pods/frozen`)).body.spec.nodeName).toBe("n1");
    expect((await api.post(`${NS}/pods/frozen/binding`, { target: { name: "n2" } })).status).toBe(409);
  });
});

describe("services", () => {
  it("allocates a cluster IP from 10.96.0.0/12 and defaults ports", async () => {
    const res = await api.post(`${NS}/services`, {
      metadata: { name: "svc" },
      spec: { selector: { app: "x" }, ports: [{ port: 80 }] },
    });
    expect(res.status).toBe(201);
    expect(res.body.spec).toMatchObject({
      type: "ClusterIP",
      sessionAffinity: "None",
      ports: [{ port: 80, protocol: "TCP", targetPort: 80 }],
    });
    const ip: string = res.body.spec.clusterIP;
    const [a, b] = ip.split(".").map(Number);
    expect(a).toBe(10);
    expect(b).toBeGreaterThanOrEqual(96);
    expect(b).toBeLessThanOrEqual(111);
    expect(res.body.spec.clusterIPs).toEqual([ip]);
  });

  it("keeps the cluster IP when an update omits it, and refuses to change it", async () => {
    const { body } = await api.get(`${NS}/services/svc`);
    const ip = body.spec.clusterIP;
    delete body.spec.clusterIP;
    delete body.spec.clusterIPs;
    body.spec.ports[0].port = 81;
    const kept = await api.put(`${NS}/services/svc`, body);
    expect(kept.status).toBe(200);
    expect(kept.body.spec.clusterIP).toBe(ip);
    const changed = structuredClone(kept.body);
    changed.spec.clusterIP = "10.96.200.200";
    changed.spec.clusterIPs = ["10.96.200.200"];
    const res = await api.put(`${NS}/services/svc`, changed);
    expect(res.status).toBe(422);
    expect(causes(res.body)).toEqual(["FieldValueInvalid spec.clusterIPs[0]"]);
  });

  it("validates ports: range, and names when there are several", async () => {
    const res = await api.post(`${NS}/services`, {
      metadata: { name: "ports" },
      spec: { ports: [{ port: 0 }, { port: 70000, name: "b" }] },
    });
    expect(res.status).toBe(422);
    // targetPort defaults to port, so a bad port makes a bad targetPort too, as on the real server.
    expect(causes(res.body)).toEqual([
      "FieldValueRequired spec.ports[0].name",
      "FieldValueInvalid spec.ports[0].port",
      "FieldValueInvalid spec.ports[0].targetPort",
      "FieldValueInvalid spec.ports[1].port",
      "FieldValueInvalid spec.ports[1].targetPort",
    ]);
  });
});

describe("other kinds", () => {
  it("requires base64 Secret data (a decoding error, 400) and valid keys", async () => {
    const res = await api.post(`${NS}/secrets`, { metadata: { name: "s" }, data: { key: "not base64!" } });
    expect(res.status).toBe(400);
    expect(res.body.message).toContain(
      'Secret in version "v1" cannot be handled as a Secret: illegal base64 data',
    );
    const key = await api.post(`${NS}/secrets`, { metadata: { name: "s" }, data: { "bad key": "YQ==" } });
    expect(key.status).toBe(422);
    const ok = await api.post(`${NS}/secrets`, { metadata: { name: "s" }, stringData: { a: "b" } });
    expect(ok.body.type).toBe("Opaque");
  });

  it("refuses a PodDisruptionBudget with both minAvailable and maxUnavailable", async () => {
    const res = await api.post("/apis/policy/v1/namespaces/default/poddisruptionbudgets", {
      metadata: { name: "pdb" },
      spec: { minAvailable: 1, maxUnavailable: "50%", selector: { matchLabels: { app: "x" } } },
    });
    expect(res.status).toBe(422);
    expect(res.body.details.causes[0]).toMatchObject({ field: "spec" });
    expect(res.body.details.causes[0].message).toContain(
      "minAvailable and maxUnavailable cannot be both set",
    );
  });

  it("type-checks Lease fields", async () => {
    const res = await api.post("/apis/coordination.k8s.io/v1/namespaces/default/leases", {
      metadata: { name: "l" },
      spec: { leaseDurationSeconds: "15" },
    });
    expect(res.status).toBe(400);
    expect(res.body.message).toBe(
      'Lease in version "v1" cannot be handled as a Lease: json: cannot unmarshal string into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32',
    );
    const time = await api.post("/apis/coordination.k8s.io/v1/namespaces/default/leases", {
      metadata: { name: "l" },
      spec: { renewTime: "yesterday" },
    });
    expect(time.status).toBe(400);
    const ok = await api.post("/apis/coordination.k8s.io/v1/namespaces/default/leases", {
      metadata: { name: "l" },
      spec: { holderIdentity: "me", leaseDurationSeconds: 15, renewTime: "2025-01-01T00:00:00.000000Z" },
    });
    expect(ok.status).toBe(201);
  });

  it("stores events of both APIs without validation beyond metadata", async () => {
    const core = await api.post(`${NS}/events`, {
      metadata: { name: "e1" },
      involvedObject: { kind: "Pod", name: "p" },
      reason: "Started",
      anything: { goes: true },
    });
    expect(core.status).toBe(201);
    const modern = await api.post("/apis/events.k8s.io/v1/namespaces/default/events", {
      metadata: { name: "e2" },
      eventTime: "2025-01-01T00:00:00.000000Z",
      reason: "Started",
      action: "Start",
      reportingController: "x",
      reportingInstance: "y",
      type: "Normal",
    });
    expect(modern.status).toBe(201);
  });
});

describe("unknown fields", () => {
  const withUnknown = (name: string) => {
    const d = deployment(name);
    (d.spec as Record<string, unknown>).foo = 1;
    (d.spec as { template: { spec: { containers: Record<string, unknown>[] } } }).template.spec
      .containers[0]!.bar = 2;
    return d;
  };

  it("Strict: 400 listing every unknown field, in document order", async () => {
    const res = await api.post(`${APPS}/deployments?fieldValidation=Strict`, withUnknown("u1"));
    expect(res.status).toBe(400);
    expect(res.body.message).toBe(
      'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.template.spec.containers[0].bar", unknown field "spec.foo"',
    );
  });

  it("Warn: accepted, fields dropped, a Warning header per field", async () => {
    const res = await api.post(`${APPS}/deployments?fieldValidation=Warn`, withUnknown("u2"));
    expect(res.status).toBe(201);
    expect(res.headers.get("warning")).toBe(
      '299 - "unknown field \\"spec.template.spec.containers[0].bar\\"", 299 - "unknown field \\"spec.foo\\""',
    );
    expect(res.body.spec.foo).toBeUndefined();
  });

  it("Ignore: accepted silently", async () => {
    const res = await api.post(`${APPS}/deployments?fieldValidation=Ignore`, withUnknown("u3"));
    expect(res.status).toBe(201);
    expect(res.headers.get("warning")).toBeNull();
  });
});
