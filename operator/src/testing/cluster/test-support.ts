/**
 * Shared by this folder's tests: a fake API server with the fake cluster around it, small node scripts
 * as images, an admin client with a watch-fed cache, and polling helpers. Not exported from the
 * testing entry point.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type FakeApiServer, startFakeApiServer } from "../apiserver/index.js";
import { KubeClient, type ResourceType } from "./client.js";
import { type FakeCluster, type ImageSpec, startFakeCluster } from "./index.js";
import { Informer } from "./informer.js";
import type { KubeObject } from "./types.js";

/** An HTTP server on $(POD_IP):$PORT: /readyz (503 while the file $NOT_READY_FILE exists), /whoami. */
const SERVER = `
import http from "node:http";
import fs from "node:fs";
const host = process.env.POD_IP ?? "127.0.0.1";
const port = Number(process.env.PORT ?? 8080);
const name = process.env.POD_NAME ?? "?";
const server = http.createServer((req, res) => {
  if (req.url === "/readyz") {
    const notReady = process.env.NOT_READY_FILE && fs.existsSync(process.env.NOT_READY_FILE);
    res.writeHead(notReady ? 503 : 200).end(notReady ? "not ready" : "ok");
  } else if (req.url === "/whoami") res.end(name + " " + (process.env.VERSION ?? ""));
  else res.writeHead(404).end();
});
server.keepAliveTimeout = 100;
server.listen(port, host, () => console.log("listening on " + host + ":" + port + " args=" + JSON.stringify(process.argv.slice(2))));
process.on("SIGTERM", () => {
  console.log("SIGTERM, shutting down");
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
`;

/** Prints its args and a few env vars, then exits 0 (EXIT_CODE overrides). */
const PRINT = `
const keys = (process.env.PRINT_ENV ?? "").split(",").filter(Boolean);
console.log("args=" + JSON.stringify(process.argv.slice(2)));
for (const k of keys) console.log(k + "=" + process.env[k]);
if (process.env.READ_FILE) console.log("file=" + (await import("node:fs")).readFileSync(process.env.READ_FILE, "utf8"));
if (process.env.SLEEP_MS) await new Promise((r) => setTimeout(r, Number(process.env.SLEEP_MS)));
process.exit(Number(process.env.EXIT_CODE ?? 0));
`;

/** Ignores SIGTERM, ticking with timestamps until killed. */
const STUBBORN = `
process.on("SIGTERM", () => console.log("SIGTERM ignored at " + Date.now()));
setInterval(() => console.log("tick " + Date.now()), 100);
console.log("started");
`;

export interface TestCluster {
  apiServer: FakeApiServer;
  cluster: FakeCluster;
  client: KubeClient;
  namespace: string;
  dir: string;
  logs: string[];
  /** A watch-fed cache of one resource type, started on first use. */
  watch<T extends KubeObject>(type: ResourceType): Promise<Informer<T>>;
  close(): Promise<void>;
}

export async function startTestCluster(namespace = "test"): Promise<TestCluster> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "fake-cluster-"));
  const script = async (name: string, text: string) => {
    const file = path.join(dir, name);
    await writeFile(file, text);
    return file;
  };
  const node = process.execPath;
  const images: Record<string, ImageSpec> = {
    "example.com/server:1": { entrypoint: [node, await script("server.mjs", SERVER)] },
    "example.com/print:1": { entrypoint: [node, await script("print.mjs", PRINT)] },
    "example.com/stubborn:1": { entrypoint: [node, await script("stubborn.mjs", STUBBORN)] },
    "example.com/exit1:1": { entrypoint: [node, "-e", "console.log('failing'); process.exit(1)"] },
  };
  const apiServer = await startFakeApiServer();
  const logs: string[] = [];
  const log = (line: string) => logs.push(`${new Date().toISOString()} ${line}`);
  const cluster = await startFakeCluster({
    apiServerUrl: apiServer.url,
    token: apiServer.adminToken,
    images,
    workDir: path.join(dir, "work"),
    log,
  });
  const client = new KubeClient(apiServer.url, apiServer.adminToken);
  await client.request("POST", "/api/v1/namespaces", {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: namespace },
  });
  const informers: Informer<KubeObject>[] = [];
  return {
    apiServer,
    cluster,
    client,
    namespace,
    dir,
    logs,
    async watch<T extends KubeObject>(type: ResourceType) {
      const informer = new Informer<T>(client, type, log);
      informers.push(informer as unknown as Informer<KubeObject>);
      await informer.start();
      return informer;
    },
    async close() {
      await Promise.all(informers.map((i) => i.stop()));
      await cluster.close();
      await apiServer.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Polls until `check` returns a value other than undefined/false; fails with `what` after the timeout. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ""}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A container spec running the test server, with POD_IP and POD_NAME from the downward API. */
export function serverContainer(extraEnv: { name: string; value: string }[] = []) {
  return {
    name: "server",
    image: "example.com/server:1",
    ports: [{ name: "http", containerPort: 8080 }],
    env: [
      { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
      { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
      ...extraEnv,
    ],
    readinessProbe: { httpGet: { path: "/readyz", port: "http" }, periodSeconds: 1, failureThreshold: 1 },
  };
}
