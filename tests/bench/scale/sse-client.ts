// A consumer of one streamed chat completion that records when each token arrived and checks the
// stream's shape as it goes (one [DONE], last; no error event).
import http from "node:http";

export interface StreamResult {
  status: number;
  /** Request sent to the first body byte (headers leave with the first token), ms. */
  ttfbMs: number;
  /** Request sent to the first content event, ms. */
  ttftMs: number;
  /** Request sent to the end of the body, ms. */
  totalMs: number;
  /** Arrival of each content event, ms after the request was sent. */
  tokenTimesMs: number[];
  /** The streamed text, concatenated. */
  text: string;
  /** `data: [DONE]` events seen. */
  doneEvents: number;
  /** Whether [DONE] was the last event. */
  doneLast: boolean;
  /** The message of an SSE error event, if one came. */
  errorEvent: string | undefined;
  /** The X-Timing header (µs per phase), when present. */
  timing: Record<string, number> | undefined;
  /** A transport failure, a non-200 status, or the timeout (a hung stream). */
  error: string | undefined;
}

export interface StreamOptions {
  agent: http.Agent;
  url: string;
  apiKey: string;
  model: string;
  maxTokens: number;
  /** The stream counts as hung after this long. */
  timeoutMs: number;
}

interface ChunkEvent {
  choices?: Array<{ delta?: { content?: string } }>;
  error?: { message?: string };
}

/** Sends one `stream: true` chat completion and reads it to the end. */
export function streamChat(o: StreamOptions): Promise<StreamResult> {
  const target = new URL("/v1/chat/completions", o.url);
  const payload = Buffer.from(
    JSON.stringify({
      model: o.model,
      messages: [{ role: "user", content: "Count for me." }],
      stream: true,
      max_tokens: o.maxTokens,
    }),
  );
  const result: StreamResult = {
    status: 0,
    ttfbMs: Number.NaN,
    ttftMs: Number.NaN,
    totalMs: Number.NaN,
    tokenTimesMs: [],
    text: "",
    doneEvents: 0,
    doneLast: false,
    errorEvent: undefined,
    timing: undefined,
    error: undefined,
  };
  return new Promise((resolve) => {
    const start = performance.now();
    let settled = false;
    const finish = (error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      result.totalMs = performance.now() - start;
      if (error !== undefined) result.error = error;
      resolve(result);
    };
    const req = http.request(
      {
        agent: o.agent,
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: "POST",
        headers: {
          "content-type": "application/json",
          "content-length": String(payload.length),
          authorization: `Bearer ${o.apiKey}`,
        },
      },
      (res) => {
        result.status = res.statusCode ?? 0;
        const timing = res.headers["x-timing"];
        if (typeof timing === "string") result.timing = JSON.parse(timing) as Record<string, number>;
        res.setEncoding("utf8");
        let buffered = "";
        let body = "";
        res.on("data", (text: string) => {
          const at = performance.now() - start;
          if (Number.isNaN(result.ttfbMs)) result.ttfbMs = at;
          if (result.status !== 200) {
            body += text;
            return;
          }
          buffered += text;
          for (let end = buffered.indexOf("\n\n"); end >= 0; end = buffered.indexOf("\n\n")) {
            const event = buffered.slice(0, end);
            buffered = buffered.slice(end + 2);
            onEvent(event, at);
          }
        });
        res.on("end", () => {
          if (result.status !== 200) finish(`HTTP ${result.status}: ${body.slice(0, 200)}`);
          else if (buffered.trim() !== "") finish("the stream ended in the middle of an event");
          else finish();
        });
        res.on("error", (e) => finish(e.message));
      },
    );
    const onEvent = (event: string, at: number) => {
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data === "") return; // a keep-alive comment
      result.doneLast = false;
      if (data === "[DONE]") {
        result.doneEvents++;
        result.doneLast = true;
        return;
      }
      const parsed = JSON.parse(data) as ChunkEvent;
      if (parsed.error) {
        result.errorEvent = parsed.error.message ?? "error event";
        return;
      }
      const content = parsed.choices?.[0]?.delta?.content;
      if (content) {
        if (result.tokenTimesMs.length === 0) result.ttftMs = at;
        result.tokenTimesMs.push(at);
        result.text += content;
      }
    };
    const timer = setTimeout(() => {
      req.destroy();
      finish(`hung: not finished after ${o.timeoutMs} ms`);
    }, o.timeoutMs);
    req.on("error", (e) => finish(e.message));
    req.end(payload);
  });
}

/** The tokens a swarm provider streams for a request of `n` tokens: "t0 t1 … t(n-1) ". */
export function expectedText(n: number): string {
  let text = "";
  for (let i = 0; i < n; i++) text += `t${i} `;
  return text;
}
