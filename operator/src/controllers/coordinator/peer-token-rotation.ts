import { randomBytes } from "node:crypto";
import type { V1Deployment } from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  ANNOTATION_CONFIG_HASH,
  ANNOTATION_PEER_TOKEN_ROTATION,
  ANNOTATION_ROTATE_PEER_TOKEN,
} from "../../api/v1alpha1/well-known.js";
import { SECRETS } from "../../resource-types.js";
import type { EventRecorder } from "../../runtime/events.js";
import { isConflict, isNotFound, type KubeApi, type KubeObject } from "../../runtime/kube-api.js";
import { PEER_PREVIOUS_TOKEN_KEY, PEER_TOKEN_KEY } from "./resources/peer-secret.js";
import { deploymentRolledOut } from "./status.js";

// Rotating the replicas' peer token without a refused forward. A person asks with an annotation on
// the Coordinator; the controller then
//  1. moves `token` to `previous` and writes a new `token` (one Secret update): the pods roll once,
//     and while they do, the new replicas (new token, previous accepted) and the old ones (previous
//     token only) accept each other: the new ones send the new token and, refused, the previous one;
//  2. once the Deployment has rolled out to that pod template (every replica updated and
//     available), removes `previous` (the pods roll again, harmlessly: they all know the new token),
//     so that the old token, perhaps leaked, stops working.

/** The peer Secret as the controller reads it. */
export type PeerSecret = KubeObject & { data?: Record<string, string> };

/** What the peer Secret holds, decoded. */
export interface PeerTokenState {
  token: string;
  /** The token the last rotation replaced, while the replicas roll. */
  previous: string | undefined;
  /** The rotation request (the Coordinator's annotation value) the current token answered. */
  rotation: string | undefined;
}

/** The next step of a rotation, given the state, the request and whether the pods rolled out. */
export type PeerTokenStep = "none" | "rotate" | "drop-previous" | "wait";

/** The peer Secret's tokens; undefined without a token (the Secret must then be made anew). */
export function peerTokenState(secret: PeerSecret | undefined): PeerTokenState | undefined {
  const token = decoded(secret?.data?.[PEER_TOKEN_KEY]);
  if (token === undefined) return undefined;
  return {
    token,
    previous: decoded(secret?.data?.[PEER_PREVIOUS_TOKEN_KEY]),
    rotation: secret?.metadata?.annotations?.[ANNOTATION_PEER_TOKEN_ROTATION],
  };
}

/**
 * What to do next. A request (an annotation value the Secret has not recorded) rotates at once
 * unless the last rotation's roll is still going: the replicas that know only the token before it
 * must be gone before it may be dropped. The previous token is dropped once the pods rolled out.
 */
export function nextPeerTokenStep(
  state: PeerTokenState,
  requested: string | undefined,
  rolledOut: boolean,
): PeerTokenStep {
  if (requested !== undefined && requested !== state.rotation) {
    return state.previous === undefined || rolledOut ? "rotate" : "wait";
  }
  return state.previous !== undefined && rolledOut ? "drop-previous" : "none";
}

/** The Secret after a rotation: `token` moved to `previous`, the new token, the request recorded. */
export function rotatedPeerSecret(secret: PeerSecret, token: string, requested: string): PeerSecret {
  const data = secret.data ?? {};
  return {
    ...secret,
    metadata: {
      ...secret.metadata,
      annotations: { ...secret.metadata?.annotations, [ANNOTATION_PEER_TOKEN_ROTATION]: requested },
    },
    data: {
      ...data,
      [PEER_TOKEN_KEY]: encoded(token),
      [PEER_PREVIOUS_TOKEN_KEY]: data[PEER_TOKEN_KEY] ?? "",
    },
  };
}

/** The Secret once every replica runs the new token: without `previous`. */
export function withoutPreviousToken(secret: PeerSecret): PeerSecret {
  const { [PEER_PREVIOUS_TOKEN_KEY]: _dropped, ...data } = secret.data ?? {};
  return { ...secret, data };
}

/**
 * Whether the Deployment runs the pod template of `configHash` on every replica: the template is
 * that one, the Deployment controller has seen it, and every replica is updated and available.
 */
export function rolledOutTo(
  deployment: V1Deployment | undefined,
  configHash: string | undefined,
  desired: number,
): boolean {
  return (
    deployment !== undefined &&
    configHash !== undefined &&
    deployment.spec?.template.metadata?.annotations?.[ANNOTATION_CONFIG_HASH] === configHash &&
    deploymentRolledOut(deployment, desired)
  );
}

export interface PeerTokenRotationDeps {
  api: KubeApi;
  events: EventRecorder;
  log: Logger;
}

/** Takes the next step of a Coordinator's peer token rotation, if any (one Secret write at most). */
export class PeerTokenRotation {
  constructor(private readonly deps: PeerTokenRotationDeps) {}

  async step(coordinator: KubeObject, secret: PeerSecret, rolledOut: boolean): Promise<void> {
    const state = peerTokenState(secret);
    if (state === undefined) return;
    const requested = coordinator.metadata?.annotations?.[ANNOTATION_ROTATE_PEER_TOKEN];
    const step = nextPeerTokenStep(state, requested, rolledOut);
    const where = { coordinator: coordinator.metadata?.name, namespace: coordinator.metadata?.namespace };
    switch (step) {
      case "none":
        return;
      case "wait":
        this.deps.log.info(
          where,
          "peer token rotation asked for: waiting for the last rotation's roll to complete",
        );
        return;
      case "rotate":
        if (!(await this.write(rotatedPeerSecret(secret, newPeerToken(), requested ?? "")))) return;
        this.deps.log.info({ ...where, rotation: requested }, "peer token rotated");
        void this.deps.events.record(
          coordinator,
          "Normal",
          "PeerTokenRotated",
          "the peer token is rotated: the replicas roll, accepting the previous token until all run the new one",
        );
        return;
      case "drop-previous":
        if (!(await this.write(withoutPreviousToken(secret)))) return;
        this.deps.log.info(where, "previous peer token dropped");
        void this.deps.events.record(
          coordinator,
          "Normal",
          "PeerTokenPreviousDropped",
          "every replica runs the new peer token: the previous one is dropped (the replicas roll once more)",
        );
        return;
    }
  }

  /**
   * Writes the Secret at the version it was read at: false when it changed meanwhile (or went),
   * as the watch then brings the new version and another reconcile decides again. A stale cache
   * can therefore never rotate twice for one request.
   */
  private async write(secret: PeerSecret): Promise<boolean> {
    try {
      await this.deps.api.update(SECRETS, secret);
      return true;
    } catch (error) {
      if (isConflict(error) || isNotFound(error)) return false;
      throw error;
    }
  }
}

/** A new peer token: 256 random bits, printable (the coordinator takes 16 to 256 printable characters). */
export function newPeerToken(): string {
  return randomBytes(32).toString("base64url");
}

function decoded(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : Buffer.from(value, "base64").toString("utf8");
}

function encoded(value: string): string {
  return Buffer.from(value, "utf8").toString("base64");
}
