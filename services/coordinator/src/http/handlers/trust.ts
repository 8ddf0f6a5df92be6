import { createRequire } from "node:module";
import { PROTOCOL_VERSION, trustLevelName } from "@darkbloom/protocol";
import {
  internalError,
  invalidRequest,
  isApiError,
  missingParameter,
  resourceNotFound,
} from "../../errors/index.js";
import type { Logger } from "../../log.js";
import type { Release } from "../../releases/release-store.js";
import { signerName } from "../../trust/provider-trust.js";
import type { TrustManager } from "../../trust/trust-manager.js";
import { newRequestId } from "../request-id.js";
import { sendError, sendJson } from "../respond.js";
import type { Handler, HttpRequest } from "../types.js";

/** The coordinator's version, from its package.json (src/ and dist/ both sit beside it). */
export const COORDINATOR_VERSION: string = (
  createRequire(import.meta.url)("../../../package.json") as { version: string }
).version;

const PLATFORM = /^[a-z0-9]+(?:-[a-z0-9_]+){1,3}$/;

/** GET /api/version: what a daemon needs to know before it registers or updates. Public. */
export function versionHandler(trust: TrustManager): Handler {
  return (_req, res) =>
    sendJson(
      res,
      200,
      {
        version: COORDINATOR_VERSION,
        protocol_version: PROTOCOL_VERSION,
        min_provider_version: trust.minProviderVersion || null,
      },
      { "X-Request-ID": newRequestId(), "cache-control": "no-store" },
    );
}

/**
 * GET /v1/releases/latest?platform=linux-x64: the newest active release for a platform (semantic
 * version precedence), for `darkbloom update`. Public; 404 release_not_found when there is none.
 */
export function latestReleaseHandler(
  releases: { latest(platform: string): Promise<Release | undefined> },
  log: Logger,
): Handler {
  return async (req, res) => {
    const headers = { "X-Request-ID": newRequestId(), "cache-control": "no-store" };
    try {
      const platform = query(req).get("platform");
      if (platform === null || platform === "") throw missingParameter("platform");
      if (!PLATFORM.test(platform)) {
        throw invalidRequest(
          `'platform' must look like darwin-arm64 or linux-x64, got ${JSON.stringify(platform.slice(0, 64))}.`,
          "platform",
          "invalid_platform",
        );
      }
      const release = await releases.latest(platform);
      if (!release) {
        throw resourceNotFound(
          `No active release exists for platform ${platform}.`,
          "release_not_found",
          "platform",
        );
      }
      sendJson(
        res,
        200,
        {
          version: release.version,
          platform: release.platform,
          binary_sha256: release.binarySha256,
          bundle_sha256: release.bundleSha256,
          url: release.url,
          min_provider_version: release.minProviderVersion || null,
          created_at: release.createdAt.toISOString(),
        },
        headers,
      );
    } catch (e) {
      if (!isApiError(e)) log.error({ err: e }, "latest release lookup failed");
      sendError(res, isApiError(e) ? e : internalError(), headers);
    }
  };
}

/**
 * GET /v1/providers/attestation: every connected provider's attestation and how the coordinator
 * judges it. Public (no API key): anyone may check what machine and binary a provider id stands for.
 */
export function attestationsHandler(trust: TrustManager): Handler {
  return (_req, res) => {
    const now = Date.now();
    const data = trust
      .all()
      .sort((a, b) => a.providerId.localeCompare(b.providerId))
      .map((t) => {
        const h = t.handle;
        const j = t.judgement(now);
        const presented = t.presented;
        const last = t.lastChallenge;
        return {
          provider_id: h.id,
          machine_id: h.machineId,
          daemon_version: h.daemonVersion,
          connected_at: new Date(h.connectedAt).toISOString(),
          trust_level: trustLevelName(j.trustLevel),
          routable: j.routable,
          attested: j.attested,
          reasons: j.reasons.map((r) => ({ code: r.code, message: r.message })),
          signer: signerName(presented?.signer),
          public_key: presented && presented.publicKey.length > 0 ? b64(presented.publicKey) : null,
          attestation:
            presented && presented.blob.length > 0
              ? {
                  blob: b64(presented.blob),
                  signature: b64(presented.signature),
                  verified: t.attestation !== undefined,
                  document: t.attestation?.document ?? null,
                }
              : null,
          last_challenge: last
            ? {
                issued_at: new Date(last.issuedAt).toISOString(),
                completed_at:
                  last.completedAt === undefined ? null : new Date(last.completedAt).toISOString(),
                result: last.result,
                reason: last.reason ? { code: last.reason.code, message: last.reason.message } : null,
              }
            : null,
          last_passed_challenge_at:
            t.lastPassedAt === undefined ? null : new Date(t.lastPassedAt).toISOString(),
        };
      });
    sendJson(
      res,
      200,
      { object: "list", data },
      { "X-Request-ID": newRequestId(), "cache-control": "no-store" },
    );
  };
}

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}

function query(req: HttpRequest): URLSearchParams {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  return new URLSearchParams(q === -1 ? "" : url.slice(q + 1));
}
