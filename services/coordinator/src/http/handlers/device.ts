import type { DeviceLogin } from "../../accounts/device-login.js";
import { accountEndpoint, type JsonEndpointDeps, publicEndpoint, requiredString } from "../json-endpoint.js";
import type { Handler, HttpRequest } from "../types.js";

export interface DeviceHandlerDeps extends JsonEndpointDeps {
  deviceLogin: DeviceLogin;
  /** Shown as verification_uri; by default the approval endpoint at the address the caller used. */
  verificationUri?: string | undefined;
}

/**
 * POST /v1/device/code (no auth; one bucket per client address):
 * `{device_code, user_code, verification_uri, expires_in, interval}` (RFC 8628 section 3.2).
 */
export function deviceCodeHandler(deps: DeviceHandlerDeps): Handler {
  return publicEndpoint(
    deps,
    async ({ req }) => {
      const started = await deps.deviceLogin.start();
      return {
        device_code: started.deviceCode,
        user_code: started.userCode,
        verification_uri: deps.verificationUri ?? `${origin(req)}/v1/device/approve`,
        expires_in: started.expiresIn,
        interval: started.interval,
      };
    },
    { limitByAddress: true },
  );
}

/**
 * POST /v1/device/token `{device_code}` (no auth): `{provider_token, account_id, token_type}` once
 * the user code is approved, exactly once; before that HTTP 400 with error.code
 * authorization_pending, slow_down, expired_token, access_denied or invalid_grant.
 */
export function deviceTokenHandler(deps: DeviceHandlerDeps): Handler {
  return publicEndpoint(
    deps,
    async ({ body }) => {
      const { providerToken, accountId } = await deps.deviceLogin.exchange(
        requiredString(body, "device_code"),
      );
      return { provider_token: providerToken, account_id: accountId, token_type: "provider" };
    },
    { limitByAddress: false },
  );
}

/** POST /v1/device/approve `{user_code}` (API key): links the waiting login to the caller's account. */
export function deviceApproveHandler(deps: DeviceHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ body, principal }) => {
    const { userCode } = await deps.deviceLogin.approve(
      principal.accountId,
      requiredString(body, "user_code"),
    );
    return { user_code: userCode, account_id: principal.accountId, approved: true };
  });
}

/** POST /v1/device/deny `{user_code}` (API key): refuses the waiting login (the daemon gets access_denied). */
export function deviceDenyHandler(deps: DeviceHandlerDeps): Handler {
  return accountEndpoint(deps, async ({ body, principal }) => {
    const { userCode } = await deps.deviceLogin.deny(principal.accountId, requiredString(body, "user_code"));
    return { user_code: userCode, denied: true };
  });
}

/**
 * POST /v1/device/revoke `{provider_token}` (no auth: holding the token is the authority, as in
 * RFC 7009): the token stops linking new provider sessions. `revoked` is false for an unknown token.
 */
export function deviceRevokeHandler(deps: DeviceHandlerDeps): Handler {
  return publicEndpoint(
    deps,
    async ({ body }) => ({
      revoked: await deps.deviceLogin.revokeProviderToken(requiredString(body, "provider_token")),
    }),
    { limitByAddress: false },
  );
}

function origin(req: HttpRequest): string {
  const forwarded = req.headers["x-forwarded-proto"];
  const scheme = (Array.isArray(forwarded) ? forwarded[0] : forwarded) === "https" ? "https" : "http";
  const host = req.headers.host ?? req.headers[":authority"];
  const name = typeof host === "string" && /^[A-Za-z0-9.:[\]-]{1,255}$/.test(host) ? host : "localhost";
  return `${scheme}://${name}`;
}
