import type { V1Deployment } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import {
  newPeerToken,
  nextPeerTokenStep,
  type PeerSecret,
  peerTokenState,
  rolledOutTo,
  rotatedPeerSecret,
  withoutPreviousToken,
} from "./peer-token-rotation.js";

const b64 = (s: string) => Buffer.from(s).toString("base64");

function peerSecret(data: Record<string, string>, rotation?: string): PeerSecret {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: "main-peer",
      namespace: "darkbloom",
      resourceVersion: "42",
      labels: { "app.kubernetes.io/instance": "main" },
      ...(rotation ? { annotations: { "darkbloom.dev/peer-token-rotation": rotation } } : {}),
    },
    type: "Opaque",
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
  };
}

describe("the peer Secret's tokens", () => {
  it("are decoded with the rotation they answered; none without a token", () => {
    expect(peerTokenState(peerSecret({ token: "t1" }))).toEqual({
      token: "t1",
      previous: undefined,
      rotation: undefined,
    });
    expect(peerTokenState(peerSecret({ token: "t2", previous: "t1" }, "r1"))).toEqual({
      token: "t2",
      previous: "t1",
      rotation: "r1",
    });
    expect(peerTokenState(peerSecret({}))).toBeUndefined();
    expect(peerTokenState(undefined)).toBeUndefined();
  });

  it("rotate in one write: token to previous, a new token, the request recorded, the version kept", () => {
    const before = peerSecret({ token: "t1" });
    const after = rotatedPeerSecret(before, "t2", "1733390000");
    expect(peerTokenState(after)).toEqual({ token: "t2", previous: "t1", rotation: "1733390000" });
    // The update carries the version it read: a concurrent change makes it fail, never lose a token.
    expect(after.metadata?.resourceVersion).toBe("42");
    expect(after.metadata?.labels).toEqual(before.metadata?.labels);
    expect(before.data).toEqual({ token: b64("t1") }); // the input is left as it was
  });

  it("a rotation during a rotation's roll-out replaces the oldest token", () => {
    const after = rotatedPeerSecret(peerSecret({ token: "t2", previous: "t1" }, "r1"), "t3", "r2");
    expect(peerTokenState(after)).toEqual({ token: "t3", previous: "t2", rotation: "r2" });
  });

  it("drop the previous token, keeping the rest", () => {
    const after = withoutPreviousToken(peerSecret({ token: "t2", previous: "t1" }, "r1"));
    expect(after.data).toEqual({ token: b64("t2") });
    expect(peerTokenState(after)).toEqual({ token: "t2", previous: undefined, rotation: "r1" });
    expect(after.metadata?.resourceVersion).toBe("42");
  });

  it("new tokens are 256 random bits in a form the coordinator takes", () => {
    const [a, b] = [newPeerToken(), newPeerToken()];
    expect(a).toMatch(/^[\x21-\x7e]{16,256}$/);
    expect(Buffer.from(a, "base64url")).toHaveLength(32);
    expect(a).not.toBe(b);
  });
});

describe("the next step of a rotation", () => {
  const settled = { token: "t1", previous: undefined, rotation: "r1" };
  const rolling = { token: "t2", previous: "t1", rotation: "r2" };

  it.each([
    // [state, requested, rolled out, step]
    [settled, undefined, true, "none"],
    [settled, "r1", true, "none"], // the same value again: nothing
    [{ ...settled, rotation: undefined }, undefined, false, "none"],
    [settled, "r2", false, "rotate"], // no previous token: nothing to wait for
    [{ ...settled, rotation: undefined }, "r1", false, "rotate"],
    [rolling, "r2", false, "none"], // rolling: keep both
    [rolling, "r2", true, "drop-previous"],
    [rolling, undefined, true, "drop-previous"], // the annotation removed: the rotation still completes
    [rolling, "r3", false, "wait"], // the replicas that know only t1 must be gone before t1 goes
    [rolling, "r3", true, "rotate"],
  ] as const)("%j, asked %j, rolled out %j: %s", (state, requested, rolledOut, step) => {
    expect(nextPeerTokenStep(state, requested, rolledOut)).toBe(step);
  });
});

describe("rolled out to a pod template", () => {
  function deployment(hash: string, status: V1Deployment["status"], generation = 3): V1Deployment {
    return {
      metadata: { generation },
      spec: {
        selector: {},
        template: { metadata: { annotations: { "darkbloom.dev/config-hash": hash } } },
      },
      status,
    };
  }
  const done = { observedGeneration: 3, replicas: 2, updatedReplicas: 2, availableReplicas: 2 };

  it("needs that template, seen by the Deployment controller, on every replica, all available", () => {
    expect(rolledOutTo(deployment("h2", done), "h2", 2)).toBe(true);
    expect(rolledOutTo(deployment("h1", done), "h2", 2)).toBe(false);
    expect(rolledOutTo(deployment("h2", { ...done, observedGeneration: 2 }), "h2", 2)).toBe(false);
    expect(rolledOutTo(deployment("h2", { ...done, updatedReplicas: 1 }), "h2", 2)).toBe(false);
    // An old pod still running beside the new ones (the surge).
    expect(rolledOutTo(deployment("h2", { ...done, replicas: 3 }), "h2", 2)).toBe(false);
    expect(rolledOutTo(deployment("h2", { ...done, availableReplicas: 1 }), "h2", 2)).toBe(false);
    expect(rolledOutTo(undefined, "h2", 2)).toBe(false);
    expect(rolledOutTo(deployment("h2", done), undefined, 2)).toBe(false);
  });
});
