import type * as http2 from "node:http2";
import { Http2SessionManager } from "@connectrpc/connect-node";

const ignore = () => undefined;

/**
 * connect-node's Http2SessionManager, with each HTTP/2 connection it opens guarded against an
 * "error" event that no one hears. A GOAWAY (NO_ERROR) on a connection without open streams, what a coordinator sends as it shuts down, makes the manager destroy the
 * connection with an error that Node emits only once the socket has closed; a manager that leaves
 * that state first (abort(), which a provider calls as its stream ends, or a request that reconnects)
 * has removed its listeners by then, and the error becomes an uncaught exception that kills the
 * process (connectrpc/connect-es#1768): a provider daemon whose coordinator restarted, a replica
 * whose peer rolled. Every failure still reaches the streams and the manager's state; the guard only
 * keeps the late event from crashing the process.
 */
export class GuardedSessionManager extends Http2SessionManager {
  private readonly guarded = new WeakSet<http2.Http2Session>();

  override async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(method, path, headers, options);
    const session = stream.session;
    if (session && !this.guarded.has(session)) {
      this.guarded.add(session);
      session.on("error", ignore);
    }
    return stream;
  }
}
