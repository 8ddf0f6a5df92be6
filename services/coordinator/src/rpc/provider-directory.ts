import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ProviderSummarySchema } from "@darkbloom/protocol/admin/v1";

/** A connected provider as the admin service reports it. */
export type ProviderSummaryInit = MessageInitShape<typeof ProviderSummarySchema>;

/** What the admin service needs of the live provider fleet. */
export interface ProviderDirectory {
  /** Connected providers sorted by id, optionally only those serving `model`. */
  list(model?: string): ProviderSummaryInit[];
  /**
   * Asks a connected provider to drain; false when no provider has this id. Throws FailedPrecondition
   * naming the replica that holds the provider when another replica does.
   */
  drain(providerId: string, reason: string): boolean;
}
