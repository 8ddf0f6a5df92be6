/**
 * The fake node: a scheduler that binds every pending pod to it, and a kubelet that runs the pods bound
 * to it (pod-runtime.ts), reports their status (a merge patch on pods/status, as the kubelet's status
 * manager patches), and finishes their graceful deletion: when a pod gets a deletionTimestamp its
 * containers get preStop, SIGTERM and SIGKILL within deletionGracePeriodSeconds, and then the kubelet
 * deletes the pod object with gracePeriodSeconds 0.
 *
 * Each pod gets its own loopback address 127.0.0.N (Linux routes all of 127/8 to lo), so pods can
 * listen on the same port as in a real cluster. An address is claimed by listening on it at
 * RESERVATION_PORT, so that fake clusters in other processes on this machine never hand out the same one.
 */
import { mkdir } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { isConflict, isNotFound, type KubeClient, PODS, resourcePath } from "./client.js";
import type { ImageSpec } from "./index.js";
import { Informer } from "./informer.js";
import { PodRuntime, type PodTiming } from "./pod-runtime.js";
import type { Pod, PodStatus } from "./types.js";
import { deepEqual, errorMessage } from "./util.js";

export const NODE_NAME = "fake-node";
export const HOST_IP = "127.0.0.1";
const RESERVATION_PORT = 65535;
/** Condition types the kubelet writes; others (readiness gates, DisruptionTarget) are kept as found. */
const KUBELET_CONDITIONS = new Set([
  "PodReadyToStartContainers",
  "Initialized",
  "Ready",
  "ContainersReady",
  "PodScheduled",
]);
const MAX_LOG_CHARS = 4 * 1024 * 1024;

/** Hands out 127.0.0.2-254, round robin, each held by a listener while a pod uses it. */
export class PodIpAllocator {
  private next = 2;
  private readonly held = new Map<string, net.Server>();

  async allocate(): Promise<string> {
    for (let i = 0; i < 253; i++) {
      const n = this.next;
      this.next = n >= 254 ? 2 : n + 1;
      const ip = `127.0.0.${n}`;
      if (this.held.has(ip)) continue;
      const server = await new Promise<net.Server | undefined>((resolve, reject) => {
        const s = net.createServer();
        s.once("error", (err: NodeJS.ErrnoException) =>
          err.code === "EADDRINUSE" ? resolve(undefined) : reject(err),
        );
        s.listen({ host: ip, port: RESERVATION_PORT, exclusive: true }, () => resolve(s));
      });
      if (!server) continue;
      server.unref();
      this.held.set(ip, server);
      return ip;
    }
    throw new Error("no free pod IP left in 127.0.0.2-127.0.0.254");
  }

  release(ip: string): void {
    this.held.get(ip)?.close();
    this.held.delete(ip);
  }

  releaseAll(): void {
    for (const ip of [...this.held.keys()]) this.release(ip);
  }
}

interface PodEntry {
  pod: Pod;
  runtime: PodRuntime;
  ip: string;
  ipReleased: boolean;
  /** The pod object is gone from the API server: nothing more is written. */
  gone: boolean;
  terminating: Promise<void> | undefined;
  lastWritten: PodStatus | undefined;
  writes: Promise<void>;
  writeTimer: NodeJS.Timeout | undefined;
}

export interface KubeletOptions {
  client: KubeClient;
  images: Record<string, ImageSpec>;
  workDir: string;
  timing: PodTiming;
  log: (line: string) => void;
}

export class Kubelet {
  private readonly pods: Informer<Pod>;
  private readonly entries = new Map<string, PodEntry>();
  private readonly starting = new Set<string>();
  private readonly binding = new Set<string>();
  private readonly logs = new Map<string, string>();
  private readonly ips = new PodIpAllocator();
  private closed = false;

  constructor(private readonly o: KubeletOptions) {
    this.pods = new Informer<Pod>(o.client, PODS, o.log);
    this.pods.onEvent((event, pod) => this.handle(event, pod));
  }

  async start(): Promise<void> {
    await this.pods.start();
  }

  podLog(namespace: string, name: string): string {
    return this.logs.get(`${namespace}/${name}`) ?? "";
  }

  private handle(event: "add" | "update" | "delete", pod: Pod): void {
    if (this.closed) return;
    const uid = pod.metadata.uid ?? "";
    if (event === "delete") {
      const entry = this.entries.get(uid);
      if (entry) {
        entry.gone = true;
        this.terminate(entry, pod);
      }
      return;
    }
    if (!pod.spec.nodeName) {
      const scheduler = (pod.spec as { schedulerName?: string }).schedulerName;
      if (!pod.metadata.deletionTimestamp && (!scheduler || scheduler === "default-scheduler"))
        void this.bind(pod);
      return;
    }
    if (pod.spec.nodeName !== NODE_NAME) return;
    const entry = this.entries.get(uid);
    if (entry) {
      entry.pod = pod;
      if (pod.metadata.deletionTimestamp) this.terminate(entry, pod);
      return;
    }
    if (this.starting.has(uid)) return;
    const phase = pod.status?.phase;
    if (pod.metadata.deletionTimestamp) {
      // Nothing of it runs here (finished before, or never started): confirm the deletion at once.
      this.confirmDeletion(pod).catch((err) =>
        this.o.log(`kubelet: deleting ${pod.metadata.name}: ${errorMessage(err)}`),
      );
    } else if (phase !== "Succeeded" && phase !== "Failed") {
      void this.startPod(pod);
    }
  }

  /** The scheduler's part: bind to the one node with pods/binding (spec.nodeName cannot be updated). */
  private async bind(pod: Pod): Promise<void> {
    const uid = pod.metadata.uid ?? "";
    if (this.binding.has(uid)) return;
    this.binding.add(uid);
    const namespace = pod.metadata.namespace ?? "";
    const name = pod.metadata.name ?? "";
    try {
      const binding = {
        apiVersion: "v1",
        kind: "Binding",
        metadata: { name, namespace, uid },
        target: { apiVersion: "v1", kind: "Node", name: NODE_NAME },
      };
      await this.o.client.request("POST", resourcePath(PODS, namespace, name, "binding"), binding);
    } catch (err) {
      if (!isNotFound(err) && !isConflict(err))
        this.o.log(`scheduler: binding ${namespace}/${name}: ${errorMessage(err)}`);
      setTimeout(() => {
        this.binding.delete(uid);
        const current = this.pods.get(namespace, name);
        if (current && !current.spec.nodeName && current.metadata.uid === uid) void this.bind(current);
      }, 500).unref();
      return;
    }
    this.binding.delete(uid);
  }

  private async startPod(pod: Pod): Promise<void> {
    const uid = pod.metadata.uid ?? "";
    this.starting.add(uid);
    try {
      const ip = pod.spec.hostNetwork ? HOST_IP : await this.ips.allocate();
      const key = `${pod.metadata.namespace}/${pod.metadata.name}`;
      const sandboxDir = path.join(
        this.o.workDir,
        "pods",
        `${pod.metadata.namespace}_${pod.metadata.name}_${uid}`,
      );
      await mkdir(sandboxDir, { recursive: true });
      this.logs.set(key, "");
      const latest = this.pods.get(pod.metadata.namespace ?? "", pod.metadata.name ?? "") ?? pod;
      const entry: PodEntry = {
        pod: latest.metadata.uid === uid ? latest : pod,
        ip,
        ipReleased: pod.spec.hostNetwork === true,
        gone: false,
        terminating: undefined,
        lastWritten: undefined,
        writes: Promise.resolve(),
        writeTimer: undefined,
        runtime: new PodRuntime({
          client: this.o.client,
          images: this.o.images,
          pod,
          podIP: ip,
          hostIP: HOST_IP,
          sandboxDir,
          timing: this.o.timing,
          log: this.o.log,
          output: (chunk) => {
            const text = (this.logs.get(key) ?? "") + chunk;
            this.logs.set(key, text.length > MAX_LOG_CHARS ? text.slice(-MAX_LOG_CHARS) : text);
          },
          onChange: () => this.changed(entry),
        }),
      };
      this.entries.set(uid, entry);
      this.o.log(`kubelet: starting ${key} on ${ip}`);
      entry.runtime.start();
      this.changed(entry);
      // Deleted, or marked for deletion, while it was being set up.
      if (
        latest.metadata.uid !== uid ||
        !this.pods.get(pod.metadata.namespace ?? "", pod.metadata.name ?? "")
      ) {
        entry.gone = true;
        this.terminate(entry, pod);
      } else if (entry.pod.metadata.deletionTimestamp) this.terminate(entry, entry.pod);
    } catch (err) {
      this.o.log(
        `kubelet: cannot start ${pod.metadata.namespace}/${pod.metadata.name}: ${errorMessage(err)}`,
      );
    } finally {
      this.starting.delete(uid);
    }
  }

  private changed(entry: PodEntry): void {
    if (entry.runtime.finished && !entry.ipReleased) {
      entry.ipReleased = true;
      this.ips.release(entry.ip);
    }
    if (entry.writeTimer || entry.gone || this.closed) return;
    entry.writeTimer = setTimeout(() => {
      entry.writeTimer = undefined;
      void this.writeStatus(entry);
    }, 10);
  }

  /** Writes the pod's status if it changed; writes are serialized per pod. */
  private writeStatus(entry: PodEntry): Promise<void> {
    entry.writes = entry.writes
      .then(() => this.writeOnce(entry))
      .catch((err) => this.o.log(`kubelet: ${errorMessage(err)}`));
    return entry.writes;
  }

  private async writeOnce(entry: PodEntry): Promise<void> {
    if (entry.gone || this.closed) return;
    const foreign = (entry.pod.status?.conditions ?? []).filter((c) => !KUBELET_CONDITIONS.has(c.type));
    const status = entry.runtime.status(foreign);
    status.conditions = [...(status.conditions ?? []), ...foreign];
    if (deepEqual(status, entry.lastWritten)) return;
    const { namespace = "", name = "" } = entry.pod.metadata;
    try {
      await this.o.client.mergePatch(PODS, namespace, name, { status }, "status");
      entry.lastWritten = status;
    } catch (err) {
      if (isNotFound(err)) {
        entry.gone = true;
        return;
      }
      this.o.log(`kubelet: status of ${namespace}/${name}: ${errorMessage(err)}`);
      setTimeout(() => this.changed(entry), 500).unref();
    }
  }

  /** Graceful deletion: stop the containers, report the final status, and remove the pod object. */
  private terminate(entry: PodEntry, pod: Pod): void {
    if (entry.terminating) return;
    const grace = pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
    const key = `${pod.metadata.namespace}/${pod.metadata.name}`;
    this.o.log(`kubelet: terminating ${key} (grace ${grace}s${entry.gone ? ", already deleted" : ""})`);
    entry.terminating = (async () => {
      await entry.runtime.terminate(grace);
      clearTimeout(entry.writeTimer);
      entry.writeTimer = undefined;
      await this.writeStatus(entry);
      this.changed(entry);
      if (!entry.gone && !this.closed) await this.confirmDeletion(entry.pod);
      this.entries.delete(pod.metadata.uid ?? "");
    })().catch((err) => this.o.log(`kubelet: terminating ${key}: ${errorMessage(err)}`));
  }

  /** What the kubelet does last: delete with gracePeriodSeconds 0 (and the uid as a precondition). */
  private async confirmDeletion(pod: Pod): Promise<void> {
    const { namespace = "", name = "", uid = "" } = pod.metadata;
    try {
      await this.o.client.delete(PODS, namespace, name, { gracePeriodSeconds: 0, uid });
      this.o.log(`kubelet: deleted ${namespace}/${name}`);
    } catch (err) {
      if (!isNotFound(err) && !isConflict(err)) throw err;
    }
  }

  async close(graceMs: number): Promise<void> {
    this.closed = true;
    await this.pods.stop();
    await Promise.all([...this.entries.values()].map((e) => e.runtime.shutdown(graceMs)));
    for (const e of this.entries.values()) clearTimeout(e.writeTimer);
    this.ips.releaseAll();
  }
}
