// One chat completion, measured from the client: streamed (SSE) or whole, with the X-Timing phases.
import http from "node:http";
import https from "node:https";
import { TIMING_PHASES, type TimingPhase } from "@darkbloom/coordinator";

export { TIMING_PHASES, type TimingPhase };
/** X-Timing: microseconds per phase. */
export type XTiming = Record<TimingPhase, number>;

export interface RequestError {
  /** What the Errors table counts by: "404 model_not_found", "stream_error server_error", "timeout", ... */
  key: string;
  message: string;
}

/** One request as the load generator saw it. Times are microseconds. */
export interface RequestSample {
  /** Index of the API key that sent it. */
  user: number;
  stream: boolean;
  /** HTTP status; 0 when no response arrived. */
  status: number;
  /** Set when the request failed (any status but 200, an SSE error event, a broken stream, a timeout). */
  error?: RequestError;
  requestId?: string;
  providerId?: string;
  /** Request start to the last byte (or to the failure). */
  e2eUs: number;
  /** Request start to the first SSE event carrying content (streams). */
  ttftUs?: number;
  /** Gaps between consecutive content events (streams). */
  gapsUs: number[];
  /** usage.completion_tokens. */
  completionTokens?: number;
  /** The X-Timing header, when present and complete. */
  timing?: XTiming;
}

export interface RequestTarget {
  /** Full URL of the endpoint, e.g. http://127.0.0.1:8080/v1/chat/completions. */
  url: URL;
  /** A keep-alive agent (http or https, as the URL says). */
  agent: http.Agent;
  timeoutMs: number;
}

/** Reads an X-Timing header value; undefined unless it is a JSON object with every phase a number. */
export function parseXTiming(header: string | string[] | undefined): XTiming | undefined {
  if (typeof header !== "string") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(header);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const record = parsed as Record<string, unknown>;
  const timing = {} as XTiming;
  for (const phase of TIMING_PHASES) {
    const v = record[phase];
    if (typeof v !== "number" || !Number.isFinite(v)) return undefined;
    timing[phase] = v;
  }
  return timing;
}

/** The largest error body kept for its message. */
const ERROR_BODY_LIMIT = 64 * 1024;

/** The key and message of an OpenAI-shaped error body `{error: {message, type, code}}`. */
export function describeErrorBody(prefix: string, body: string): RequestError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { key: `${prefix} unknown`, message: body.slice(0, 200) || "(empty body)" };
  }
  const error = (parsed as { error?: unknown } | null)?.error;
  if (typeof error !== "object" || error === null) {
    return { key: `${prefix} unknown`, message: body.slice(0, 200) };
  }
  const { code, type, message } = error as { code?: unknown; type?: unknown; message?: unknown };
  const label = typeof code === "string" && code !== "" ? code : typeof type === "string" ? type : "unknown";
  return { key: `${prefix} ${label}`, message: typeof message === "string" ? message : "" };
}

/** The text an SSE chunk carries for any choice (chat delta.content or completions text). */
function hasContent(chunk: { choices?: unknown }): boolean {
  if (!Array.isArray(chunk.choices)) return false;
  for (const choice of chunk.choices as Array<{ delta?: { content?: unknown }; text?: unknown }>) {
    const text = choice?.delta?.content ?? choice?.text;
    if (typeof text === "string" && text.length > 0) return true;
  }
  return false;
}

function completionTokensOf(body: { usage?: unknown }): number | undefined {
  const tokens = (body.usage as { completion_tokens?: unknown } | null | undefined)?.completion_tokens;
  return typeof tokens === "number" ? tokens : undefined;
}

/**
 * Sends one POST and measures it. Never rejects: every failure (status, SSE error event, stream cut
 * short, socket error, the per-request timeout, abort) comes back as a sample with `error`.
 */
export function sendRequest(
  target: RequestTarget,
  body: Buffer,
  apiKey: string,
  user: number,
  stream: boolean,
  signal?: AbortSignal,
): Promise<RequestSample> {
  return new Promise((resolve) => {
    const sample: RequestSample = { user, stream, status: 0, e2eUs: 0, gapsUs: [] };
    const start = performance.now();
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let req: http.ClientRequest | undefined;
    const finish = (error?: RequestError) => {
      if (settled) return;
      settled = true;
      sample.e2eUs = (performance.now() - start) * 1000;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (error) sample.error = error;
      resolve(sample);
    };
    const onAbort = () => {
      finish({ key: "aborted", message: "the run was interrupted" });
      req?.destroy();
    };
    const client = target.url.protocol === "https:" ? https : http;
    try {
      req = client.request(
        target.url,
        {
          agent: target.agent,
          method: "POST",
          headers: {
            "content-type": "application/json",
            "content-length": String(body.length),
            authorization: `Bearer ${apiKey}`,
          },
        },
        (res) => {
          sample.status = res.statusCode ?? 0;
          const requestId = res.headers["x-request-id"];
          if (typeof requestId === "string") sample.requestId = requestId;
          const providerId = res.headers["x-provider-id"];
          if (typeof providerId === "string") sample.providerId = providerId;
          const timing = parseXTiming(res.headers["x-timing"]);
          if (timing) sample.timing = timing;
          res.setEncoding("utf8");
          res.on("error", (e) => finish({ key: "socket", message: e.message }));
          res.on("close", () => {
            if (!res.complete) finish({ key: "socket", message: "the connection closed mid-response" });
          });
          if (sample.status !== 200) {
            let text = "";
            res.on("data", (chunk: string) => {
              if (text.length < ERROR_BODY_LIMIT) text += chunk;
            });
            res.on("end", () => finish(describeErrorBody(String(sample.status), text)));
          } else if (String(res.headers["content-type"] ?? "").startsWith("text/event-stream")) {
            readStream(res, sample, start, finish);
          } else {
            let text = "";
            res.on("data", (chunk: string) => {
              text += chunk;
            });
            res.on("end", () => {
              let parsed: { usage?: unknown };
              try {
                parsed = JSON.parse(text) as { usage?: unknown };
              } catch {
                finish({ key: "bad_response", message: "a 200 response that is not JSON" });
                return;
              }
              const tokens = completionTokensOf(parsed);
              if (tokens !== undefined) sample.completionTokens = tokens;
              finish();
            });
          }
        },
      );
    } catch (e) {
      // e.g. a header value Node refuses (an API key with a control character)
      finish({ key: "client_error", message: e instanceof Error ? e.message : String(e) });
      return;
    }
    const sent = req;
    timer = setTimeout(() => {
      finish({ key: "timeout", message: `no complete response within ${target.timeoutMs / 1000} s` });
      sent.destroy();
    }, target.timeoutMs);
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    sent.on("error", (e: NodeJS.ErrnoException) =>
      finish({ key: e.code ? `socket ${e.code}` : "socket", message: e.message }),
    );
    sent.end(body);
  });
}

/** Reads an SSE body: first content (TTFT), gaps between content events, usage, error events, [DONE]. */
function readStream(
  res: http.IncomingMessage,
  sample: RequestSample,
  start: number,
  finish: (error?: RequestError) => void,
): void {
  let buffer = "";
  let done = false;
  let lastContent: number | undefined;
  let streamError: RequestError | undefined;
  const onEvent = (event: string, at: number) => {
    let data = "";
    for (const line of event.split("\n")) {
      if (line.startsWith("data:")) data += data === "" ? line.slice(5).trimStart() : `\n${line.slice(5)}`;
    }
    if (data === "") return; // a comment (keep-alive)
    if (data === "[DONE]") {
      done = true;
      return;
    }
    let chunk: { choices?: unknown; usage?: unknown; error?: unknown };
    try {
      chunk = JSON.parse(data) as typeof chunk;
    } catch {
      streamError ??= { key: "bad_response", message: "an SSE event that is not JSON" };
      return;
    }
    if (chunk.error !== undefined && chunk.error !== null) {
      streamError ??= describeErrorBody("stream_error", data);
      return;
    }
    if (hasContent(chunk)) {
      if (lastContent === undefined) sample.ttftUs = (at - start) * 1000;
      else sample.gapsUs.push((at - lastContent) * 1000);
      lastContent = at;
    }
    const tokens = completionTokensOf(chunk);
    if (tokens !== undefined) sample.completionTokens = tokens;
  };
  res.on("data", (chunk: string) => {
    const at = performance.now();
    buffer += chunk;
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      onEvent(buffer.slice(0, end).replaceAll("\r", ""), at);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf("\n\n");
    }
  });
  res.on("end", () => {
    if (streamError) finish(streamError);
    else if (!done) finish({ key: "stream_incomplete", message: "the stream ended without data: [DONE]" });
    else finish();
  });
}
