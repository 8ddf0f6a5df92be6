import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JOBS, PODS } from "./client.js";
import { startTestCluster, type TestCluster, waitFor } from "./test-support.js";
import type { Job, Pod } from "./types.js";
import { controllerRef } from "./util.js";

describe("Jobs", () => {
  let t: TestCluster;
  beforeAll(async () => {
    t = await startTestCluster();
  });
  afterAll(async () => {
    await t?.close();
  });

  const job = (
    name: string,
    image: string,
    backoffLimit: number,
    env: { name: string; value: string }[] = [],
  ): Job => ({
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name, namespace: t.namespace },
    spec: {
      backoffLimit,
      template: {
        spec: {
          restartPolicy: "Never",
          containers: [{ name: "main", image, args: ["$(GREETING)", "x"], env }],
        },
      },
    },
  });

  const condition = (j: Job | undefined, type: string) => j?.status?.conditions?.find((c) => c.type === type);

  it("runs a Job to completion", async () => {
    const jobs = await t.watch<Job>(JOBS);
    const pods = await t.watch<Pod>(PODS);
    await t.client.create(
      JOBS,
      t.namespace,
      job("ok", "example.com/print:1", 2, [{ name: "GREETING", value: "hello" }]),
    );
    const done = await waitFor(
      "the Job to complete",
      () => condition(jobs.get(t.namespace, "ok"), "Complete") && jobs.get(t.namespace, "ok"),
    );
    expect(condition(done, "Complete")).toMatchObject({ status: "True" });
    expect(condition(done, "SuccessCriteriaMet")).toMatchObject({ status: "True" });
    expect(done.status).toMatchObject({ succeeded: 1, ready: 0 });
    expect(done.status?.active).toBeUndefined();
    expect(done.status?.failed).toBeUndefined();
    expect(done.status?.startTime).toBeDefined();
    expect(done.status?.completionTime).toBeDefined();
    const owned = pods.list(t.namespace).filter((p) => controllerRef(p)?.uid === done.metadata.uid);
    expect(owned).toHaveLength(1);
    const pod = owned[0] as Pod;
    expect(pod.metadata.name).toMatch(/^ok-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
    expect(pod.metadata.labels?.["job-name"]).toBe("ok");
    expect(pod.status?.phase).toBe("Succeeded");
    expect(pod.status?.containerStatuses?.[0]?.state.terminated).toMatchObject({
      exitCode: 0,
      reason: "Completed",
    });
    expect(pod.status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      status: "False",
      reason: "PodCompleted",
    });
    expect(t.cluster.podLog(t.namespace, pod.metadata.name ?? "")).toContain('args=["hello","x"]');
  });

  it("fails a Job after backoffLimit + 1 failed pods, with BackoffLimitExceeded", async () => {
    const jobs = await t.watch<Job>(JOBS);
    const pods = await t.watch<Pod>(PODS);
    await t.client.create(JOBS, t.namespace, job("bad", "example.com/exit1:1", 2));
    const failed = await waitFor(
      "the Job to fail",
      () => condition(jobs.get(t.namespace, "bad"), "Failed") && jobs.get(t.namespace, "bad"),
    );
    expect(condition(failed, "Failed")).toMatchObject({ status: "True", reason: "BackoffLimitExceeded" });
    expect(condition(failed, "FailureTarget")).toMatchObject({
      status: "True",
      reason: "BackoffLimitExceeded",
    });
    expect(condition(failed, "Complete")).toBeUndefined();
    expect(failed.status?.failed).toBe(3);
    expect(failed.status?.completionTime).toBeUndefined();
    const owned = pods.list(t.namespace).filter((p) => controllerRef(p)?.uid === failed.metadata.uid);
    expect(owned).toHaveLength(3);
    for (const p of owned) {
      expect(p.status?.phase).toBe("Failed");
      expect(p.status?.containerStatuses?.[0]?.state.terminated).toMatchObject({
        exitCode: 1,
        reason: "Error",
      });
      expect(t.cluster.podLog(t.namespace, p.metadata.name ?? "")).toContain("failing");
    }
  });

  it("stops a Job at activeDeadlineSeconds with DeadlineExceeded", async () => {
    const jobs = await t.watch<Job>(JOBS);
    const j = job("slow", "example.com/stubborn:1", 6);
    j.spec.activeDeadlineSeconds = 1;
    if (j.spec.template.spec.containers[0]) j.spec.template.spec.containers[0].args = [];
    j.spec.template.spec.terminationGracePeriodSeconds = 0;
    await t.client.create(JOBS, t.namespace, j);
    const failed = await waitFor(
      "the Job to fail",
      () => condition(jobs.get(t.namespace, "slow"), "Failed") && jobs.get(t.namespace, "slow"),
    );
    expect(condition(failed, "Failed")).toMatchObject({ reason: "DeadlineExceeded" });
  });
});
