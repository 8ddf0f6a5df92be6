import { describe, expect, it } from "vitest";
import { storedCoordinator } from "../../../testing/coordinator-fixture.js";
import { ownerReference } from "./labels.js";
import { buildPeerSecret, PEER_TOKEN_KEY, peerSecretName } from "./peer-secret.js";

describe("peer Secret", () => {
  it("holds the given token, base64-encoded, under `token` in <name>-peer", () => {
    const coordinator = storedCoordinator();
    const secret = buildPeerSecret(coordinator, "tok_0123456789abcdef");
    expect(peerSecretName(coordinator)).toBe("main-peer");
    expect(secret).toMatchObject({
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: { name: "main-peer", namespace: "darkbloom", ownerReferences: [ownerReference(coordinator)] },
    });
    expect(PEER_TOKEN_KEY).toBe("token");
    expect(Object.keys(secret.data ?? {})).toEqual(["token"]);
    expect(Buffer.from(secret.data?.token ?? "", "base64").toString("utf8")).toBe("tok_0123456789abcdef");
    expect(secret).not.toHaveProperty("stringData");
  });

  it("records a rotation already asked for when it is made: the token is new anyway", () => {
    const coordinator = storedCoordinator();
    expect(buildPeerSecret(coordinator, "tok_0123456789abcdef").metadata?.annotations).toBeUndefined();
    coordinator.metadata.annotations = { "darkbloom.dev/rotate-peer-token": "1733390000" };
    expect(buildPeerSecret(coordinator, "tok_0123456789abcdef").metadata?.annotations).toEqual({
      "darkbloom.dev/peer-token-rotation": "1733390000",
    });
  });
});
