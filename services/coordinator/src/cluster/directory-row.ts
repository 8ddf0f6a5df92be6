import { trustLevelName } from "@darkbloom/protocol";
import type { ProviderHandle } from "../routing/provider-handle.js";
import { attestationView } from "../trust/attestation-view.js";
import type { ProviderTrust } from "../trust/provider-trust.js";

/** One provider session as the cluster-wide directory records it (migration 0007). */
export interface DirectoryEntry {
  providerId: string;
  /** The coordinator instance holding the session's stream (its coordinator_instances id). */
  instanceId: string;
  /** Where other replicas reach that instance. */
  advertiseUrl: string;
  machineId: string;
  /** Each model's context limit and features (ModelFeature values; absent from older replicas' rows). */
  models: Array<{ id: string; contextLength: number; features?: number[] }>;
  maxBatch: number;
  freeSlots: number;
  /** Trust level name (none, self_signed, tpm, hardware). */
  trustLevel: string;
  trustReasons: string[];
  attested: boolean;
  routable: boolean;
  draining: boolean;
  daemonVersion: string;
  chip: string;
  /** GET /v1/providers/attestation's entry for the provider (undefined without a trust manager). */
  attestation: Record<string, unknown> | undefined;
  /** What another replica needs to route and forward to it (undefined: it cannot). */
  dispatch: DispatchInfo | undefined;
  /** Milliseconds since the epoch. */
  connectedAt: number;
  updatedAt: number;
}

/** Migration 0010's dispatch document. */
export interface DispatchInfo {
  /** Register.encryption_public_key, hex (empty: requests to it go in plaintext). */
  encryptionKey: string;
  /** The P-256 key its response signatures verify with, SEC1 hex (empty: none). */
  signingKey: string;
  usageVersion: number;
  /** Advertised rates (claims). */
  decodeTokensPerSecond: number;
  prefillTokensPerSecond: number;
  /** The models it has in memory (its latest heartbeat's). */
  loadedModels: string[];
  /**
   * The account its share of a request is paid to (its provider token's account, or its unlinked
   * `provider:` account): a replica that serves a consumer through it settles the request, so it
   * must pay whom the holder would. Absent from older replicas' rows (their providers are then paid
   * as unlinked ones, as those replicas did).
   */
  payoutAccount?: string;
}

/** What the writer records of a local session; updatedAt is the database's. */
export function entryOf(
  handle: ProviderHandle,
  trust: ProviderTrust | undefined,
  owner: { instanceId: string; advertiseUrl: string },
): DirectoryEntry {
  const now = Date.now();
  const judgement = trust?.judgement(now);
  return {
    providerId: handle.id,
    instanceId: owner.instanceId,
    advertiseUrl: owner.advertiseUrl,
    machineId: handle.machineId,
    models: [...handle.models.values()].map((m) => ({
      id: m.id,
      contextLength: handle.contextLimit(m.id),
      features: [...m.features],
    })),
    maxBatch: handle.maxBatch,
    freeSlots: handle.freeSlots,
    trustLevel: trustLevelName(handle.trustLevel),
    trustReasons: judgement?.reasons.map((r) => r.code) ?? [],
    attested: handle.attested(now),
    routable: judgement?.routable ?? !handle.deRouted,
    draining: handle.draining,
    daemonVersion: handle.daemonVersion,
    chip: handle.hardware?.chip ?? "",
    attestation: trust ? attestationView(trust, now) : undefined,
    dispatch: {
      encryptionKey: Buffer.from(handle.encryptionKey).toString("hex"),
      signingKey: handle.signingKey ? Buffer.from(handle.signingKey).toString("hex") : "",
      usageVersion: handle.usageVersion,
      decodeTokensPerSecond: handle.decodeTokensPerSecond,
      prefillTokensPerSecond: handle.prefillTokensPerSecond,
      loadedModels: [...handle.loadedModels].sort(),
      payoutAccount: handle.payoutAccount,
    },
    connectedAt: handle.connectedAt,
    updatedAt: 0,
  };
}

export interface DirectoryRow {
  provider_id: string;
  instance_id: string;
  advertise_url: string;
  machine_id: string;
  models: unknown;
  max_batch: number;
  free_slots: number;
  trust_level: string;
  trust_reasons: string[];
  attested: boolean;
  routable: boolean;
  draining: boolean;
  daemon_version: string;
  chip: string;
  attestation: Record<string, unknown> | null;
  dispatch: unknown;
  connected_at: Date;
  updated_at: Date;
}

export function entryFromRow(row: DirectoryRow): DirectoryEntry {
  const models = Array.isArray(row.models) ? row.models : [];
  return {
    providerId: row.provider_id,
    instanceId: row.instance_id,
    advertiseUrl: row.advertise_url,
    machineId: row.machine_id,
    // Written by replicas of this same code; anything malformed is dropped rather than trusted.
    models: models.flatMap((m: unknown) => {
      const o = m as { id?: unknown; contextLength?: unknown; features?: unknown };
      const features = Array.isArray(o?.features) ? o.features.filter((f) => Number.isInteger(f)) : [];
      return typeof o?.id === "string" && typeof o.contextLength === "number"
        ? [{ id: o.id, contextLength: o.contextLength, features }]
        : [];
    }),
    maxBatch: row.max_batch,
    freeSlots: row.free_slots,
    trustLevel: row.trust_level,
    trustReasons: row.trust_reasons,
    attested: row.attested,
    routable: row.routable,
    draining: row.draining,
    daemonVersion: row.daemon_version,
    chip: row.chip,
    attestation: row.attestation ?? undefined,
    dispatch: dispatchFromJson(row.dispatch),
    connectedAt: row.connected_at.getTime(),
    updatedAt: row.updated_at.getTime(),
  };
}

const HEX = /^(?:[0-9a-f]{2})*$/;

/** A dispatch document as another replica wrote it, or undefined when anything in it is off. */
function dispatchFromJson(json: unknown): DispatchInfo | undefined {
  const o = json as Partial<Record<keyof DispatchInfo, unknown>> | null;
  if (
    typeof o?.encryptionKey !== "string" ||
    typeof o.signingKey !== "string" ||
    !HEX.test(o.encryptionKey) ||
    !HEX.test(o.signingKey) ||
    typeof o.usageVersion !== "number" ||
    typeof o.decodeTokensPerSecond !== "number" ||
    typeof o.prefillTokensPerSecond !== "number" ||
    !Array.isArray(o.loadedModels) ||
    !o.loadedModels.every((m) => typeof m === "string") ||
    (o.payoutAccount !== undefined && typeof o.payoutAccount !== "string")
  ) {
    return undefined;
  }
  return {
    encryptionKey: o.encryptionKey,
    signingKey: o.signingKey,
    usageVersion: o.usageVersion,
    decodeTokensPerSecond: o.decodeTokensPerSecond,
    prefillTokensPerSecond: o.prefillTokensPerSecond,
    loadedModels: o.loadedModels as string[],
    ...(typeof o.payoutAccount === "string" ? { payoutAccount: o.payoutAccount } : {}),
  };
}
