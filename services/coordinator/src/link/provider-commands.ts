import { randomUUID } from "node:crypto";
import { LoadModelState } from "@darkbloom/protocol/provider/v1";
import type { ProviderSession } from "./provider-session.js";

/** How long a provider drained by an administrator (or a peer, for one) may take to finish. */
export const DRAIN_DEADLINE_MS = 30_000;

/** How long a provider may take to load a model (large ones read gigabytes) before the command gives up. */
export const MODEL_OPERATION_TIMEOUT_MS = 300_000;

/** What a provider answered to a LoadModel or UnloadModel. */
export interface ModelOperationOutcome {
  succeeded: boolean;
  /** The provider's reason when it did not succeed. */
  reason: string;
}

/**
 * Sends a LoadModel or UnloadModel down a provider's stream and waits for its outcome: the admin
 * command's, whichever replica it was made through.
 */
export async function runModelOperation(
  session: ProviderSession,
  modelId: string,
  kind: "load" | "unload",
): Promise<ModelOperationOutcome> {
  const operationId = `op_${randomUUID()}`;
  const status =
    kind === "load"
      ? await session.loadModel(modelId, operationId, MODEL_OPERATION_TIMEOUT_MS)
      : await session.unloadModel(modelId, operationId, MODEL_OPERATION_TIMEOUT_MS);
  return status.state === LoadModelState.SUCCEEDED
    ? { succeeded: true, reason: "" }
    : { succeeded: false, reason: status.reason || `${kind} failed` };
}
