import type { Endpoint } from "@darkbloom/protocol/provider/v1";
import { SealedBoxError } from "@darkbloom/protocol/sealed-box";
import type { CallObserver, InferenceRequestInit } from "../link/provider-session.js";
import type { DispatchTarget } from "../routing/provider-pool.js";
import type { AttemptOutcome } from "./attempt.js";
import { type SealedRequest, sealRequest } from "./sealing.js";
import type { Timing } from "./timing.js";

/** An InferenceRequest's fields, its body still the consumer's bytes. */
export interface OpenRequest {
  requestId: string;
  model: string;
  endpoint: Endpoint;
  body: Uint8Array;
  maxTokens: number;
  stream: boolean;
  promptTokensEstimate: number;
}

/**
 * Seals the request's body to the provider's key with a fresh ephemeral key pair (plaintext only to
 * a provider without a key, which a coordinator that requires encryption never registers) and sends
 * it. Undefined once sent, else how the attempt ends: a key that cannot be sealed to untrusts the
 * provider, a closed stream is a departure; either way another provider may serve the request.
 */
export function dispatchSealed(
  session: DispatchTarget,
  requireEncryption: boolean,
  timing: Timing,
  request: OpenRequest,
  observer: CallObserver,
): AttemptOutcome | undefined {
  let sealed: SealedRequest | undefined;
  if (session.encryptionKey.byteLength > 0 || requireEncryption) {
    const sealStart = performance.now();
    try {
      sealed = sealRequest(session.encryptionKey, request.body);
    } catch (e) {
      const message = e instanceof SealedBoxError ? e.message : "the request could not be sealed";
      session.markUntrusted("bad_encryption_key", message);
      return { kind: "retry", reason: "bad_encryption_key" };
    }
    timing.add("encrypt", sealStart);
  }
  const body: InferenceRequestInit["body"] = sealed
    ? { case: "sealedBody", value: sealed.box }
    : { case: "plaintextBody", value: request.body };
  if (session.dispatch({ ...request, body }, observer, sealed?.key)) return undefined;
  sealed?.key.wipe();
  return { kind: "retry", reason: "stream_closed", departed: true };
}
