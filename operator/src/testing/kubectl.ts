import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { stringify } from "yaml";
import type { FakeApiServer } from "./apiserver/index.js";
import { kubeTools } from "./kube-tools.js";

const execute = promisify(execFile);

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The real kubectl as a superuser of a fake API server, with a kubeconfig and a directory for
 * manifests of its own. The fake server has no OpenAPI documents (/openapi/v2 and v3 answer 404), so
 * commands that validate client-side need --validate=false.
 */
export interface Kubectl {
  readonly path: string;
  readonly kubeconfig: string;
  /** Runs kubectl; a non-zero exit is a result, not an error. */
  run(...args: string[]): Promise<KubectlResult>;
  /** Writes `objects` as a multi-document YAML file and returns its path. */
  manifest(name: string, ...objects: unknown[]): Promise<string>;
  close(): Promise<void>;
}

export async function startKubectl(server: FakeApiServer): Promise<Kubectl> {
  const [{ kubectl: path }, dir] = await Promise.all([
    kubeTools(),
    mkdtemp(join(tmpdir(), "darkbloom-kubectl-")),
  ]);
  const kubeconfig = join(dir, "kubeconfig");
  await writeFile(kubeconfig, server.kubeconfig(server.adminToken));
  return {
    path,
    kubeconfig,
    run: async (...args) => {
      try {
        const { stdout, stderr } = await execute(path, ["--kubeconfig", kubeconfig, ...args], {
          timeout: 20_000,
        });
        return { code: 0, stdout, stderr };
      } catch (error) {
        const e = error as { code?: number; stdout?: string; stderr?: string; message: string };
        return {
          code: typeof e.code === "number" ? e.code : 1,
          stdout: e.stdout ?? "",
          stderr: e.stderr ?? e.message,
        };
      }
    },
    manifest: async (name, ...objects) => {
      const file = join(dir, name);
      await writeFile(file, objects.map((o) => stringify(o)).join("---\n"));
      return file;
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}
