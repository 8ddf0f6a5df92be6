import { afterAll, beforeAll } from "vitest";
import { exampleCrd, statusAndScale } from "./crd-schema/fixtures.js";
import { type FakeApiServer, type FakeApiServerOptions, startFakeApiServer } from "./index.js";

// A small HTTP client for the fake API server's own tests: raw requests, so the tests see status
// codes, headers and bodies exactly as a Kubernetes client would.

export interface Response {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests inspect arbitrary JSON bodies.
  body: any;
  headers: Headers;
}

export interface TestClient {
  request(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Response>;
  get(path: string, headers?: Record<string, string>): Promise<Response>;
  post(path: string, body: unknown): Promise<Response>;
  put(path: string, body: unknown): Promise<Response>;
  patch(path: string, body: unknown, contentType: string): Promise<Response>;
  delete(path: string, body?: unknown): Promise<Response>;
}

/**
 * A client as `token` (by default the server's admin). The server may be given as a function, read at
 * each request, so that a client can be made before the server has started (see useFakeApiServer).
 */
export function testClient(server: FakeApiServer | (() => FakeApiServer), token?: string): TestClient {
  const current = typeof server === "function" ? server : () => server;
  const request = async (
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const { url, adminToken } = current();
    const response = await fetch(new URL(path, url), {
      method,
      headers: {
        authorization: `Bearer ${token ?? adminToken}`,
        "content-type": "application/json",
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Not JSON (health checks): the text itself.
    }
    return { status: response.status, body: parsed, headers: response.headers };
  };
  return {
    request,
    get: (path, headers) => request("GET", path, undefined, headers),
    post: (path, body) => request("POST", path, body),
    put: (path, body) => request("PUT", path, body),
    patch: (path, body, contentType) => request("PATCH", path, body, { "content-type": contentType }),
    delete: (path, body) => request("DELETE", path, body),
  };
}

/**
 * One fake API server for the calling test file: started before its tests and closed after them.
 * `api` is an admin client, usable in the file's tests and hooks; `server()` gives the server itself
 * from the time it has started.
 */
export function useFakeApiServer(options?: FakeApiServerOptions): {
  api: TestClient;
  server: () => FakeApiServer;
} {
  let started: FakeApiServer | undefined;
  const server = () => {
    if (!started) throw new Error("the fake API server is not started yet: use it in tests and hooks");
    return started;
  };
  beforeAll(async () => {
    started = await startFakeApiServer(options);
  });
  afterAll(() => started?.close());
  return { api: testClient(server), server };
}

/** Polls until `check` returns a value other than undefined (the garbage collector and watches are asynchronous). */
export async function eventually<T>(
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A minimal valid Deployment. */
export function deployment(
  name: string,
  labels: Record<string, string> = { app: name },
): Record<string, unknown> {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name },
    spec: {
      selector: { matchLabels: labels },
      template: { metadata: { labels }, spec: { containers: [{ name: "app", image: "nginx:1.27" }] } },
    },
  };
}

export interface WatchEvent {
  type: string;
  // biome-ignore lint/suspicious/noExplicitAny: tests inspect arbitrary JSON bodies.
  object: any;
}

/** An open watch stream, read line by line. */
export interface WatchStream {
  status: number;
  /** The next event; rejects when none comes in time. */
  next(timeoutMs?: number): Promise<WatchEvent>;
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  close(): void;
}

export async function openWatch(
  server: FakeApiServer,
  path: string,
  token: string = server.adminToken,
): Promise<WatchStream> {
  const controller = new AbortController();
  const response = await fetch(new URL(path, server.url), {
    headers: { authorization: `Bearer ${token}` },
    signal: controller.signal,
  });
  const queue: WatchEvent[] = [];
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  const ended = (async () => {
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let newline = buffer.indexOf("\n");
        while (newline >= 0) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          if (line) queue.push(JSON.parse(line) as WatchEvent);
          newline = buffer.indexOf("\n");
        }
        wake();
      }
    } catch {
      // Aborted by close().
    }
    wake();
  })();
  let done = false;
  void ended.then(() => {
    done = true;
  });
  return {
    status: response.status,
    ended,
    close: () => controller.abort(),
    next: async (timeoutMs = 3000) => {
      const deadline = Date.now() + timeoutMs;
      while (queue.length === 0) {
        if (done) throw new Error("watch ended");
        const left = deadline - Date.now();
        if (left <= 0) throw new Error("no watch event in time");
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, left);
        });
      }
      return queue.shift()!;
    },
  };
}

/**
 * A CRD with what the server's CRD handling touches: two served versions, defaults, a CEL rule, a
 * keyed list, the status and scale subresources and printer columns.
 */
export function gadgetCrd(): Record<string, unknown> {
  const schema = {
    type: "object",
    properties: {
      spec: {
        type: "object",
        required: ["size"],
        properties: {
          size: { type: "string", enum: ["small", "large"] },
          replicas: { type: "integer", minimum: 0, default: 1 },
          color: { type: "string", default: "blue" },
          parts: {
            type: "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            items: {
              type: "object",
              required: ["name"],
              properties: { name: { type: "string" }, count: { type: "integer" } },
            },
          },
        },
        "x-kubernetes-validations": [{ rule: "self.replicas <= 10", message: "at most 10 replicas" }],
      },
      status: {
        type: "object",
        properties: {
          replicas: { type: "integer" },
          selector: { type: "string" },
          phase: { type: "string" },
        },
      },
    },
  };
  const version = (name: string, storage: boolean) => ({
    name,
    served: true,
    storage,
    schema: { openAPIV3Schema: schema },
    subresources: statusAndScale(),
    additionalPrinterColumns: [
      { name: "Size", type: "string", jsonPath: ".spec.size" },
      { name: "Replicas", type: "integer", jsonPath: ".spec.replicas" },
      { name: "Phase", type: "string", jsonPath: ".status.phase" },
    ],
  });
  return exampleCrd(
    { plural: "gadgets", singular: "gadget", kind: "Gadget", shortNames: ["gd"], categories: ["all"] },
    [version("v1", true), version("v1beta1", false)],
  );
}
