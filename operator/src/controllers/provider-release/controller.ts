import { isDeepStrictEqual } from "node:util";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Release } from "@darkbloom/protocol/admin/v1";
import type { Logger } from "pino";
import { type Condition, setCondition } from "../../api/v1alpha1/conditions.js";
import type { Coordinator } from "../../api/v1alpha1/coordinator-types.js";
import {
  type ProviderRelease,
  ProviderReleaseReason as Reason,
  ProviderReleaseConditionType as Type,
} from "../../api/v1alpha1/provider-release-types.js";
import { PROVIDER_RELEASES } from "../../resource-types.js";
import { splitKey } from "../../runtime/controller.js";
import type { EventRecorder } from "../../runtime/events.js";
import type { Informer } from "../../runtime/informer.js";
import { isConflict, isNotFound, type KubeApi, type KubeObject } from "../../runtime/kube-api.js";
import type { ReconcileResult } from "../../runtime/work-queue.js";
import type { CoordinatorAdmin } from "../coordinator-admin.js";
import { secretValue } from "../secret-values.js";
import { adminTls } from "../tls-secret.js";

/** Held while the release may be active in a coordinator: removed once it was deactivated there. */
export const RELEASE_FINALIZER = "darkbloom.dev/deactivate-release";

/** Releases are re-read from the coordinator this often, so a change made outside the resource is undone. */
const RESYNC_MS = 5 * 60_000;
/** A coordinator that cannot be reached is tried again this soon. */
const UNAVAILABLE_RETRY_MS = 10_000;

export interface ProviderReleaseDeps {
  api: KubeApi;
  releases: Informer<ProviderRelease & KubeObject>;
  coordinators: Informer<Coordinator & KubeObject>;
  secrets: Informer<KubeObject>;
  admin: CoordinatorAdmin;
  events: EventRecorder;
  log: Logger;
}

type Outcome = { synced: true; release: Release } | { synced: false; reason: string; message: string };

/**
 * Keeps a ProviderRelease registered in its coordinator through the admin API: created when absent,
 * (de)activated to match `spec.active`, and deactivated before the resource is deleted (the
 * finalizer), so daemons running a binary no release lists are de-routed — the coordinator re-checks
 * its fleet after each change. The coordinator's release record is immutable apart from `active`,
 * as are the resource's identity fields (CEL rules in the CRD): a record that exists with other
 * hashes is a conflict to report, never to overwrite.
 */
export class ProviderReleaseReconciler {
  constructor(private readonly deps: ProviderReleaseDeps) {}

  async reconcile(key: string): Promise<ReconcileResult | undefined> {
    const { namespace, name } = splitKey(key);
    const release = this.deps.releases.get(namespace, name);
    if (release === undefined) return undefined;
    const finalizers = release.metadata?.finalizers ?? [];
    if (release.metadata?.deletionTimestamp !== undefined) {
      if (finalizers.includes(RELEASE_FINALIZER)) await this.finalize(release);
      return undefined;
    }
    if (!finalizers.includes(RELEASE_FINALIZER)) {
      // The update's watch event queues this key again; the sync happens then.
      await this.writeFinalizers(release, [...finalizers, RELEASE_FINALIZER]);
      return undefined;
    }
    const outcome = await this.sync(release);
    await this.writeStatus(release, outcome);
    if (outcome.synced) return { requeueAfterMs: RESYNC_MS };
    return outcome.reason === Reason.CoordinatorUnavailable
      ? { requeueAfterMs: UNAVAILABLE_RETRY_MS }
      : undefined;
  }

  private async sync(release: ProviderRelease & KubeObject): Promise<Outcome> {
    const target = this.coordinatorOf(release);
    if ("reason" in target) return { synced: false, ...target };
    const { spec } = release;
    let stored: Release | undefined;
    try {
      const client = await target.client();
      const { releases } = await client.listReleases({ platform: spec.platform });
      stored = releases.find((r) => r.version === spec.version && r.platform === spec.platform);
      if (stored === undefined) {
        const created = await client.createRelease({
          release: {
            version: spec.version,
            platform: spec.platform,
            binarySha256: spec.binarySha256,
            bundleSha256: spec.bundleSha256,
            url: spec.url,
            minProviderVersion: spec.minProviderVersion,
            active: spec.active,
          },
        });
        void this.deps.events.record(
          release,
          "Normal",
          "Registered",
          `registered in coordinator ${spec.coordinatorRef.name}`,
        );
        stored = created.release;
      } else if (!sameRecord(stored, release)) {
        return {
          synced: false,
          reason: Reason.Conflict,
          message:
            `coordinator ${spec.coordinatorRef.name} already holds release ${spec.version} for ${spec.platform} ` +
            "with other hashes, URL or minimum version; releases are immutable: use a new version",
        };
      } else if (stored.active !== spec.active) {
        const updated = await client.setReleaseActive({
          version: spec.version,
          platform: spec.platform,
          active: spec.active,
        });
        void this.deps.events.record(
          release,
          "Normal",
          spec.active ? "Activated" : "Deactivated",
          `in coordinator ${spec.coordinatorRef.name}`,
        );
        stored = updated.release;
      }
    } catch (error) {
      return { synced: false, ...describeCallFailure(error) };
    }
    return stored
      ? { synced: true, release: stored }
      : { synced: false, reason: Reason.CoordinatorError, message: "no release returned" };
  }

  /** Deactivates the release in its coordinator, then lets the resource go. */
  private async finalize(release: ProviderRelease & KubeObject): Promise<void> {
    const target = this.coordinatorOf(release);
    if ("reason" in target) {
      // No coordinator, no release to deactivate: the record went with it (or never existed).
      if (target.reason !== Reason.CoordinatorNotFound)
        throw new Error(`cannot deactivate release: ${target.message}`);
    } else {
      try {
        const client = await target.client();
        await client.setReleaseActive({
          version: release.spec.version,
          platform: release.spec.platform,
          active: false,
        });
      } catch (error) {
        if (!(error instanceof ConnectError && error.code === Code.NotFound)) {
          throw new Error(`cannot deactivate release: ${describeCallFailure(error).message}`);
        }
      }
    }
    await this.writeFinalizers(
      release,
      (release.metadata?.finalizers ?? []).filter((f) => f !== RELEASE_FINALIZER),
    );
  }

  private coordinatorOf(
    release: ProviderRelease & KubeObject,
  ): { client: () => ReturnType<CoordinatorAdmin["client"]> } | { reason: string; message: string } {
    const namespace = release.metadata?.namespace ?? "";
    const name = release.spec.coordinatorRef.name;
    const coordinator = this.deps.coordinators.get(namespace, name);
    if (coordinator === undefined || coordinator.metadata?.deletionTimestamp !== undefined) {
      return {
        reason: Reason.CoordinatorNotFound,
        message: `Coordinator ${name} does not exist in ${namespace}`,
      };
    }
    const ref = coordinator.spec.adminKeySecretRef;
    const adminKey = secretValue(this.deps.secrets, namespace, ref.name, ref.key);
    if (typeof adminKey !== "string") return { reason: Reason.AdminKeyMissing, message: adminKey.message };
    const tls = adminTls(this.deps.secrets, coordinator);
    if (tls !== undefined && "reason" in tls)
      return { reason: Reason.TLSSecretMissing, message: tls.message };
    if ((coordinator.status?.readyReplicas ?? 0) === 0) {
      return { reason: Reason.CoordinatorUnavailable, message: `Coordinator ${name} has no ready replica` };
    }
    return {
      client: () => this.deps.admin.client(namespace, name, coordinator.spec.service.port, adminKey, tls),
    };
  }

  private async writeFinalizers(release: ProviderRelease & KubeObject, finalizers: string[]): Promise<void> {
    try {
      await this.deps.api.update(PROVIDER_RELEASES, {
        ...release,
        metadata: { ...release.metadata, finalizers },
      });
    } catch (error) {
      // Gone already (another writer removed the last finalizer): nothing left to do.
      if (!isNotFound(error)) throw error;
    }
  }

  private async writeStatus(release: ProviderRelease & KubeObject, outcome: Outcome): Promise<void> {
    const generation = release.metadata?.generation ?? 0;
    const now = new Date();
    let conditions: Condition[] = release.status?.conditions ?? [];
    const status: NonNullable<ProviderRelease["status"]> = {
      ...release.status,
      observedGeneration: generation,
    };
    if (outcome.synced) {
      conditions = setCondition(
        conditions,
        {
          type: Type.Synced,
          status: "True",
          reason: Reason.Synced,
          message: "the coordinator holds this release as specified",
        },
        generation,
        now,
      );
      conditions = setCondition(
        conditions,
        {
          type: Type.Accepted,
          status: outcome.release.active ? "True" : "False",
          reason: outcome.release.active ? Reason.Active : Reason.Inactive,
          message: outcome.release.active
            ? "daemons running this binary are routed to"
            : "the release is registered but inactive",
        },
        generation,
        now,
      );
      const created = outcome.release.createdAt;
      if (created)
        status.registeredAt = timestampDate(created)
          .toISOString()
          .replace(/\.\d{3}Z$/, "Z");
    } else {
      conditions = setCondition(
        conditions,
        { type: Type.Synced, status: "False", reason: outcome.reason, message: outcome.message },
        generation,
        now,
      );
      if (outcome.reason === Reason.Conflict) {
        conditions = setCondition(
          conditions,
          { type: Type.Accepted, status: "False", reason: Reason.Conflict, message: outcome.message },
          generation,
          now,
        );
      }
    }
    status.conditions = conditions;
    // Compared as values: the API server may return the keys of a custom resource in another order.
    if (isDeepStrictEqual(status, release.status ?? {})) return;
    if (!outcome.synced) void this.deps.events.record(release, "Warning", outcome.reason, outcome.message);
    try {
      await this.deps.api.update(PROVIDER_RELEASES, { ...release, status }, "status");
    } catch (error) {
      // A newer version of the resource is on its way through the watch: its reconcile writes then.
      if (!isConflict(error) && !isNotFound(error)) throw error;
    }
  }
}

function sameRecord(stored: Release, release: ProviderRelease): boolean {
  const { spec } = release;
  return (
    stored.binarySha256 === spec.binarySha256 &&
    stored.bundleSha256 === spec.bundleSha256 &&
    stored.url === spec.url &&
    stored.minProviderVersion === spec.minProviderVersion
  );
}

/** Node's codes of a certificate that failed verification (the chain, the name, the dates). */
const CERTIFICATE_ERRORS = new Set([
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_SIGNATURE_FAILURE",
]);

function describeCallFailure(error: unknown): { reason: string; message: string } {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  if (typeof cause?.code === "string" && CERTIFICATE_ERRORS.has(cause.code)) {
    return {
      reason: Reason.CertificateRejected,
      message:
        `the coordinator's certificate failed verification (${String(cause.message)}): give the TLS ` +
        "Secret the issuing CA as ca.crt, or set spec.tls.serverName to a name the certificate holds",
    };
  }
  if (error instanceof ConnectError) {
    if (error.code === Code.Unavailable || error.code === Code.DeadlineExceeded) {
      return {
        reason: Reason.CoordinatorUnavailable,
        message: `the coordinator's admin API did not answer: ${error.rawMessage}`,
      };
    }
    if (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied) {
      return {
        reason: Reason.AdminKeyRejected,
        message: "the coordinator refused the admin key from the Coordinator's admin-key Secret",
      };
    }
    if (error.code === Code.InvalidArgument) {
      return { reason: Reason.Invalid, message: `the coordinator refused the release: ${error.rawMessage}` };
    }
    return { reason: Reason.CoordinatorError, message: error.rawMessage };
  }
  return { reason: Reason.CoordinatorError, message: (error as Error).message };
}
