import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { ConnectRequest, ConnectResponse, ProviderService } from "@darkbloom/protocol/provider/v1";
import type { FailedAuthLimiter } from "../auth/failed-auth-limiter.js";
import { isApiError } from "../errors/index.js";
import { CLIENT_ADDRESS } from "../http/client-address.js";
import type { Logger } from "../log.js";
import { toConnectError } from "../rpc/api-error-to-connect.js";
import type { ProviderSession } from "./provider-session.js";
import { validateRegister } from "./register-validation.js";
import type { SessionManager } from "./session-manager.js";

export interface ProviderServiceOptions {
  /** A stream that sends no Register within this time is closed. */
  registerTimeoutMs: number;
  /**
   * Resolves a Register's account_token (from `darkbloom login`) to the account its earnings are
   * paid into; null for a token that is unknown, revoked or whose account is disabled. Without it,
   * account tokens are refused.
   */
  resolveAccountToken?: (token: string) => Promise<string | null>;
  /**
   * Failed credential checks per client address (shared with API keys): an account token costs a
   * query to check, so an address past its burst of bad ones is refused before the query.
   */
  authFailures?: FailedAuthLimiter;
  /**
   * Refuse a Register without a 32-byte X25519 encryption_public_key (default true). Off only in
   * development: such providers are sent plaintext requests.
   */
  requireEncryption: boolean;
}

const DEFAULT_OPTIONS: ProviderServiceOptions = { registerTimeoutMs: 10_000, requireEncryption: true };

/** The coordinator's side of ProviderService.Connect. */
export function createProviderService(
  sessions: SessionManager,
  log: Logger,
  options: Partial<ProviderServiceOptions> = {},
): ServiceImpl<typeof ProviderService> {
  const { registerTimeoutMs, resolveAccountToken, requireEncryption, authFailures } = {
    ...DEFAULT_OPTIONS,
    ...options,
  };
  return {
    async *connect(
      requests: AsyncIterable<ConnectRequest>,
      context: HandlerContext,
    ): AsyncIterable<ConnectResponse> {
      const inbound = requests[Symbol.asyncIterator]();
      const first = await firstMessage(inbound, registerTimeoutMs);
      if (first.message.case !== "register") {
        throw new ConnectError(
          `the first message must be Register, got ${first.message.case ?? "an empty message"}`,
          Code.InvalidArgument,
        );
      }
      validateRegister(first.message.value);
      if (requireEncryption && first.message.value.encryptionPublicKey.length !== 32) {
        log.info({ machineId: first.message.value.machineId }, "provider refused: no encryption key");
        throw new ConnectError(
          "invalid Register: encryption_public_key must be a 32-byte X25519 key; this coordinator " +
            "only dispatches end-to-end encrypted requests",
          Code.InvalidArgument,
        );
      }
      const token = first.message.value.accountToken;
      let payoutAccount: string | undefined;
      if (token !== "") {
        const address = context.values.get(CLIENT_ADDRESS);
        try {
          authFailures?.take(address);
        } catch (e) {
          if (isApiError(e)) throw toConnectError(e);
          throw e;
        }
        payoutAccount = (await resolveAccountToken?.(token)) ?? undefined;
        if (payoutAccount !== undefined) authFailures?.refund(address);
        if (payoutAccount === undefined) {
          log.info({ machineId: first.message.value.machineId }, "provider refused: invalid account token");
          throw new ConnectError(
            "invalid Register: account_token is not valid (unknown, revoked, or its account is disabled); " +
              "run `darkbloom login` again, or remove the token to serve unlinked",
            Code.Unauthenticated,
          );
        }
      }
      // The machine id's binding is checked (and made, for a first attestation) once the Register is
      // otherwise acceptable, so that a refused token or key cannot bind a machine id.
      const verdict = await sessions.admit(first.message.value);
      const { session, outbound } = sessions.open(first.message.value, { payoutAccount, verdict });
      void pump(inbound, session, sessions, log);
      try {
        yield* outbound;
      } finally {
        sessions.evict(session.handle.id, "stream_closed");
      }
    },
  };
}

async function firstMessage(
  inbound: AsyncIterator<ConnectRequest>,
  timeoutMs: number,
): Promise<ConnectRequest> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ConnectError(`no Register within ${timeoutMs} ms`, Code.DeadlineExceeded)),
      timeoutMs,
    );
  });
  try {
    const r = await Promise.race([inbound.next(), timeout]);
    if (r.done) throw new ConnectError("stream ended before Register", Code.InvalidArgument);
    return r.value;
  } finally {
    clearTimeout(timer);
  }
}

/** Reads the provider's messages until its stream ends, then evicts it. */
async function pump(
  inbound: AsyncIterator<ConnectRequest>,
  session: ProviderSession,
  sessions: SessionManager,
  log: Logger,
): Promise<void> {
  let reason = "stream_closed";
  let error: ConnectError | undefined;
  try {
    for (;;) {
      const r = await inbound.next();
      if (r.done) break;
      session.receive(r.value);
    }
  } catch (e) {
    reason = e instanceof ConnectError && e.code === Code.InvalidArgument ? "protocol_error" : "stream_error";
    // A message that did not decode (a broken envelope, bytes that are not a ConnectRequest) ends the
    // stream with that error, so the provider learns why it was dropped rather than seeing a clean end.
    if (e instanceof ConnectError) error = e;
    log.info(
      { providerId: session.handle.id, err: e instanceof Error ? e.message : String(e) },
      "provider stream failed",
    );
  }
  sessions.evict(session.handle.id, reason, error);
}
