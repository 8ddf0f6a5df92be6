import { type CelInput, isCelError, run } from "@bufbuild/cel";
import { strings } from "@bufbuild/cel/ext";
import { describe, expect, it } from "vitest";
import type { JSONSchemaProps, Json } from "../schema.js";
import { coordinatorConfigSchema } from "./coordinator-config-types.js";
import { coordinatorRootRules, coordinatorSpecSchema } from "./coordinator-types.js";
import { providerReleaseSpecSchema } from "./provider-release-types.js";

// The CEL rules and patterns evaluated on sample values, as the API server would: CEL objects are
// maps, JSON integers CEL ints.

function toCel(value: Json): CelInput {
  if (Array.isArray(value)) return value.map(toCel);
  if (value !== null && typeof value === "object") {
    return new Map(Object.entries(value).map(([k, v]) => [k, toCel(v)]));
  }
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  return value;
}

/** The messages of the node's rules that `self` fails (transition rules only with `oldSelf`). */
function failures(node: JSONSchemaProps, self: Json, oldSelf?: Json): string[] {
  const failed: string[] = [];
  for (const { rule, message } of node["x-kubernetes-validations"] ?? []) {
    if (rule.includes("oldSelf") && oldSelf === undefined) continue;
    const bindings = { self: toCel(self), ...(oldSelf !== undefined ? { oldSelf: toCel(oldSelf) } : {}) };
    const result = run(rule, bindings, { funcs: strings });
    if (isCelError(result)) throw new Error(`${rule}: ${result.message}`);
    if (result !== true) failed.push(message ?? rule);
  }
  return failed;
}

function field(node: JSONSchemaProps, name: string): JSONSchemaProps {
  const child = node.properties?.[name];
  if (!child) throw new Error(`no field ${name}`);
  return child;
}

function matches(node: JSONSchemaProps, value: string): boolean {
  if (node.pattern === undefined) throw new Error("no pattern");
  return new RegExp(node.pattern).test(value) && value.length <= (node.maxLength ?? Number.POSITIVE_INFINITY);
}

const config = coordinatorConfigSchema.node;
const spec = coordinatorSpecSchema.node;

describe("Coordinator config rules", () => {
  it("keeps instanceHeartbeat and directoryPoll shorter than instanceStale, at their defaults when absent", () => {
    expect(failures(config, {})).toEqual([]);
    expect(
      failures(config, { instanceHeartbeat: "1s", instanceStale: "3s", directoryPoll: "500ms" }),
    ).toEqual([]);
    expect(failures(config, { instanceStale: "3s" })).toEqual([
      "instanceHeartbeat (default 5s) must be shorter than instanceStale (default 30s)",
    ]);
    expect(failures(config, { instanceHeartbeat: "30s" })).toHaveLength(1);
    expect(failures(config, { instanceHeartbeat: "10s", instanceStale: "1m" })).toEqual([]);
    expect(failures(config, { directoryPoll: "30s" })).toEqual([
      "directoryPoll must be shorter than instanceStale (default 30s)",
    ]);
    expect(failures(config, { directoryPoll: "1m", instanceStale: "2m" })).toEqual([]);
    expect(
      failures(config, { directoryPoll: "2m", instanceStale: "1h", instanceHeartbeat: "1h" }),
    ).toHaveLength(1);
  });

  it("accepts the durations the CLI accepts and CEL reads", () => {
    const timeout = field(config, "queueTimeout");
    for (const ok of ["500ms", "30s", "5m", "12h", "999999999s"]) expect(matches(timeout, ok), ok).toBe(true);
    for (const bad of ["0s", "05s", "7d", "1.5s", "30", "s", " 1s", "1000000000s"]) {
      expect(matches(timeout, bad), bad).toBe(false);
    }
    expect(matches(field(config, "rebalanceInterval"), "0")).toBe(true);
    expect(matches(field(config, "placementInterval"), "15s")).toBe(true);
    expect(matches(field(config, "placementCooldown"), "0")).toBe(false);
  });

  it("bounds byte sizes as the CLI does", () => {
    const buffer = field(config, "maxResponseBuffer");
    for (const ok of ["1", "65536", "512KiB", "1MiB", "1024MiB", "1GiB", "1073741824", "1073741824B"]) {
      expect(matches(buffer, ok), ok).toBe(true);
      expect(failures(buffer, ok), ok).toEqual([]);
    }
    for (const big of ["2GiB", "1025MiB", "1073741825", "9999999999999GiB"]) {
      expect(failures(buffer, big), big).toEqual(["must be at most 1GiB"]);
    }
    for (const bad of ["0", "1 MiB", "1MB", "1mib", "-1"]) expect(matches(buffer, bad), bad).toBe(false);
    const bytes = field(config, "maxResponseBytes");
    expect(failures(bytes, "16GiB")).toEqual([]);
    expect(failures(bytes, "17GiB")).toEqual(["must be at most 16GiB"]);
  });

  it("takes counts within the CLI parsers' bounds", () => {
    expect(field(config, "maxRetries")).toMatchObject({ minimum: 0, maximum: 10 });
    expect(field(config, "rateLimitBurst")).toMatchObject({ minimum: 1, maximum: 1_000_000 });
    expect(field(config, "authFailureAddresses")).toMatchObject({ minimum: 1, maximum: 10_000_000 });
    expect(field(config, "tokenizerThreads")).toMatchObject({ minimum: 0, maximum: 64 });
    expect(field(config, "trustProxy")).toMatchObject({ minimum: 0, maximum: 10 });
    expect(field(config, "metricsMaxModels")).toMatchObject({ minimum: 1, maximum: 10_000 });
  });
});

describe("Coordinator spec rules", () => {
  it("keeps the metrics port off the HTTP port", () => {
    const metrics = field(spec, "metrics");
    expect(failures(metrics, { port: 9090 })).toEqual([]);
    expect(failures(metrics, { port: 8080 })).toEqual([
      "metrics.port must differ from 8080, the coordinator's HTTP port",
    ]);
  });

  it("keeps the operator's labels and annotation out of podLabels and podAnnotations", () => {
    const podLabels = field(spec, "podLabels");
    expect(failures(podLabels, { team: "a", "app.kubernetes.io/version": "1" })).toEqual([]);
    expect(failures(podLabels, { "app.kubernetes.io/instance": "other" })).toHaveLength(1);
    expect(failures(podLabels, { "app.kubernetes.io/managed-by": "helm" })).toHaveLength(1);
    const podAnnotations = field(spec, "podAnnotations");
    expect(failures(podAnnotations, { "prometheus.io/scrape": "true" })).toEqual([]);
    expect(failures(podAnnotations, { "darkbloom.dev/config-hash": "x" })).toHaveLength(1);
  });

  it("serves TLS only with a peer port of its own, which stays plaintext", () => {
    const base = { metrics: { port: 9090 } };
    expect(failures(spec, { ...base, peerPort: 8443, tls: { secretName: "main-tls" } })).toEqual([]);
    expect(failures(spec, base)).toEqual([]);
    expect(failures(spec, { ...base, tls: { secretName: "main-tls" } })).toEqual([
      "tls needs peerPort: replicas forward to each other by pod IP, which the certificate does not name, so they do it on a peer port of its own, in plaintext",
    ]);
    const serverName = field(field(spec, "tls"), "serverName");
    expect(matches(serverName, "api.darkbloom.example")).toBe(true);
    expect(matches(serverName, "https://api.darkbloom.example")).toBe(false);
  });

  it("refuses an image with whitespace or none", () => {
    const image = field(spec, "image");
    expect(matches(image, "ghcr.io/darkbloom/coordinator:1.2.3")).toBe(true);
    expect(matches(image, "")).toBe(false);
    expect(matches(image, "a b")).toBe(false);
  });

  it("needs a name usable as a Service name and a label value", () => {
    const root: JSONSchemaProps = { "x-kubernetes-validations": coordinatorRootRules };
    const named = (name: string) => failures(root, { metadata: { name } });
    expect(named("coordinator")).toEqual([]);
    expect(named(`a${"b".repeat(62)}`)).toEqual([]);
    for (const bad of [`a${"b".repeat(63)}`, "1coordinator", "co.ordinator", "coordinator-"]) {
      expect(named(bad), bad).toHaveLength(1);
    }
  });
});

describe("ProviderRelease spec rules", () => {
  const release = providerReleaseSpecSchema.node;

  it("makes every field but active immutable", () => {
    const cases: [string, Json, Json][] = [
      ["coordinatorRef", { name: "a" }, { name: "b" }],
      ["version", "1.2.3", "1.2.4"],
      ["platform", "darwin-arm64", "linux-x64"],
      ["binarySha256", "a".repeat(64), "b".repeat(64)],
      ["bundleSha256", "a".repeat(64), "b".repeat(64)],
      ["url", "https://a.example/x", "https://b.example/x"],
      ["minProviderVersion", "", "1.0.0"],
    ];
    for (const [name, before, after] of cases) {
      expect(failures(field(release, name), before, before), name).toEqual([]);
      expect(failures(field(release, name), after, before), name).toEqual([
        `${name} is immutable: create a new ProviderRelease`,
      ]);
    }
    expect(field(release, "active")["x-kubernetes-validations"]).toBeUndefined();
  });

  it("checks versions, platforms, digests and URLs as the release store does", () => {
    const version = field(release, "version");
    for (const ok of ["1.2.3", "0.0.0", "1.3.0-rc.1", "1.0.0+build.5", "1.0.0-alpha-1.x"]) {
      expect(matches(version, ok), ok).toBe(true);
    }
    for (const bad of ["v1.2.3", "01.2.3", "1.2", "1.2.3-", "1.2.3-01"])
      expect(matches(version, bad), bad).toBe(false);
    const minimum = field(release, "minProviderVersion");
    expect(matches(minimum, "")).toBe(true);
    expect(matches(minimum, "1.0.0")).toBe(true);
    expect(matches(minimum, "latest")).toBe(false);
    const platform = field(release, "platform");
    for (const ok of ["darwin-arm64", "linux-x64", "linux-x64-cuda"])
      expect(matches(platform, ok), ok).toBe(true);
    for (const bad of ["darwin", "Darwin-arm64", "linux-x64-a-b-c"])
      expect(matches(platform, bad), bad).toBe(false);
    const digest = field(release, "binarySha256");
    expect(matches(digest, "0f".repeat(32))).toBe(true);
    expect(matches(digest, "0F".repeat(32))).toBe(false);
    const url = field(release, "url");
    expect(matches(url, "https://releases.example/darkbloom/1.2.3.tar.gz")).toBe(true);
    expect(matches(url, "http://10.0.0.1:8080/b")).toBe(true);
    for (const bad of ["ftp://x/y", "https://", "https:///path", "https://a b"])
      expect(matches(url, bad), bad).toBe(false);
    expect(matches(url, `https://a.example/${"x".repeat(2048)}`)).toBe(false);
  });
});
