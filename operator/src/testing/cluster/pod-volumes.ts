/**
 * Volumes as directories in the pod's sandbox: emptyDir empty, secret and configMap filled with their
 * keys (or `items`), with defaultMode. Containers see them through mountPath rewriting
 * (container-env.ts), the fake cluster's one deviation from real mounts.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { KubeClient } from "./client.js";
import { type MountRewrite, sourceData } from "./container-env.js";
import type { Container, Pod, Volume } from "./types.js";

export const volumeDir = (sandboxDir: string, name: string): string => path.join(sandboxDir, "volumes", name);

/** Where each of the container's mountPaths really is. */
export function mountsOf(sandboxDir: string, container: Container): MountRewrite[] {
  return (container.volumeMounts ?? []).map((m) => ({
    mountPath: m.mountPath,
    hostPath: m.subPath ? path.join(volumeDir(sandboxDir, m.name), m.subPath) : volumeDir(sandboxDir, m.name),
  }));
}

/** Writes (or refreshes) every volume; a missing Secret or ConfigMap is an error, as the kubelet's FailedMount. */
export async function writeVolumes(client: KubeClient, pod: Pod, sandboxDir: string): Promise<void> {
  const namespace = pod.metadata.namespace ?? "";
  for (const volume of pod.spec.volumes ?? []) {
    const dir = volumeDir(sandboxDir, volume.name);
    await mkdir(dir, { recursive: true });
    const source = volume.secret ?? volume.configMap;
    if (!source) continue;
    const kind = volume.secret ? "Secret" : "ConfigMap";
    const sourceName = volume.secret?.secretName ?? volume.configMap?.name ?? "";
    const data = await sourceData(client, kind, namespace, sourceName);
    if (!data) {
      if (source.optional) continue;
      throw new Error(
        `MountVolume.SetUp failed for volume "${volume.name}" : ${kind.toLowerCase()} "${sourceName}" not found`,
      );
    }
    await writeFiles(volume, dir, data);
  }
}

async function writeFiles(volume: Volume, dir: string, data: Record<string, string>): Promise<void> {
  const source = volume.secret ?? volume.configMap;
  const items = source?.items ?? Object.keys(data).map((key) => ({ key, path: key, mode: undefined }));
  for (const item of items) {
    const value = data[item.key];
    if (value === undefined) {
      if (source?.optional) continue;
      throw new Error(`MountVolume.SetUp failed for volume "${volume.name}" : couldn't find key ${item.key}`);
    }
    const file = path.join(dir, item.path);
    const current = await readFile(file, "utf8").catch(() => undefined);
    if (current === value) continue;
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, value, { mode: item.mode ?? source?.defaultMode ?? 0o644 });
  }
}
