/**
 * The Job controller (pkg/controller/job), for NonIndexed jobs: runs `parallelism` pods at a time until
 * `completions` succeed; a failed pod (restartPolicy Never) or a container restart (OnFailure) counts
 * towards backoffLimit, with a growing delay before the next pod; activeDeadlineSeconds bounds the
 * whole job. As since Kubernetes 1.31, the terminal condition (Complete / Failed) follows an interim
 * one (SuccessCriteriaMet / FailureTarget) once the job's remaining pods are gone.
 *
 * Unlike the real controller, finished pods are counted from the pods that exist, without the
 * `batch.kubernetes.io/job-tracking` finalizer: deleting a finished pod by hand un-counts it.
 */
import { isConflict, isNotFound, JOBS, type KubeClient, PODS } from "./client.js";
import { Controller } from "./controller-base.js";
import { Expectations } from "./expectations.js";
import type { InformerFactory } from "./informer.js";
import { podFromTemplate } from "./replicaset-controller.js";
import type { Condition, Job, Pod } from "./types.js";
import {
  compareForDeletion,
  controllerRef,
  deepEqual,
  isPodActive,
  isPodReady,
  nowTimestamp,
  parseTime,
} from "./util.js";
import type { SyncResult } from "./workqueue.js";

export interface JobControllerOptions {
  /** Delay before the pod after the n-th failure: base * 2^(n-1), capped (real: 10 s, 6 min). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
}

const jobCondition = (type: string, reason: string, message: string): Condition => {
  const now = nowTimestamp();
  return { type, status: "True", lastProbeTime: now, lastTransitionTime: now, reason, message };
};

const hasCondition = (job: Job, type: string) =>
  job.status?.conditions?.some((c) => c.type === type && c.status === "True") ?? false;

export class JobController extends Controller<Job> {
  private readonly expectations = new Expectations();
  private readonly pods = this.informers.get<Pod>(PODS);
  /** Failures seen per job uid and when the last new one was seen, for the pod backoff. */
  private readonly failuresSeen = new Map<string, { count: number; at: number }>();
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;

  constructor(
    informers: InformerFactory,
    client: KubeClient,
    log: (line: string) => void,
    options: JobControllerOptions = {},
  ) {
    super("job-controller", JOBS, informers, client, log);
    this.backoffBaseMs = options.backoffBaseMs ?? 200;
    this.backoffMaxMs = options.backoffMaxMs ?? 2000;
    this.watchOwnedPods(this.pods, "Job", this.expectations);
  }

  protected async sync(key: string): Promise<SyncResult> {
    const [namespace = "", name = ""] = key.split("/");
    const job = this.primary.get(namespace, name);
    if (!job) {
      this.expectations.forget(key);
      return undefined;
    }
    if (hasCondition(job, "Complete") || hasCondition(job, "Failed")) return undefined;
    if (!this.expectations.satisfied(key)) return { requeueAfterMs: 1000 };

    const uid = job.metadata.uid ?? "";
    const pods = this.pods.list(namespace).filter((p) => controllerRef(p)?.uid === uid);
    const active = pods.filter(isPodActive);
    const terminating = pods.filter(
      (p) => p.metadata.deletionTimestamp && p.status?.phase !== "Succeeded" && p.status?.phase !== "Failed",
    );
    const succeeded = pods.filter((p) => p.status?.phase === "Succeeded").length;
    const failed = pods.filter((p) => p.status?.phase === "Failed").length;
    const now = Date.now();
    const status = { ...(job.status ?? {}) };
    let conditions = [...(status.conditions ?? [])];
    const suspended = job.spec.suspend === true;
    if (!status.startTime && !suspended) status.startTime = nowTimestamp(now);

    const backoffLimit = job.spec.backoffLimit ?? 6;
    const onFailureRestarts =
      job.spec.template.spec.restartPolicy === "OnFailure"
        ? active.reduce(
            (n, p) => n + (p.status?.containerStatuses ?? []).reduce((m, c) => m + c.restartCount, 0),
            0,
          )
        : 0;
    const startedAt = parseTime(status.startTime);
    const deadline =
      job.spec.activeDeadlineSeconds !== undefined && startedAt !== undefined
        ? startedAt + job.spec.activeDeadlineSeconds * 1000
        : undefined;

    let failure: Condition | undefined = conditions.find(
      (c) => c.type === "FailureTarget" && c.status === "True",
    );
    if (!failure && (failed > backoffLimit || (onFailureRestarts > 0 && onFailureRestarts >= backoffLimit))) {
      failure = jobCondition(
        "FailureTarget",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
      );
    } else if (!failure && deadline !== undefined && now >= deadline) {
      failure = jobCondition(
        "FailureTarget",
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
      );
    }
    const completions = job.spec.completions;
    const complete = completions == null ? succeeded > 0 && active.length === 0 : succeeded >= completions;

    let requeue: SyncResult;
    if (failure) {
      if (!conditions.some((c) => c.type === "FailureTarget")) conditions.push(failure);
      await this.deletePods(key, active);
      if (active.length === 0 && terminating.length === 0) {
        conditions.push({
          ...failure,
          type: "Failed",
          lastProbeTime: nowTimestamp(),
          lastTransitionTime: nowTimestamp(),
        });
      }
    } else if (complete && !suspended) {
      const reason = "CompletionsReached";
      const message = "Reached expected number of succeeded pods";
      if (!conditions.some((c) => c.type === "SuccessCriteriaMet")) {
        conditions.push(jobCondition("SuccessCriteriaMet", reason, message));
      }
      await this.deletePods(key, active);
      if (active.length === 0 && terminating.length === 0) {
        conditions.push(jobCondition("Complete", reason, message));
        status.completionTime = nowTimestamp();
      }
    } else if (suspended) {
      await this.deletePods(key, active);
      if (!hasCondition(job, "Suspended")) {
        conditions = conditions.filter((c) => c.type !== "Suspended");
        conditions.push(jobCondition("Suspended", "JobSuspended", "Job suspended"));
      }
    } else {
      conditions = conditions.filter((c) => c.type !== "Suspended");
      requeue = await this.managePods(key, job, active, succeeded, failed);
      if (deadline !== undefined) {
        const untilDeadline = { requeueAfterMs: Math.max(10, deadline - now + 10) };
        if (!requeue || requeue.requeueAfterMs > untilDeadline.requeueAfterMs) requeue = untilDeadline;
      }
    }

    const next: NonNullable<Job["status"]> = { ...status, conditions };
    for (const [field, value] of [
      ["active", failure || complete ? 0 : active.length],
      ["succeeded", succeeded],
      ["failed", failed],
    ] as const) {
      if (value === 0) delete next[field];
      else next[field] = value;
    }
    next.ready = active.filter(isPodReady).length;
    if (next.conditions?.length === 0) delete next.conditions;
    if (!deepEqual(next, job.status ?? {})) {
      try {
        await this.client.update(JOBS, { ...job, status: next }, "status");
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    return requeue;
  }

  /** Creates or deletes pods to run min(parallelism, completions - succeeded) at once. */
  private async managePods(key: string, job: Job, active: Pod[], succeeded: number, failed: number) {
    const parallelism = job.spec.parallelism ?? 1;
    const completions = job.spec.completions;
    const want =
      completions == null
        ? succeeded > 0
          ? 0
          : parallelism
        : Math.max(0, Math.min(parallelism, completions - succeeded));
    if (active.length > want) {
      await this.deletePods(key, [...active].sort(compareForDeletion).slice(0, active.length - want));
      return undefined;
    }
    if (active.length === want) return undefined;

    // After a failure, the next pod waits: base * 2^(failures-1) from when the failure was seen.
    const uid = job.metadata.uid ?? "";
    const seen = this.failuresSeen.get(uid) ?? { count: 0, at: 0 };
    if (failed > seen.count) this.failuresSeen.set(uid, { count: failed, at: Date.now() });
    const last = this.failuresSeen.get(uid) ?? seen;
    if (failed > 0) {
      const delay = Math.min(this.backoffBaseMs * 2 ** (failed - 1), this.backoffMaxMs);
      const wait = last.at + delay - Date.now();
      if (wait > 0) return { requeueAfterMs: wait };
    }

    const namespace = job.metadata.namespace ?? "";
    const jobLabels = {
      "batch.kubernetes.io/controller-uid": uid,
      "batch.kubernetes.io/job-name": job.metadata.name ?? "",
      "controller-uid": uid,
      "job-name": job.metadata.name ?? "",
    };
    const pods = Array.from({ length: want - active.length }, () =>
      podFromTemplate(
        job.spec.template,
        namespace,
        `${job.metadata.name}-`,
        [job, "batch/v1", "Job"],
        jobLabels,
      ),
    );
    for (const pod of pods) this.expectations.expectCreate(key, pod.metadata.name ?? "");
    await Promise.all(
      pods.map(async (pod) => {
        try {
          await this.client.create(PODS, namespace, pod);
          this.log(`job-controller: ${key}: created pod ${pod.metadata.name}`);
        } catch (err) {
          this.expectations.createObserved(key, pod.metadata.name ?? "");
          throw err;
        }
      }),
    );
    return undefined;
  }

  private async deletePods(key: string, pods: Pod[]): Promise<void> {
    for (const pod of pods) this.expectations.expectDelete(key, pod.metadata.name ?? "");
    await Promise.all(
      pods.map(async (pod) => {
        try {
          await this.client.delete(PODS, pod.metadata.namespace ?? "", pod.metadata.name ?? "", {
            uid: pod.metadata.uid ?? "",
          });
        } catch (err) {
          this.expectations.deleteObserved(key, pod.metadata.name ?? "");
          if (!isNotFound(err) && !isConflict(err)) throw err;
        }
      }),
    );
  }
}
