import { describe, expect, it } from "vitest";
import type { CoordinatorSpec } from "../../../api/v1alpha1/coordinator-types.js";
import { storedCoordinator } from "../../../testing/coordinator-fixture.js";
import { buildConfigHash } from "./config-hash.js";

const SECRETS = "secrets-v1";
const base = buildConfigHash(storedCoordinator({ config: { queueDepth: 5, trustProxy: 1 } }), SECRETS);
const hashWith = (spec: Partial<CoordinatorSpec>, secrets = SECRETS) =>
  buildConfigHash(storedCoordinator({ config: { queueDepth: 5, trustProxy: 1 }, ...spec }), secrets);

describe("config hash", () => {
  it("is 16 hex digits, the same for the same input whatever the config's key order", () => {
    expect(base).toMatch(/^[0-9a-f]{16}$/);
    expect(hashWith({ config: { trustProxy: 1, queueDepth: 5 } })).toBe(base);
  });

  it("changes with what the pods read at start: image, args, env, Secrets' values", () => {
    const changed: Partial<CoordinatorSpec>[] = [
      { image: "ghcr.io/darkbloom/coordinator:1.5.0" },
      { config: { queueDepth: 6, trustProxy: 1 } },
      { config: { queueDepth: 5, trustProxy: 1, logLevel: "debug" } },
      { drainSeconds: 60 },
      { metrics: { port: 9100 } },
      { database: { secretRef: { name: "db2", key: "url" } } },
      { adminKeySecretRef: { name: "admin", key: "key" } },
      { peerPort: 8443, tls: { secretName: "main-tls" } },
    ];
    for (const spec of changed) expect(hashWith(spec), JSON.stringify(spec)).not.toBe(base);
    expect(hashWith({}, "secrets-v2")).not.toBe(base);
  });

  it("stays the same for what does not restart pods (or rolls them through the template itself)", () => {
    const unchanged: Partial<CoordinatorSpec>[] = [
      { replicas: 5 },
      { service: { type: "LoadBalancer", port: 443 } },
      { disruptionBudget: { enabled: false, maxUnavailable: 1 } },
      { podLabels: { team: "a" } },
      { resources: { requests: { cpu: "500m" } } },
    ];
    for (const spec of unchanged) expect(hashWith(spec), JSON.stringify(spec)).toBe(base);
  });
});

describe("config hash during a peer token rotation", () => {
  it("changes while the Secret holds a previous token (the variable the pods read), and not otherwise", () => {
    const coordinator = storedCoordinator({ config: { queueDepth: 5, trustProxy: 1 } });
    expect(buildConfigHash(coordinator, SECRETS, { previousPeerToken: false })).toBe(base);
    expect(buildConfigHash(coordinator, SECRETS, { previousPeerToken: true })).not.toBe(base);
  });
});

describe("config hash with TLS", () => {
  const tls = (secretName: string, serverName?: string) =>
    hashWith({ peerPort: 8443, tls: { secretName, ...(serverName ? { serverName } : {}) } });

  it("changes with the Secret's name (another Secret is another mount), not with its content", () => {
    // buildConfigHash never sees the certificate: the controller's secretsVersion covers only the
    // database URL, the admin key and the peer token, so a renewal cannot roll the pods.
    expect(tls("main-tls")).toBe(tls("main-tls"));
    expect(tls("other-tls")).not.toBe(tls("main-tls"));
    // The name the operator verifies is not read by the pods.
    expect(tls("main-tls", "api.example.com")).toBe(tls("main-tls"));
  });

  it("is what it was before the field for a Coordinator without TLS", () => {
    expect(hashWith({ tls: undefined })).toBe(base);
  });
});
