import type { KubeClient } from "./client.js";
import {
  ContainerConfigError,
  containerArgv,
  containerEnv,
  type MountRewrite,
  rewriteMountPaths,
} from "./container-env.js";
import type { ImageSpec } from "./index.js";
import { ContainerProcess, type ExitInfo, runCommand, runHook } from "./pod-process.js";
import { ConditionClock, type ContainerView, type PodView, podPhase, podStatus } from "./pod-status.js";
import { mountsOf, writeVolumes } from "./pod-volumes.js";
import { ProbeWorker } from "./probes.js";
import type { Container, ContainerState, Pod, PodStatus } from "./types.js";
import { nowTimestamp } from "./util.js";

export interface PodTiming {
  /** CrashLoopBackOff: the first restart is immediate, then this, doubling up to the max (real: 10 s, 5 min). */
  crashLoopInitialMs: number;
  crashLoopMaxMs: number;
  /** Retry of what keeps a container from being created: image pull, config, volumes (real: ~10 s). */
  retryMs: number;
  /** How often Secret and ConfigMap volumes are brought up to date (real: about a minute). */
  volumeRefreshMs: number;
}

export interface PodRuntimeOptions {
  client: KubeClient;
  images: Record<string, ImageSpec>;
  pod: Pod;
  podIP: string;
  hostIP: string;
  sandboxDir: string;
  timing: PodTiming;
  log: (line: string) => void;
  output: (chunk: string) => void;
  onChange: () => void;
}

class Slot {
  state: ContainerState;
  lastState: ContainerState = {};
  restartCount = 0;
  ready = false;
  started = false;
  proc: ContainerProcess | undefined;
  probes: ProbeWorker[] = [];
  backoffMs = 0;
  stopping: Promise<void> | undefined;
  env: Record<string, string> = {};
  constructor(
    readonly spec: Container,
    readonly init: boolean,
    waitingReason: string,
  ) {
    this.state = { waiting: { reason: waitingReason } };
  }
}

const ts = (ms: number) => nowTimestamp(ms);

export class PodRuntime {
  private readonly initSlots: Slot[];
  private readonly slots: Slot[];
  private readonly abort = new AbortController();
  private terminating = false;
  private initDone: boolean;
  private terminalPhase: "Succeeded" | "Failed" | undefined;
  private sandboxReady = false;
  private readonly startedAt = Date.now();
  private readonly clock = new ConditionClock();
  private running: Promise<void> = Promise.resolve();
  private deadlineTimer: NodeJS.Timeout | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private statusReason: { reason: string; message: string } | undefined;

  constructor(private readonly o: PodRuntimeOptions) {
    const spec = o.pod.spec;
    this.initSlots = (spec.initContainers ?? []).map((c) => new Slot(c, true, "PodInitializing"));
    this.initDone = this.initSlots.length === 0;
    this.slots = spec.containers.map(
      (c) => new Slot(c, false, this.initDone ? "ContainerCreating" : "PodInitializing"),
    );
  }

  private get pod(): Pod {
    return this.o.pod;
  }

  start(): void {
    this.running = this.run().catch((err) =>
      this.o.log(`kubelet: pod ${this.name}: ${(err as Error).stack ?? err}`),
    );
    const deadline = this.pod.spec.activeDeadlineSeconds;
    if (deadline !== undefined) {
      this.deadlineTimer = setTimeout(() => {
        this.statusReason = {
          reason: "DeadlineExceeded",
          message: "Pod was active on the node longer than the specified deadline",
        };
        this.terminalPhase = "Failed";
        this.terminate(this.pod.spec.terminationGracePeriodSeconds ?? 30).catch((err) =>
          this.o.log(String(err)),
        );
      }, deadline * 1000);
    }
  }

  get name(): string {
    return `${this.pod.metadata.namespace}/${this.pod.metadata.name}`;
  }

  /** No process left and none to come: the pod is finished (terminal) or terminated. */
  get finished(): boolean {
    return (
      this.terminalPhase !== undefined && [...this.initSlots, ...this.slots].every((s) => !s.proc?.running)
    );
  }

  private changed(): void {
    this.o.onChange();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.abort.signal;
      if (signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  private async run(): Promise<void> {
    while (!this.terminating) {
      try {
        await writeVolumes(this.o.client, this.pod, this.o.sandboxDir);
        break;
      } catch (err) {
        this.o.log(`kubelet: pod ${this.name}: ${(err as Error).message}`);
        await this.sleep(this.o.timing.retryMs);
      }
    }
    if (this.terminating) return;
    this.sandboxReady = true;
    this.changed();
    if ((this.pod.spec.volumes ?? []).some((v) => v.secret || v.configMap)) {
      this.refreshTimer = setInterval(() => {
        writeVolumes(this.o.client, this.pod, this.o.sandboxDir).catch(() => {});
      }, this.o.timing.volumeRefreshMs);
    }
    for (const slot of this.initSlots) {
      if (!(await this.runContainer(slot))) {
        if (!this.terminating) this.checkTerminal();
        return;
      }
    }
    this.initDone = true;
    for (const slot of this.slots)
      if (slot.state.waiting?.reason === "PodInitializing")
        slot.state = { waiting: { reason: "ContainerCreating" } };
    this.changed();
    await Promise.all(this.slots.map((slot) => this.runContainer(slot)));
    if (!this.terminating) this.checkTerminal();
  }

  /** Runs a container until it is done for good; true if it completed successfully. */
  private async runContainer(slot: Slot): Promise<boolean> {
    const { spec } = slot;
    const policy = this.pod.spec.restartPolicy ?? "Always";
    let ranBefore = false;
    while (!this.terminating) {
      const imageName = spec.image ?? "";
      const image = this.o.images[imageName];
      if (!image) {
        const detail = `image "${imageName}" is not among the fake cluster's images`;
        slot.state = {
          waiting: { reason: "ErrImagePull", message: `failed to pull and unpack image: ${detail}` },
        };
        this.changed();
        await this.sleep(Math.min(1000, this.o.timing.retryMs));
        if (this.terminating || this.o.images[imageName]) continue;
        slot.state = {
          waiting: { reason: "ImagePullBackOff", message: `Back-off pulling image "${imageName}"` },
        };
        this.changed();
        await this.sleep(this.o.timing.retryMs);
        continue;
      }
      const mounts = mountsOf(this.o.sandboxDir, spec);
      let argv: string[];
      try {
        const ctx = {
          client: this.o.client,
          pod: this.pod,
          podIP: this.o.podIP,
          hostIP: this.o.hostIP,
          mounts,
        };
        slot.env = {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOSTNAME: this.pod.metadata.name ?? "",
          ...(await containerEnv(ctx, spec, image)),
        };
        argv = containerArgv(spec, image, slot.env, mounts);
      } catch (err) {
        if (!(err instanceof ContainerConfigError)) throw err;
        slot.state = { waiting: { reason: "CreateContainerConfigError", message: err.message } };
        this.changed();
        await this.sleep(this.o.timing.retryMs);
        continue;
      }
      if (this.terminating) break;
      if (ranBefore) slot.restartCount++;
      ranBefore = true;
      const exit = await this.startProcess(slot, argv, mounts);
      if (exit.exitCode === 0 && slot.init) return true;
      if (this.terminating) break;
      const restart =
        policy === "Always" ||
        (policy === "OnFailure" && exit.exitCode !== 0) ||
        (slot.init && policy !== "Never");
      if (!restart) return exit.exitCode === 0;
      // CrashLoopBackOff: immediate first restart, then a doubling wait; a long run resets it.
      const { crashLoopInitialMs, crashLoopMaxMs } = this.o.timing;
      if (exit.finishedAt - exit.startedAt > 2 * crashLoopMaxMs) slot.backoffMs = 0;
      slot.lastState = slot.state;
      if (slot.backoffMs > 0) {
        const pod = `${this.pod.metadata.name}_${this.pod.metadata.namespace}(${this.pod.metadata.uid})`;
        const message = `back-off ${Math.round(slot.backoffMs / 1000)}s restarting failed container=${spec.name} pod=${pod}`;
        slot.state = { waiting: { reason: "CrashLoopBackOff", message } };
        this.changed();
        await this.sleep(slot.backoffMs);
        slot.backoffMs = Math.min(slot.backoffMs * 2, crashLoopMaxMs);
      } else {
        slot.backoffMs = crashLoopInitialMs;
      }
    }
    return false;
  }

  private startProcess(slot: Slot, argv: string[], mounts: MountRewrite[]): Promise<ExitInfo> {
    const { spec } = slot;
    const cwd = spec.workingDir ? rewriteMountPaths(spec.workingDir, mounts) : this.o.sandboxDir;
    const proc = new ContainerProcess({ argv, env: slot.env, cwd, output: this.o.output });
    slot.proc = proc;
    slot.state = { running: { startedAt: ts(proc.startedAt) } };
    slot.ready = false;
    slot.started = false;
    const target = {
      podIP: this.o.podIP,
      container: spec,
      exec: (command: string[], timeoutMs: number) =>
        runCommand(
          { argv: command.map((c) => rewriteMountPaths(c, mounts)), env: slot.env, cwd, output: () => {} },
          timeoutMs,
        ),
    };
    const startOthers = () => {
      slot.started = true;
      if (spec.readinessProbe) {
        const worker = new ProbeWorker("readiness", spec.readinessProbe, target, proc.startedAt, (ok) => {
          slot.ready = ok;
          this.changed();
        });
        slot.probes.push(worker);
        worker.start();
      } else {
        slot.ready = !slot.init;
      }
      if (spec.livenessProbe && !this.terminating) {
        const probe = spec.livenessProbe;
        const worker = new ProbeWorker("liveness", probe, target, proc.startedAt, (ok, message) => {
          if (ok) return;
          this.o.log(`kubelet: ${this.name}/${spec.name}: liveness probe failed (${message}), restarting`);
          void this.stopSlot(slot, (probe.terminationGracePeriodSeconds ?? this.graceSeconds) * 1000, true);
        });
        slot.probes.push(worker);
        worker.start();
      }
      this.changed();
    };
    if (spec.startupProbe && !slot.init) {
      const probe = spec.startupProbe;
      const worker = new ProbeWorker("startup", probe, target, proc.startedAt, (ok, message) => {
        if (ok) startOthers();
        else {
          this.o.log(`kubelet: ${this.name}/${spec.name}: startup probe failed (${message}), restarting`);
          void this.stopSlot(slot, (probe.terminationGracePeriodSeconds ?? this.graceSeconds) * 1000, true);
        }
      });
      slot.probes.push(worker);
      worker.start();
    } else if (!slot.init) startOthers();
    this.changed();
    return proc.exited.then((exit) => {
      for (const p of slot.probes.splice(0)) p.stop();
      slot.ready = false;
      slot.started = false;
      const terminated: NonNullable<ContainerState["terminated"]> = {
        exitCode: exit.exitCode,
        reason: exit.reason,
        startedAt: ts(exit.startedAt),
        finishedAt: ts(exit.finishedAt),
        containerID: proc.containerID,
      };
      if (exit.signal !== undefined) terminated.signal = exit.signal;
      if (exit.message) terminated.message = exit.message;
      slot.state = { terminated };
      this.changed();
      return exit;
    });
  }

  private get graceSeconds(): number {
    return this.pod.spec.terminationGracePeriodSeconds ?? 30;
  }

  /** preStop (within the grace period), then SIGTERM, then SIGKILL when the rest of the grace (at least 2 s) is up. */
  private stopSlot(slot: Slot, graceMs: number, hooks: boolean): Promise<void> {
    const proc = slot.proc;
    if (!proc?.running) return Promise.resolve();
    if (slot.stopping) return slot.stopping;
    slot.stopping = (async () => {
      const began = Date.now();
      const preStop = slot.spec.lifecycle?.preStop;
      if (hooks && preStop) {
        const cwd = this.o.sandboxDir;
        const hook = runHook(
          preStop,
          slot.spec,
          this.o.podIP,
          { env: slot.env, cwd, output: this.o.output },
          graceMs,
        );
        await Promise.race([hook.catch(() => {}), new Promise((r) => setTimeout(r, graceMs)), proc.exited]);
      }
      await proc.stop(Math.max(2000, graceMs - (Date.now() - began)));
    })().finally(() => {
      slot.stopping = undefined;
    });
    return slot.stopping;
  }

  /** Pod deletion: every container stopped with the grace period; the final phase is Succeeded or Failed. */
  async terminate(graceSeconds: number): Promise<void> {
    this.beginTermination();
    const all = [...this.initSlots, ...this.slots];
    await Promise.all(all.map((s) => this.stopSlot(s, graceSeconds * 1000, true)));
    await this.running;
    this.finishTermination();
  }

  /** The cluster is closing: SIGTERM, and SIGKILL after graceMs; no hooks, no grace beyond that. */
  async shutdown(graceMs: number): Promise<void> {
    this.beginTermination();
    await Promise.all([...this.initSlots, ...this.slots].map((s) => s.proc?.stop(graceMs)));
    await this.running;
  }

  private beginTermination(): void {
    this.terminating = true;
    this.abort.abort();
    clearTimeout(this.deadlineTimer);
    clearInterval(this.refreshTimer);
    for (const slot of [...this.initSlots, ...this.slots]) {
      // Readiness goes on being probed while the pod terminates; the others stop.
      for (const p of slot.probes.filter((w) => w.kind !== "readiness")) p.stop();
    }
  }

  private finishTermination(): void {
    for (const slot of [...this.initSlots, ...this.slots]) {
      if (!slot.state.terminated) {
        const message = "The container could not be located when the pod was terminated";
        slot.state = { terminated: { exitCode: 137, reason: "ContainerStatusUnknown", message } };
      }
    }
    if (!this.terminalPhase) {
      this.terminalPhase = this.slots.every((s) => s.state.terminated?.exitCode === 0)
        ? "Succeeded"
        : "Failed";
    }
    this.sandboxReady = false;
    this.changed();
  }

  /** A pod that will run nothing more (restartPolicy) is terminal: Succeeded or Failed. */
  private checkTerminal(): void {
    const phase = podPhase(this.view());
    if (phase === "Succeeded" || phase === "Failed") {
      this.terminalPhase = phase;
      this.sandboxReady = false;
      clearInterval(this.refreshTimer);
      this.changed();
    }
  }

  private view(): PodView {
    const container = (slot: Slot): ContainerView => ({ ...slot, containerID: slot.proc?.containerID });
    return {
      pod: this.pod,
      initContainers: this.initSlots.map(container),
      containers: this.slots.map(container),
      initDone: this.initDone,
      terminalPhase: this.terminalPhase,
      sandboxReady: this.sandboxReady,
      podIP: this.o.podIP,
      hostIP: this.o.hostIP,
      startTime: ts(this.startedAt),
      hasImage: (image) => this.o.images[image] !== undefined,
      reason: this.statusReason,
    };
  }

  /** The status to report; `foreign` are the conditions others own (readiness gates). */
  status(foreign: { type: string; status: string }[] = []): PodStatus {
    return podStatus(this.view(), this.clock, foreign);
  }
}
