import { createRequire } from "node:module";
import { PROTOCOL_VERSION } from "@darkbloom/protocol";
import type { ClusterProviders } from "../../cluster/cluster-view.js";
import {
  internalError,
  invalidRequest,
  isApiError,
  missingParameter,
  resourceNotFound,
} from "../../errors/index.js";
import type { Logger } from "../../log.js";
import type { Release } from "../../releases/release-store.js";
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
 * GET /v1/providers/attestation: the attestation of every provider connected to the cluster and how
 * the replica holding it judges it (the directory carries each one: every replica answers the same).
 * Public (no API key): anyone may check what machine and binary a provider id stands for.
 */
export function attestationsHandler(cluster: ClusterProviders): Handler {
  return (_req, res) => {
    const data = cluster.all().flatMap((e) => (e.attestation ? [e.attestation] : []));
    sendJson(
      res,
      200,
      { object: "list", data },
      { "X-Request-ID": newRequestId(), "cache-control": "no-store" },
    );
  };
}

function query(req: HttpRequest): URLSearchParams {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  return new URLSearchParams(q === -1 ? "" : url.slice(q + 1));
}
