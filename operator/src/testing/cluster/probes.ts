/**
 * The kubelet's prober (pkg/kubelet/prober): httpGet, tcpSocket and exec probes, and a worker per
 * container and probe kind that probes every periodSeconds (none before initialDelaySeconds) and turns
 * results into a state only after successThreshold successes or failureThreshold failures in a row.
 */
import http from "node:http";
import https from "node:https";
import net from "node:net";
import type { Container, HTTPGetAction, IntOrString, Probe } from "./types.js";

export type ProbeKind = "startup" | "readiness" | "liveness";

/** A port by number, or by the name of one of the container's ports. */
export function containerPort(container: Container, port: IntOrString): number | undefined {
  if (typeof port === "number") return port;
  if (/^\d+$/.test(port)) return Number(port);
  return container.ports?.find((p) => p.name === port)?.containerPort;
}

/** One HTTP GET as the kubelet does it: no keep-alive, success on 200-399, a timeout. */
export function httpGet(action: HTTPGetAction, podIP: string, container: Container, timeoutMs: number) {
  return new Promise<{ ok: boolean; message: string }>((resolve) => {
    const port = containerPort(container, action.port);
    if (port === undefined) {
      resolve({ ok: false, message: `unknown port ${action.port}` });
      return;
    }
    const headers: Record<string, string> = { "user-agent": "kube-probe/1.35", accept: "*/*" };
    for (const h of action.httpHeaders ?? []) headers[h.name.toLowerCase()] = h.value;
    const mod = action.scheme === "HTTPS" ? https : http;
    const req = mod.request(
      {
        host: action.host ?? podIP,
        port,
        path: action.path ?? "/",
        method: "GET",
        headers,
        agent: false,
        timeout: timeoutMs,
        rejectUnauthorized: false,
      },
      (res) => {
        res.resume();
        const code = res.statusCode ?? 0;
        resolve({ ok: code >= 200 && code < 400, message: `HTTP probe failed with statuscode: ${code}` });
      },
    );
    req.on("timeout", () => req.destroy(new Error("context deadline exceeded")));
    req.on("error", (err) =>
      resolve({ ok: false, message: `Get "http://${podIP}:${port}${action.path ?? "/"}": ${err.message}` }),
    );
    req.end();
  });
}

function tcpProbe(host: string, port: number | undefined, timeoutMs: number) {
  return new Promise<{ ok: boolean; message: string }>((resolve) => {
    if (port === undefined) {
      resolve({ ok: false, message: "unknown port" });
      return;
    }
    const socket = net.connect({ host, port, timeout: timeoutMs });
    socket.on("connect", () => {
      socket.destroy();
      resolve({ ok: true, message: "" });
    });
    socket.on("timeout", () => {
      socket.destroy();
      resolve({ ok: false, message: `dial tcp ${host}:${port}: i/o timeout` });
    });
    socket.on("error", (err) => resolve({ ok: false, message: `dial tcp ${host}:${port}: ${err.message}` }));
  });
}

export interface ProbeTarget {
  podIP: string;
  container: Container;
  /** Runs an exec probe's command in the container's environment; resolves to its exit code. */
  exec: (command: string[], timeoutMs: number) => Promise<number>;
}

export async function runProbe(probe: Probe, target: ProbeTarget): Promise<{ ok: boolean; message: string }> {
  const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
  if (probe.httpGet) return httpGet(probe.httpGet, target.podIP, target.container, timeoutMs);
  if (probe.tcpSocket) {
    const port = containerPort(target.container, probe.tcpSocket.port);
    return tcpProbe(probe.tcpSocket.host ?? target.podIP, port, timeoutMs);
  }
  if (probe.exec?.command?.length) {
    const code = await target.exec(probe.exec.command, timeoutMs);
    return { ok: code === 0, message: `command exited with ${code}` };
  }
  return { ok: false, message: "probe has no handler" };
}

/** Probes one container repeatedly; reports each change of state (true: passing). */
export class ProbeWorker {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private successes = 0;
  private failures = 0;
  /** Readiness starts failing (not ready), liveness passing; startup has not passed. */
  state: boolean;

  constructor(
    readonly kind: ProbeKind,
    private readonly probe: Probe,
    private readonly target: ProbeTarget,
    private readonly startedAt: number,
    private readonly onChange: (state: boolean, message: string) => void,
  ) {
    this.state = kind === "liveness";
  }

  start(): void {
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private tick(): void {
    if (this.stopped) return;
    const periodMs = (this.probe.periodSeconds ?? 10) * 1000;
    const began = Date.now();
    const next = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => this.tick(), Math.max(0, began + periodMs - Date.now()));
    };
    if (began - this.startedAt < (this.probe.initialDelaySeconds ?? 0) * 1000) {
      next();
      return;
    }
    runProbe(this.probe, this.target)
      .then(({ ok, message }) => {
        if (this.stopped) return;
        if (ok) {
          this.successes++;
          this.failures = 0;
        } else {
          this.failures++;
          this.successes = 0;
        }
        // Startup and liveness probes must have successThreshold 1 (API validation).
        const successThreshold = this.kind === "readiness" ? (this.probe.successThreshold ?? 1) : 1;
        if (!this.state && this.successes >= successThreshold) {
          this.state = true;
          this.onChange(true, "");
        } else if (this.state && this.failures >= (this.probe.failureThreshold ?? 3)) {
          this.state = false;
          this.onChange(false, message);
        } else if (!ok && this.kind === "startup" && this.failures >= (this.probe.failureThreshold ?? 3)) {
          this.onChange(false, message);
        }
        // A failed startup or liveness probe ends this container: no more probing.
        if (!this.state && this.kind !== "readiness" && this.failures >= (this.probe.failureThreshold ?? 3))
          return;
        if (this.kind === "startup" && this.state) return;
        next();
      })
      .catch(() => next());
  }
}
