import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CONFIGMAPS, ENDPOINTS, PODS, SECRETS, SERVICES } from "./client.js";
import { serverContainer, startTestCluster, type TestCluster, waitFor } from "./test-support.js";
import type { ConfigMap, Container, Endpoints, Pod } from "./types.js";

describe("the kubelet", () => {
  let t: TestCluster;
  beforeAll(async () => {
    t = await startTestCluster();
  });
  afterAll(async () => {
    await t?.close();
  });

  const pod = (name: string, containers: Container[], spec: Partial<Pod["spec"]> = {}, labels = {}): Pod => ({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: t.namespace, labels },
    spec: { containers, ...spec },
  });
  const status = (p: Pod | undefined) => p?.status?.containerStatuses?.[0];

  it("waits with CreateContainerConfigError for a missing Secret, and starts once it exists", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    const container: Container = {
      name: "main",
      image: "example.com/print:1",
      args: ["--token=$(TOKEN)", "$$(TOKEN)", "--dir=/etc/conf/sub"],
      env: [
        { name: "TOKEN", valueFrom: { secretKeyRef: { name: "creds", key: "token" } } },
        { name: "NS", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
        { name: "IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
        { name: "NODE", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
        { name: "COMBINED", value: "$(NS)/$(TOKEN)/$(UNDEFINED)" },
        { name: "READ_FILE", value: "/etc/conf/greeting" },
        { name: "PRINT_ENV", value: "TOKEN,NS,IP,NODE,COMBINED,FROM_CM" },
      ],
      envFrom: [{ configMapRef: { name: "settings" }, prefix: "FROM_" }],
      volumeMounts: [{ name: "conf", mountPath: "/etc/conf" }],
    };
    await t.client.create(CONFIGMAPS, ns, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "settings", namespace: ns },
      data: { CM: "from-configmap" },
    } as never);
    await t.client.create(
      PODS,
      ns,
      pod("needs-secret", [container], {
        restartPolicy: "Never",
        volumes: [{ name: "conf", secret: { secretName: "files" } }],
      }),
    );
    // The secret volume is missing too: the pod waits in ContainerCreating until it exists.
    await waitFor(
      "ContainerCreating",
      () => status(pods.get(ns, "needs-secret"))?.state.waiting?.reason === "ContainerCreating",
    );
    await t.client.create(SECRETS, ns, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "files", namespace: ns },
      data: { greeting: Buffer.from("hi from a file").toString("base64") },
    } as never);
    const waiting = await waitFor("CreateContainerConfigError", () => {
      const s = status(pods.get(ns, "needs-secret"));
      return s?.state.waiting?.reason === "CreateContainerConfigError" && s;
    });
    expect(waiting.state.waiting?.message).toBe('secret "creds" not found');
    expect(pods.get(ns, "needs-secret")?.status?.phase).toBe("Pending");

    await t.client.create(SECRETS, ns, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "creds", namespace: ns },
      data: { token: Buffer.from("s3cret").toString("base64") },
    } as never);
    const done = await waitFor(
      "the pod to succeed",
      () => pods.get(ns, "needs-secret")?.status?.phase === "Succeeded" && pods.get(ns, "needs-secret"),
    );
    const ip = done.status?.podIP;
    const log = t.cluster.podLog(ns, "needs-secret");
    const volumeDir = path.join(
      t.dir,
      "work",
      "pods",
      `${ns}_needs-secret_${done.metadata.uid}`,
      "volumes",
      "conf",
    );
    expect(log).toContain(`args=${JSON.stringify(["--token=s3cret", "$(TOKEN)", `--dir=${volumeDir}/sub`])}`);
    expect(log).toContain("TOKEN=s3cret\n");
    expect(log).toContain(`NS=${ns}\n`);
    expect(log).toContain(`IP=${ip}\n`);
    expect(log).toContain("NODE=fake-node\n");
    expect(log).toContain(`COMBINED=${ns}/s3cret/$(UNDEFINED)\n`);
    expect(log).toContain("FROM_CM=from-configmap\n");
    expect(log).toContain("file=hi from a file");
  });

  it("runs init containers to completion before the containers", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    const print = (name: string, text: string): Container => ({
      name,
      image: "example.com/print:1",
      args: [text],
      env: [{ name: "SLEEP_MS", value: "200" }],
    });
    await t.client.create(
      PODS,
      ns,
      pod("with-init", [print("main", "main")], {
        restartPolicy: "OnFailure",
        initContainers: [print("init", "init")],
      }),
    );
    const done = await waitFor("the pod to succeed", () => {
      const p = pods.get(ns, "with-init");
      return p?.status?.phase === "Succeeded" && p;
    });
    expect(done.status?.initContainerStatuses?.[0]?.state.terminated).toMatchObject({
      exitCode: 0,
      reason: "Completed",
    });
    expect(done.status?.conditions?.find((c) => c.type === "Initialized")?.status).toBe("True");
    const log = t.cluster.podLog(ns, "with-init");
    expect(log.indexOf('args=["init"]')).toBeGreaterThanOrEqual(0);
    expect(log.indexOf('args=["main"]')).toBeGreaterThan(log.indexOf('args=["init"]'));
  });

  it("runs preStop, then SIGTERM, then SIGKILL after terminationGracePeriodSeconds, on deletion", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    let sawTerminating = false;
    pods.onEvent((_e, p) => {
      if (p.metadata.name === "stubborn" && p.metadata.deletionTimestamp) sawTerminating = true;
    });
    const container: Container = {
      name: "main",
      image: "example.com/stubborn:1",
      lifecycle: { preStop: { sleep: { seconds: 1 } } },
    };
    await t.client.create(PODS, ns, pod("stubborn", [container], { terminationGracePeriodSeconds: 3 }));
    await waitFor("the pod to run", () => pods.get(ns, "stubborn")?.status?.phase === "Running");
    await waitFor("the process to tick", () => t.cluster.podLog(ns, "stubborn").includes("tick"));
    const deletedAt = Date.now();
    await t.client.delete(PODS, ns, "stubborn");
    await waitFor("the pod object to go", () => !pods.get(ns, "stubborn"), 10_000);
    const goneAfter = Date.now() - deletedAt;
    // The process is gone when it stops ticking.
    let length = -1;
    await waitFor(
      "the process to stop ticking",
      () => {
        const now = t.cluster.podLog(ns, "stubborn").length;
        const still = now === length;
        length = now;
        return still && Date.now() - deletedAt > 3000;
      },
      10_000,
      300,
    );
    const log = t.cluster.podLog(ns, "stubborn");
    const sigterm = Number(/SIGTERM ignored at (\d+)/.exec(log)?.[1]);
    const ticks = [...log.matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
    const lastTick = Math.max(...ticks);
    // preStop sleeps 1 s before SIGTERM; SIGKILL comes at the end of the 3 s grace period.
    expect(sigterm - deletedAt).toBeGreaterThanOrEqual(900);
    expect(sigterm - deletedAt).toBeLessThan(2000);
    expect(lastTick - deletedAt).toBeGreaterThanOrEqual(2700);
    expect(lastTick - deletedAt).toBeLessThan(4500);
    // The real API server keeps the pod, with a deletionTimestamp, until the kubelet confirms with grace 0.
    // The fake API server deletes a pod at once (reported); the kubelet then stops it all the same, with
    // the pod's terminationGracePeriodSeconds.
    if (sawTerminating) expect(goneAfter).toBeGreaterThanOrEqual(2700);
  });

  it("keeps ConfigMap volumes up to date, and finishes a graceful deletion with a delete of grace 0", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    const cm = await t.client.create<ConfigMap>(CONFIGMAPS, ns, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "live-config", namespace: ns },
      data: { setting: "one" },
    });
    const holder = pod(
      "mounted",
      [
        {
          name: "main",
          image: "example.com/stubborn:1",
          volumeMounts: [{ name: "conf", mountPath: "/config" }],
        },
      ],
      { volumes: [{ name: "conf", configMap: { name: "live-config" } }], terminationGracePeriodSeconds: 1 },
    );
    // A finalizer keeps the pod object after deletion, as the real API server keeps every pod until the
    // kubelet has stopped it.
    holder.metadata.finalizers = ["example.com/hold"];
    const created = await t.client.create(PODS, ns, holder);
    await waitFor("the pod to run", () => pods.get(ns, "mounted")?.status?.phase === "Running");
    const file = path.join(
      t.dir,
      "work",
      "pods",
      `${ns}_mounted_${created.metadata.uid}`,
      "volumes",
      "conf",
      "setting",
    );
    expect(await readFile(file, "utf8")).toBe("one");
    await t.client.update(CONFIGMAPS, { ...cm, data: { setting: "two" } });
    await waitFor("the volume to follow", async () => (await readFile(file, "utf8")) === "two", 10_000);

    const deletesBefore = t.apiServer.audit.filter(
      (e) => e.verb === "delete" && e.resource === "pods",
    ).length;
    await t.client.delete(PODS, ns, "mounted");
    const final = await waitFor("the kubelet to report the pod stopped", () => {
      const p = pods.get(ns, "mounted");
      return p?.status?.phase === "Failed" && p;
    });
    expect(final.metadata.deletionTimestamp).toBeDefined();
    expect(final.status?.containerStatuses?.[0]?.state.terminated).toMatchObject({
      exitCode: 137,
      reason: "Error",
    });
    // The kubelet's delete with grace 0 (with a finalizer it shortens the grace, a MODIFIED event the
    // kubelet may answer with one more delete, as against the real server).
    await waitFor(
      "the kubelet's delete with grace 0",
      () =>
        t.apiServer.audit.filter((e) => e.verb === "delete" && e.resource === "pods").length >=
        deletesBefore + 2,
    );
    const current = await t.client.get<Pod>(PODS, ns, "mounted");
    await t.client.update(PODS, { ...current, metadata: { ...current.metadata, finalizers: [] } });
    await waitFor("the pod to go", () => !pods.get(ns, "mounted"));
  });

  it("reports ErrImagePull / ImagePullBackOff for an unknown image, and CrashLoopBackOff for a crashing one", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    await t.client.create(PODS, ns, pod("no-image", [{ name: "main", image: "example.com/nope:1" }]));
    await t.client.create(PODS, ns, pod("crasher", [{ name: "main", image: "example.com/exit1:1" }]));
    await waitFor(
      "ImagePullBackOff",
      () => status(pods.get(ns, "no-image"))?.state.waiting?.reason === "ImagePullBackOff",
    );
    expect(pods.get(ns, "no-image")?.status?.phase).toBe("Pending");
    const crashing = await waitFor("CrashLoopBackOff after restarts", () => {
      const s = status(pods.get(ns, "crasher"));
      return s?.state.waiting?.reason === "CrashLoopBackOff" && s.restartCount >= 1 && s;
    });
    expect(crashing.lastState.terminated).toMatchObject({ exitCode: 1, reason: "Error" });
    expect(pods.get(ns, "crasher")?.status?.phase).toBe("Running");
    for (const name of ["no-image", "crasher"]) await t.client.delete(PODS, ns, name);
  });

  it("follows readiness in Endpoints and restarts a container whose liveness probe fails", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    const endpoints = await t.watch<Endpoints>(ENDPOINTS);
    const notReadyFile = path.join(t.dir, "not-ready");
    const sickFile = path.join(t.dir, "sick");
    const ready: Container = {
      ...serverContainer([{ name: "NOT_READY_FILE", value: notReadyFile }]),
      startupProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1, failureThreshold: 10 },
    };
    const live = serverContainer([{ name: "NOT_READY_FILE", value: sickFile }]);
    live.name = "live";
    (live as Container).livenessProbe = {
      httpGet: { path: "/readyz", port: "http" },
      initialDelaySeconds: 1,
      periodSeconds: 1,
      failureThreshold: 1,
    };
    await t.client.create(SERVICES, ns, {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "probed", namespace: ns },
      spec: { selector: { app: "probed" }, ports: [{ port: 8080 }] },
    } as never);
    await t.client.create(PODS, ns, pod("probed", [ready], {}, { app: "probed" }));
    await t.client.create(PODS, ns, pod("lively", [live], { terminationGracePeriodSeconds: 1 }));
    await waitFor(
      "a ready address",
      () => endpoints.get(ns, "probed")?.subsets?.[0]?.addresses?.length === 1,
    );
    await writeFile(notReadyFile, "");
    const ep = await waitFor("a not-ready address", () => {
      const ep = endpoints.get(ns, "probed");
      return ep?.subsets?.[0]?.notReadyAddresses?.length === 1 && ep;
    });
    expect(ep.subsets?.[0]?.addresses).toBeUndefined();
    expect(pods.get(ns, "probed")?.status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      status: "False",
      reason: "ContainersNotReady",
    });

    await waitFor("the live pod to be ready", () => status(pods.get(ns, "lively"))?.ready === true);
    await writeFile(sickFile, "");
    const restarted = await waitFor("a liveness restart", () => {
      const s = status(pods.get(ns, "lively"));
      return (s?.restartCount ?? 0) >= 1 && s;
    });
    expect(restarted.lastState.terminated?.exitCode).toBe(0);
    for (const name of ["probed", "lively"]) await t.client.delete(PODS, ns, name);
  });
});
