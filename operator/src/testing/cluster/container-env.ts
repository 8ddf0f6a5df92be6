/**
 * What the kubelet computes before it starts a container: the environment (kubelet_pods.go
 * makeEnvironmentVariables: envFrom, then env in order, with $(VAR) expansion against what came
 * before), the command line ($(VAR) expansion with the whole environment), and, as this fake's one
 * deviation, mount paths rewritten into the pod's sandbox: containers share this machine's
 * filesystem, so a volume "mounted" at /etc/app is the directory `<sandbox>/volumes/<volume>` and every
 * `/etc/app` prefix in command, args, env values and workingDir is replaced by that directory.
 */
import os from "node:os";
import { CONFIGMAPS, isNotFound, type KubeClient, SECRETS } from "./client.js";
import type { ImageSpec } from "./index.js";
import type { ConfigMap, Container, Pod, Secret } from "./types.js";

/** A reason the container cannot be created yet (the kubelet's CreateContainerConfigError). */
export class ContainerConfigError extends Error {}

/**
 * third_party/forked/golang/expansion.Expand: `$(NAME)` becomes the value of NAME if defined and is
 * left as is otherwise; `$$` is an escaped `$`, so `$$(NAME)` gives the literal `$(NAME)`.
 */
export function expand(input: string, lookup: (name: string) => string | undefined): string {
  let out = "";
  let checkpoint = 0;
  for (let cursor = 0; cursor < input.length; cursor++) {
    if (input[cursor] !== "$" || cursor + 1 >= input.length) continue;
    out += input.slice(checkpoint, cursor);
    const next = input[cursor + 1];
    let advance = 1;
    if (next === "$") {
      out += "$";
    } else if (next === "(") {
      const close = input.indexOf(")", cursor + 2);
      if (close < 0) {
        out += "$(";
      } else {
        const name = input.slice(cursor + 2, close);
        const value = lookup(name);
        out += value === undefined ? `$(${name})` : value;
        advance = close - cursor;
      }
    } else {
      out += `$${next}`;
    }
    cursor += advance;
    checkpoint = cursor + 1;
  }
  return out + input.slice(checkpoint);
}

export interface MountRewrite {
  mountPath: string;
  hostPath: string;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Replaces each mountPath that starts a path (not inside another path) by its sandbox directory. */
export function rewriteMountPaths(value: string, mounts: MountRewrite[]): string {
  let out = value;
  for (const m of [...mounts].sort((a, b) => b.mountPath.length - a.mountPath.length)) {
    const path = m.mountPath.replace(/\/+$/, "") || "/";
    const re = new RegExp(`(^|[^A-Za-z0-9._/-])${escapeRegExp(path)}(?=$|/|[^A-Za-z0-9._-])`, "g");
    out = out.replace(re, (_all, before: string) => before + m.hostPath);
  }
  return out;
}

/** Names an environment variable may have (validation.IsEnvVarName). */
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

export interface EnvContext {
  client: KubeClient;
  pod: Pod;
  podIP: string;
  hostIP: string;
  mounts: MountRewrite[];
}

async function fetchOrUndefined<T>(get: () => Promise<T>): Promise<T | undefined> {
  try {
    return await get();
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw new ContainerConfigError((err as Error).message);
  }
}

const decode = (b64: string) => Buffer.from(b64, "base64").toString("utf8");

/** The data of a Secret (decoded) or ConfigMap, or undefined when it does not exist. */
export async function sourceData(
  client: KubeClient,
  kind: "Secret" | "ConfigMap",
  namespace: string,
  name: string,
): Promise<Record<string, string> | undefined> {
  if (kind === "Secret") {
    const secret = await fetchOrUndefined(() => client.get<Secret>(SECRETS, namespace, name));
    if (!secret) return undefined;
    const data: Record<string, string> = {};
    for (const [k, v] of Object.entries(secret.data ?? {})) data[k] = decode(v);
    return { ...data, ...(secret.stringData ?? {}) };
  }
  const cm = await fetchOrUndefined(() => client.get<ConfigMap>(CONFIGMAPS, namespace, name));
  if (!cm) return undefined;
  const data: Record<string, string> = { ...(cm.data ?? {}) };
  for (const [k, v] of Object.entries(cm.binaryData ?? {})) data[k] = decode(v);
  return data;
}

function fieldValue(ctx: EnvContext, path: string): string {
  const { pod } = ctx;
  const keyed = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
  if (keyed)
    return (keyed[1] === "labels" ? pod.metadata.labels : pod.metadata.annotations)?.[keyed[2] ?? ""] ?? "";
  switch (path) {
    case "metadata.name":
      return pod.metadata.name ?? "";
    case "metadata.namespace":
      return pod.metadata.namespace ?? "";
    case "metadata.uid":
      return pod.metadata.uid ?? "";
    case "spec.nodeName":
      return pod.spec.nodeName ?? "";
    case "spec.serviceAccountName":
      return pod.spec.serviceAccountName ?? "default";
    case "status.hostIP":
    case "status.hostIPs":
      return ctx.hostIP;
    case "status.podIP":
    case "status.podIPs":
      return ctx.podIP;
    default:
      throw new ContainerConfigError(`unsupported fieldPath: ${path}`);
  }
}

function resourceValue(resource: string): string {
  if (resource.startsWith("requests.")) return "0";
  if (resource === "limits.cpu") return String(os.cpus().length);
  if (resource === "limits.memory") return String(os.totalmem());
  return "0";
}

/** The container's environment: image env, then envFrom, then env; the kubelet's error messages. */
export async function containerEnv(ctx: EnvContext, container: Container, image: ImageSpec) {
  const namespace = ctx.pod.metadata.namespace ?? "";
  const env: Record<string, string> = { ...(image.env ?? {}) };
  const declared: Record<string, string> = {};
  const set = (name: string, value: string) => {
    env[name] = value;
    declared[name] = value;
  };
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    if (!ref) continue;
    const kind = from.configMapRef ? "ConfigMap" : "Secret";
    const data = await sourceData(ctx.client, kind, namespace, ref.name);
    if (!data) {
      if (ref.optional) continue;
      throw new ContainerConfigError(`${kind.toLowerCase()} "${ref.name}" not found`);
    }
    for (const [k, v] of Object.entries(data)) {
      const name = (from.prefix ?? "") + k;
      if (ENV_NAME.test(name)) set(name, v);
    }
  }
  for (const ev of container.env ?? []) {
    if (ev.value !== undefined || !ev.valueFrom) {
      set(
        ev.name,
        expand(ev.value ?? "", (n) => declared[n]),
      );
      continue;
    }
    const vf = ev.valueFrom;
    if (vf.fieldRef) set(ev.name, fieldValue(ctx, vf.fieldRef.fieldPath));
    else if (vf.resourceFieldRef) set(ev.name, resourceValue(vf.resourceFieldRef.resource));
    else {
      const ref = vf.secretKeyRef ?? vf.configMapKeyRef;
      if (!ref) continue;
      const kind = vf.secretKeyRef ? "Secret" : "ConfigMap";
      const data = await sourceData(ctx.client, kind, namespace, ref.name);
      if (!data) {
        if (ref.optional) continue;
        throw new ContainerConfigError(`${kind.toLowerCase()} "${ref.name}" not found`);
      }
      const value = data[ref.key];
      if (value === undefined) {
        if (ref.optional) continue;
        throw new ContainerConfigError(`couldn't find key ${ref.key} in ${kind} ${namespace}/${ref.name}`);
      }
      set(ev.name, value);
    }
  }
  for (const [k, v] of Object.entries(env)) env[k] = rewriteMountPaths(v, ctx.mounts);
  return env;
}

/** The argv: command replaces the image's entrypoint, args follow; those two $(VAR)-expanded, paths rewritten. */
export function containerArgv(
  container: Container,
  image: ImageSpec,
  env: Record<string, string>,
  mounts: MountRewrite[],
) {
  const lookup = (n: string) => env[n];
  const fromSpec = (list: string[]) => list.map((a) => rewriteMountPaths(expand(a, lookup), mounts));
  const command = container.command?.length ? fromSpec(container.command) : image.entrypoint;
  return [...command, ...fromSpec(container.args ?? [])];
}
