import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { ConnectRequest, ConnectResponse, ProviderService } from "@darkbloom/protocol/provider/v1";
import type { Logger } from "../log.js";
import type { ProviderSession } from "./provider-session.js";
import { validateRegister } from "./register-validation.js";
import type { SessionManager } from "./session-manager.js";

export interface ProviderServiceOptions {
  /** A stream that sends no Register within this time is closed. */
  registerTimeoutMs: number;
}

/** The coordinator's side of ProviderService.Connect. */
export function createProviderService(
  sessions: SessionManager,
  log: Logger,
  options: ProviderServiceOptions = { registerTimeoutMs: 10_000 },
): ServiceImpl<typeof ProviderService> {
  return {
    async *connect(requests: AsyncIterable<ConnectRequest>): AsyncIterable<ConnectResponse> {
      const inbound = requests[Symbol.asyncIterator]();
      const first = await firstMessage(inbound, options.registerTimeoutMs);
      if (first.message.case !== "register") {
        throw new ConnectError(
          `the first message must be Register, got ${first.message.case ?? "an empty message"}`,
          Code.InvalidArgument,
        );
      }
      validateRegister(first.message.value);
      const { session, outbound } = sessions.open(first.message.value);
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
  try {
    for (;;) {
      const r = await inbound.next();
      if (r.done) break;
      session.receive(r.value);
    }
  } catch (e) {
    reason = e instanceof ConnectError && e.code === Code.InvalidArgument ? "protocol_error" : "stream_error";
    log.info(
      { providerId: session.handle.id, err: e instanceof Error ? e.message : String(e) },
      "provider stream failed",
    );
  }
  sessions.evict(session.handle.id, reason);
}
