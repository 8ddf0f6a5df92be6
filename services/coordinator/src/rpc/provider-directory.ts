import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ProviderSummarySchema } from "@darkbloom/protocol/admin/v1";
import type { ModelOperationOutcome } from "../link/provider-commands.js";

/** A connected provider as the admin service reports it. */
export type ProviderSummaryInit = MessageInitShape<typeof ProviderSummarySchema>;

/** What the admin service needs of the live provider fleet. */
export interface ProviderDirectory {
  /** Connected providers sorted by id, optionally only those serving `model`. */
  list(model?: string): ProviderSummaryInit[];
  /**
   * Asks a connected provider to drain, through the replica that holds it when another one does;
   * false when no provider has this id. Throws FailedPrecondition naming that replica when it
   * cannot be reached (no peer token here, or the call failed).
   */
  drain(providerId: string, reason: string): Promise<boolean>;
  /**
   * Has a connected provider load or unload one of its models, through the replica that holds it
   * when another one does, and resolves with the provider's outcome; undefined when no provider
   * has this id. Throws FailedPrecondition as drain() does when that replica cannot be reached.
   */
  modelOperation(
    providerId: string,
    modelId: string,
    kind: "load" | "unload",
  ): Promise<ModelOperationOutcome | undefined>;
}
