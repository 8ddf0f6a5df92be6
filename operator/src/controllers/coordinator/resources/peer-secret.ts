import type { V1Secret } from "@kubernetes/client-node";
import type { Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import { identity, ownedMeta } from "./labels.js";

/** The key of the replicas' shared peer token in the peer Secret. */
export const PEER_TOKEN_KEY = "token";

/** `<name>-peer`: the Secret with the token replicas forward requests to each other with. */
export function peerSecretName(coordinator: Coordinator): string {
  return `${identity(coordinator).name}-peer`;
}

/**
 * The peer Secret holding `token`, which the controller generates once and then keeps: every replica
 * must present the same one, so it never changes under running pods.
 */
export function buildPeerSecret(coordinator: Coordinator, token: string): V1Secret {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: ownedMeta(coordinator, peerSecretName(coordinator)),
    type: "Opaque",
    data: { [PEER_TOKEN_KEY]: Buffer.from(token, "utf8").toString("base64") },
  };
}
