// Helpers of the chart's tests: the real helm (from @darkbloom/operator/testing's kubeTools), the
// chart's rendered documents, and a small REST client for the strict fake API server.
import { execFile } from "node:child_process";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type FakeApiServer, kubeTools } from "@darkbloom/operator/testing";
import { parseAllDocuments } from "yaml";

const run = promisify(execFile);

export const REPO = fileURLToPath(new URL("../../", import.meta.url));
export const CHART = join(REPO, "charts/darkbloom");
export const CI_VALUES = join(CHART, "ci");
export const BAD_VALUES = fileURLToPath(new URL("bad-values/", import.meta.url));
export const RELEASE = "darkbloom";
export const NAMESPACE = "darkbloom";
/** What a cluster with the chart's CRDs serves; without it Helm defers the Coordinator. */
export const COORDINATOR_API = "darkbloom.dev/v1alpha1/Coordinator";

// biome-ignore lint/suspicious/noExplicitAny: rendered Kubernetes objects, read by the assertions
export type Json = Record<string, any>;

/** A rendered object: every one has these. */
export interface Manifest extends Json {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Json };
}

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs helm (with `env` added to the environment: KUBECONFIG); a failure is a result (the
 * bad-values tests read its message), not an exception.
 */
export async function helm(args: string[], env: Record<string, string> = {}): Promise<HelmResult> {
  const { helm: binary } = await kubeTools();
  try {
    const { stdout, stderr } = await run(binary, args, {
      cwd: REPO,
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? 1, stdout: failed.stdout ?? "", stderr: failed.stderr ?? String(error) };
  }
}

/** The matrix of values files the chart is linted and rendered with (chart-testing's ci/ folder). */
export async function ciValuesFiles(): Promise<string[]> {
  return (await readdir(CI_VALUES)).filter((f) => f.endsWith("-values.yaml")).sort();
}

/** `helm template` of the chart with a values file of ci/ (and more flags); throws if refused. */
export async function render(valuesFile: string | undefined, ...flags: string[]): Promise<Manifest[]> {
  const result = await helm([
    "template",
    RELEASE,
    CHART,
    "--namespace",
    NAMESPACE,
    "--api-versions",
    COORDINATOR_API,
    ...(valuesFile ? ["--values", join(CI_VALUES, valuesFile)] : []),
    ...flags,
  ]);
  if (result.code !== 0) throw new Error(`helm template ${valuesFile ?? ""} failed:\n${result.stderr}`);
  return parseManifests(result.stdout);
}

export function parseManifests(text: string): Manifest[] {
  return parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`invalid YAML rendered: ${doc.errors[0]?.message}`);
      return doc.toJSON() as Manifest | null;
    })
    .filter((doc): doc is Manifest => doc !== null);
}

export function find(manifests: Manifest[], kind: string, name?: string): Manifest {
  const found = manifests.find((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  if (!found) throw new Error(`no ${kind}${name ? ` ${name}` : ""} rendered`);
  return found;
}

export function all(manifests: Manifest[], kind: string): Manifest[] {
  return manifests.filter((m) => m.kind === kind);
}

/** Whether a matchLabels selector selects objects with these labels. */
export function selects(
  selector: Record<string, string> | undefined,
  labels: Record<string, string>,
): boolean {
  const entries = Object.entries(selector ?? {});
  return entries.length > 0 && entries.every(([key, value]) => labels[key] === value);
}

/** A superuser's REST client of the fake API server, with its discovery to find each kind's path. */
export class AdminClient {
  private readonly paths = new Map<string, { plural: string; namespaced: boolean }>();

  constructor(private readonly server: FakeApiServer) {}

  /** POSTs an object with strict field validation (unknown fields are refused, as schemas are). */
  async create(
    object: Manifest,
    options: { dryRun?: boolean } = {},
  ): Promise<{ status: number; body: Json }> {
    const query = `?fieldValidation=Strict${options.dryRun ? "&dryRun=All" : ""}`;
    return this.request("POST", `${await this.collection(object)}${query}`, object);
  }

  /** PUTs an object over the stored one, as `kubectl replace` does (with the resourceVersion it read). */
  async replace(object: Manifest): Promise<{ status: number; body: Json }> {
    const { apiVersion, kind, metadata } = object;
    const current = await this.get(apiVersion, kind, metadata.namespace ?? "", metadata.name);
    const replaced = {
      ...object,
      metadata: { ...metadata, resourceVersion: current?.metadata?.resourceVersion },
    };
    return this.request(
      "PUT",
      `${await this.collection(object)}/${metadata.name}?fieldValidation=Strict`,
      replaced,
    );
  }

  async list(apiVersion: string, kind: string, namespace?: string): Promise<Json[]> {
    const path = await this.collection({ apiVersion, kind, metadata: { name: "", namespace } });
    const { status, body } = await this.request("GET", path);
    if (status !== 200) throw new Error(`GET ${path}: ${status} ${body.message}`);
    return body.items as Json[];
  }

  async get(apiVersion: string, kind: string, namespace: string, name: string): Promise<Json | undefined> {
    const path = await this.collection({ apiVersion, kind, metadata: { name, namespace } });
    const { status, body } = await this.request("GET", `${path}/${name}`);
    return status === 200 ? body : undefined;
  }

  private async collection(object: Manifest): Promise<string> {
    const { apiVersion, kind } = object;
    const base = apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    let resource = this.paths.get(`${apiVersion}/${kind}`);
    if (!resource) {
      const { status, body } = await this.request("GET", base);
      if (status !== 200) throw new Error(`${apiVersion} is not served (${status})`);
      for (const r of body.resources as { name: string; kind: string; namespaced: boolean }[]) {
        if (!r.name.includes("/"))
          this.paths.set(`${apiVersion}/${r.kind}`, { plural: r.name, namespaced: r.namespaced });
      }
      resource = this.paths.get(`${apiVersion}/${kind}`);
      if (!resource) throw new Error(`${apiVersion} serves no ${kind}`);
    }
    const namespace = object.metadata.namespace;
    return resource.namespaced && namespace
      ? `${base}/namespaces/${namespace}/${resource.plural}`
      : `${base}/${resource.plural}`;
  }

  private async request(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: Json }> {
    const response = await fetch(`${this.server.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.server.adminToken}`,
        ...(body ? { "content-type": "application/json" } : {}),
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: response.status, body: (await response.json()) as Json };
  }
}

/** Polls until `check` returns something other than undefined; fails naming `what` after the timeout. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
