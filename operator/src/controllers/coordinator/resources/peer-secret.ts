import type { V1Secret } from "@kubernetes/client-node";
import type { Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import {
  ANNOTATION_PEER_TOKEN_ROTATION,
  ANNOTATION_ROTATE_PEER_TOKEN,
} from "../../../api/v1alpha1/well-known.js";
import { identity, ownedMeta } from "./labels.js";

/** The key of the replicas' shared peer token in the peer Secret. */
export const PEER_TOKEN_KEY = "token";

/**
 * The key of the token a rotation replaced, kept while the replicas roll to the new one (they
 * accept both meanwhile), then removed.
 */
export const PEER_PREVIOUS_TOKEN_KEY = "previous";

/** `<name>-peer`: the Secret with the token replicas forward requests to each other with. */
export function peerSecretName(coordinator: Coordinator): string {
  return `${identity(coordinator).name}-peer`;
}

/**
 * The peer Secret holding `token`, which the controller generates once and then keeps until a
 * rotation is asked for (../peer-token-rotation.ts): every replica must accept what the others
 * present. A rotation already asked for when the Secret is made is recorded as answered: the token
 * is new anyway.
 */
export function buildPeerSecret(coordinator: Coordinator, token: string): V1Secret {
  const metadata = ownedMeta(coordinator, peerSecretName(coordinator));
  const requested = coordinator.metadata?.annotations?.[ANNOTATION_ROTATE_PEER_TOKEN];
  if (requested !== undefined) metadata.annotations = { [ANNOTATION_PEER_TOKEN_ROTATION]: requested };
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata,
    type: "Opaque",
    data: { [PEER_TOKEN_KEY]: Buffer.from(token, "utf8").toString("base64") },
  };
}
