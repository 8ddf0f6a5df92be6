/**
 * The pod status the kubelet reports, computed from what its containers are doing: getPhase
 * (pkg/kubelet/kubelet_pods.go), the conditions of pkg/kubelet/status/generate.go, and the container
 * statuses. Pure functions over a view of the containers, so that pod-runtime.ts only keeps state.
 */
import type { Container, ContainerState, ContainerStatus, Pod, PodStatus } from "./types.js";
import { nowTimestamp } from "./util.js";

export interface ContainerView {
  spec: Container;
  state: ContainerState;
  lastState: ContainerState;
  restartCount: number;
  ready: boolean;
  started: boolean;
  containerID: string | undefined;
}

export interface PodView {
  pod: Pod;
  initContainers: ContainerView[];
  containers: ContainerView[];
  initDone: boolean;
  terminalPhase: "Succeeded" | "Failed" | undefined;
  sandboxReady: boolean;
  podIP: string;
  hostIP: string;
  startTime: string;
  /** Whether an image is known, for imageID. */
  hasImage: (image: string) => boolean;
  /** reason/message of the pod itself (DeadlineExceeded). */
  reason?: { reason: string; message: string } | undefined;
}

/** getPhase: init containers first; then waiting → Pending, running → Running, all stopped → by restartPolicy. */
export function podPhase(v: PodView): NonNullable<PodStatus["phase"]> {
  if (v.terminalPhase) return v.terminalPhase;
  const policy = v.pod.spec.restartPolicy ?? "Always";
  if (!v.initDone) {
    const failedInit = v.initContainers.some((s) => (s.state.terminated?.exitCode ?? 0) !== 0);
    return failedInit && policy === "Never" ? "Failed" : "Pending";
  }
  let running = 0;
  let waiting = 0;
  let stopped = 0;
  let succeeded = 0;
  for (const s of v.containers) {
    if (s.state.running) running++;
    else if (s.state.terminated) {
      stopped++;
      if (s.state.terminated.exitCode === 0) succeeded++;
    } else if (s.lastState.terminated) stopped++;
    else waiting++;
  }
  if (waiting > 0) return "Pending";
  if (running > 0) return "Running";
  if (stopped > 0) {
    if (policy === "Always") return "Running";
    if (stopped === succeeded) return "Succeeded";
    return policy === "Never" ? "Failed" : "Running";
  }
  return "Pending";
}

function containerStatus(c: ContainerView, v: PodView): ContainerStatus {
  const image = c.spec.image ?? "";
  const status: ContainerStatus = {
    name: c.spec.name,
    image,
    imageID: v.hasImage(image) ? `fake.local/${image}` : "",
    ready: c.ready,
    started: c.started,
    restartCount: c.restartCount,
    state: c.state,
    lastState: c.lastState,
  };
  if (c.containerID && (c.state.running || c.state.terminated)) status.containerID = c.containerID;
  return status;
}

/** Remembers when each condition last changed status, for lastTransitionTime. */
export class ConditionClock {
  private readonly transitions = new Map<string, { status: string; time: string }>();

  condition(type: string, ok: boolean, reason?: string, message?: string) {
    const status = ok ? "True" : "False";
    let seen = this.transitions.get(type);
    if (seen?.status !== status) {
      seen = { status, time: nowTimestamp() };
      this.transitions.set(type, seen);
    }
    return {
      type,
      status,
      lastProbeTime: null,
      lastTransitionTime: seen.time,
      ...(ok || !reason ? {} : { reason, message }),
    } as const;
  }
}

/** The status; `foreign` are conditions others own (readiness gates), which decide Ready too. */
export function podStatus(
  v: PodView,
  clock: ConditionClock,
  foreign: { type: string; status: string }[],
): PodStatus {
  const phase = podPhase(v);
  const terminal = phase === "Succeeded" || phase === "Failed";
  const unready = v.containers.filter((s) => !s.ready).map((s) => s.spec.name);
  const incompleteInit = v.initDone ? [] : v.initContainers.filter((s) => s.state.terminated?.exitCode !== 0);
  const reason = phase === "Succeeded" ? "PodCompleted" : "ContainersNotReady";
  const unreadyMessage = `containers with unready status: [${unready.join(" ")}]`;
  const gates = (v.pod.spec.readinessGates ?? []).filter(
    (g) => !foreign.some((c) => c.type === g.conditionType && c.status === "True"),
  );
  const gateMessage = `the status of pod readiness gate "${gates[0]?.conditionType}" is not "True", but False`;
  const status: PodStatus = {
    phase,
    conditions: [
      clock.condition("PodReadyToStartContainers", v.sandboxReady && !terminal),
      clock.condition(
        "Initialized",
        v.initDone,
        "ContainersNotInitialized",
        `containers with incomplete status: [${incompleteInit.map((s) => s.spec.name).join(" ")}]`,
      ),
      clock.condition(
        "Ready",
        unready.length === 0 && gates.length === 0,
        unready.length ? reason : "ReadinessGatesNotReady",
        unready.length ? unreadyMessage : gateMessage,
      ),
      clock.condition("ContainersReady", unready.length === 0, reason, unreadyMessage),
      clock.condition("PodScheduled", true),
    ],
    hostIP: v.hostIP,
    hostIPs: [{ ip: v.hostIP }],
    podIP: v.podIP,
    podIPs: [{ ip: v.podIP }],
    startTime: v.startTime,
    containerStatuses: v.containers.map((c) => containerStatus(c, v)),
  };
  if (v.initContainers.length)
    status.initContainerStatuses = v.initContainers.map((c) => containerStatus(c, v));
  if (v.reason) Object.assign(status, v.reason);
  return status;
}
