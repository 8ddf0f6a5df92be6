import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createTestDatabase, startTestPostgres, type TestPostgres } from "@darkbloom/coordinator/testing";
import { type RunningOperator, startOperator } from "@darkbloom/operator";
import {
  type FakeCluster,
  type OperatorTestEnv,
  startFakeCluster,
  startOperatorEnv,
} from "@darkbloom/operator/testing";
import { pino } from "pino";
import { entrypointOnHost } from "../images/dockerfile.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));

/** The test images: what the fake kubelet runs for each reference (as a registry would serve them). */
export const IMAGES = {
  v1: "registry.test/darkbloom/coordinator:1.0.0",
  v2: "registry.test/darkbloom/coordinator:1.1.0",
  broken: "registry.test/darkbloom/coordinator:broken",
} as const;

/**
 * What the coordinator image runs, run here: the ENTRYPOINT of images/Dockerfile's coordinator
 * target, with this Node and this checkout standing for the image's (tests/images proves the image's
 * layout runs it too).
 */
export const coordinatorEntrypoint = entrypointOnHost("coordinator");

export const ADMIN_KEY = "dbadm_kubernetes-tests-0123456789abcdef";

export interface KubeCluster {
  env: OperatorTestEnv;
  cluster: FakeCluster;
  postgres: TestPostgres;
  databaseUrl: string;
  /** The operator running in this process (the leader-election test replaces it with processes). */
  operator: RunningOperator | undefined;
  startOperator(): Promise<RunningOperator>;
  /** http://host:port of a Service's port, through the fake kube-proxy. */
  serviceUrl(service: string, port?: string | number): Promise<string>;
  stop(): Promise<void>;
}

/**
 * A whole small cluster: the strict fake API server with the operator's CRDs and RBAC, a real
 * PostgreSQL, the fake controllers and kubelet that run pods as real processes (coordinators from
 * the built CLI), and the operator.
 */
export async function startKubeCluster(): Promise<KubeCluster> {
  const postgres = await startTestPostgres();
  const database = await createTestDatabase(postgres.url);
  const env = await startOperatorEnv({ apiServer: { watchCloseAfterMs: [5_000, 10_000] } });
  const workDir = await mkdtemp(join(tmpdir(), "darkbloom-kube-"));
  const cluster = await startFakeCluster({
    apiServerUrl: env.apiServer.url,
    token: env.apiServer.adminToken,
    workDir,
    images: {
      [IMAGES.v1]: { entrypoint: coordinatorEntrypoint },
      [IMAGES.v2]: { entrypoint: coordinatorEntrypoint },
      [IMAGES.broken]: {
        entrypoint: [process.execPath, join(REPO, "tests/dist/kubernetes/fixtures/broken-migration.js")],
      },
    },
  });
  const namespace = env.namespace;
  const serviceUrl = async (service: string, port: string | number = "http") => {
    const at = await cluster.serviceAddress(namespace, service, port);
    return `http://${at.host}:${at.port}`;
  };
  const kube: KubeCluster = {
    env,
    cluster,
    postgres,
    databaseUrl: database.url,
    operator: undefined,
    serviceUrl,
    startOperator: async () => {
      kube.operator = await startOperator({
        kubeConfig: env.operatorKubeConfig,
        log: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
        resolveService: (ns, service, port) => cluster.serviceAddress(ns, service, port),
      });
      return kube.operator;
    },
    stop: async () => {
      await kube.operator?.close();
      await cluster.close();
      await env.close();
      await database.drop().catch(() => undefined);
      await postgres.stop();
      await rm(workDir, { recursive: true, force: true });
    },
  };
  return kube;
}

/**
 * POSTs JSON on a connection of its own (no keep-alive): a request never rides a connection a
 * draining replica is about to close, which is the load balancer's concern, not the rollout's.
 */
export function postFresh(
  url: string,
  apiKey: string,
  body: unknown,
  timeoutMs = 30_000,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const request = http.request(
      url,
      {
        method: "POST",
        agent: false,
        timeout: timeoutMs,
        headers: {
          authorization: `Bearer ${apiKey}`,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
        },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (c: Buffer) => chunks.push(c));
        response.on("end", () =>
          resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString() }),
        );
        response.on("error", reject);
      },
    );
    request.on("timeout", () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    request.on("error", reject);
    request.end(payload);
  });
}
