/**
 * The full stack as a consumer sees it: streamed OpenAI text completions over HTTP (coordinator, then
 * the provider daemon's link and engine), timed by the arrival of the SSE events that carry text.
 */
import http from "node:http";
import https from "node:https";
import type { RowTiming } from "./stats.js";
import { type BenchRow, type BenchTarget, now } from "./target.js";

export interface HttpTargetOptions {
  /** The API base URL, e.g. http://127.0.0.1:8080/v1. */
  baseUrl: string;
  apiKey: string;
  model: string;
  name?: string;
  /** Concurrent keep-alive connections to hold (the largest batch). */
  maxSockets?: number;
}

/** What one SSE data event of a streamed text completion holds that the benchmark reads. */
interface CompletionChunk {
  choices?: { text?: string; finish_reason?: string | null }[];
  usage?: { prompt_tokens?: number; completion_tokens?: number } | null;
  error?: { message?: string };
}

/**
 * Splits an SSE byte stream into the payloads of its `data:` lines, event by event; `push` returns the
 * complete events so far, keeping a partial one for the next call.
 */
export class SseParser {
  private buffer = "";

  push(text: string): string[] {
    this.buffer += text.replace(/\r\n/g, "\n");
    const out: string[] = [];
    for (;;) {
      const end = this.buffer.indexOf("\n\n");
      if (end < 0) return out;
      const event = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data !== "") out.push(data);
    }
  }
}

export function httpTarget(options: HttpTargetOptions): BenchTarget {
  const base = new URL(`${options.baseUrl.replace(/\/+$/, "")}/completions`);
  const client = base.protocol === "https:" ? https : http;
  const agent = new client.Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 16 });

  const runRow = async ({ prompt, genTokens, startAfter, onToken }: BenchRow): Promise<RowTiming> => {
    await startAfter;
    return new Promise<RowTiming>((resolve, reject) => {
      const body = Buffer.from(
        JSON.stringify({
          model: options.model,
          prompt,
          max_tokens: genTokens,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        }),
      );
      const startMs = now();
      let firstTokenMs: number | undefined;
      let lastTokenMs: number | undefined;
      const tokenTimesMs: number[] = [];
      let promptTokens = Number.NaN;
      let completionTokens = Number.NaN;
      let finishReason = "unknown";
      const req = client.request(
        base,
        {
          method: "POST",
          agent,
          headers: {
            authorization: `Bearer ${options.apiKey}`,
            "content-type": "application/json",
            "content-length": String(body.length),
            accept: "text/event-stream",
          },
        },
        (res) => {
          res.setEncoding("utf8");
          if (res.statusCode !== 200) {
            let text = "";
            res.on("data", (chunk: string) => {
              text += chunk;
            });
            res.on("end", () => reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 300)}`)));
            return;
          }
          const parser = new SseParser();
          let failure: Error | undefined;
          res.on("data", (chunk: string) => {
            const at = now();
            for (const data of parser.push(chunk)) {
              if (data === "[DONE]") continue;
              let event: CompletionChunk;
              try {
                event = JSON.parse(data) as CompletionChunk;
              } catch {
                failure ??= new Error(`not JSON in the stream: ${data.slice(0, 100)}`);
                continue;
              }
              if (event.error) failure ??= new Error(`stream error: ${event.error.message ?? data}`);
              const choice = event.choices?.[0];
              if (choice?.text) {
                firstTokenMs ??= at;
                lastTokenMs = at;
                tokenTimesMs.push(at);
                onToken?.(at, 1);
              }
              if (choice?.finish_reason) finishReason = choice.finish_reason;
              if (event.usage) {
                promptTokens = event.usage.prompt_tokens ?? Number.NaN;
                completionTokens = event.usage.completion_tokens ?? Number.NaN;
              }
            }
          });
          res.on("error", reject);
          res.on("end", () => {
            if (failure) reject(failure);
            else
              resolve({
                promptTokens,
                // A row that ended at its length generated exactly max_tokens: the figure the engines
                // report. Darkbloom's usage is the coordinator's own count of the text (what it bills),
                // which on a random-weights model exceeds the tokens generated (its text retokenizes
                // into more pieces), and would inflate the stack's rates against everyone else's.
                completionTokens: finishReason === "length" ? genTokens : completionTokens,
                startMs,
                firstTokenMs,
                lastTokenMs,
                finishReason,
                tokenTimesMs,
              });
          });
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  };

  return {
    name: options.name ?? "full stack",
    runRows: (rows) => Promise.all(rows.map(runRow)),
    close: async () => agent.destroy(),
  };
}
