import type { ChunkPayload } from "@darkbloom/protocol/provider/v1";
import type { ApiError } from "../errors/index.js";
import type { CompletionResult, ResponseSink } from "../inference/response-sink.js";
import type { Timing } from "../inference/timing.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { KeepAliveScheduler, KeepAliveTarget } from "./keep-alive.js";
import type { ChunkFormatter } from "./openai-format.js";
import { providerHeaders } from "./provider-headers.js";
import { sendError } from "./respond.js";
import type { HttpResponse } from "./types.js";

const DONE = "data: [DONE]\n\n";
const KEEP_ALIVE = ": keep-alive\n\n";

/**
 * A streamed response (text/event-stream). Headers go out with the first token, so retries stay
 * invisible until then; a stream silent for the keep-alive interval commits and gets an SSE comment.
 * Every stream ends with exactly one `data: [DONE]`, after an error event if the provider failed.
 */
export class SseResponse implements ResponseSink, KeepAliveTarget {
  private provider: ProviderHandle | undefined;
  private headersWritten = false;
  private ended = false;
  private lastWrite = performance.now();
  /** Events produced in this turn of the event loop, written together by one syscall. */
  private pending = "";
  private flushScheduled = false;
  private readonly roleSent = new Set<number>();
  /** Completion tokens delivered to the consumer. */
  delivered = 0;
  onFirstToken: (() => void) | undefined;

  constructor(
    private readonly res: HttpResponse,
    private readonly format: ChunkFormatter,
    private readonly timing: Timing,
    private readonly baseHeaders: Record<string, string>,
    private readonly includeUsage: boolean,
    private readonly keepAliveScheduler: KeepAliveScheduler,
  ) {
    keepAliveScheduler.add(this);
  }

  readonly streaming = true;

  get committed(): boolean {
    return this.headersWritten;
  }

  attempt(provider: ProviderHandle): void {
    this.provider = provider;
  }

  chunk(payload: ChunkPayload): void {
    if (this.ended) return;
    if (!this.headersWritten) {
      this.onFirstToken?.();
      this.commit();
    }
    const first = !this.roleSent.has(payload.choiceIndex);
    if (first) this.roleSent.add(payload.choiceIndex);
    this.delivered += payload.tokenCount;
    this.write(this.format.delta(payload.choiceIndex, payload.text, first));
  }

  complete(result: CompletionResult): void {
    if (this.ended) return;
    if (!this.headersWritten) this.commit();
    let out = "";
    const indices = [...result.finishReasons.keys()].sort((a, b) => a - b);
    for (const i of indices)
      out += this.format.finish(i, result.finishReasons.get(i) ?? "stop", !this.roleSent.has(i));
    if (this.includeUsage) out += this.format.usage(result);
    if (result.proof) out += this.format.proof(result.proof);
    this.end(out + DONE);
  }

  fail(error: ApiError): void {
    if (this.ended) return;
    if (!this.headersWritten) {
      this.ended = true;
      this.keepAliveScheduler.delete(this);
      sendError(this.res, error, {
        ...this.baseHeaders,
        "X-Timing": this.timing.header(),
        ...providerHeaders(this.provider),
      });
      return;
    }
    this.end(`data: ${JSON.stringify(error.toJSON())}\n\n${DONE}`);
  }

  /** The consumer went away: stop timers, write nothing more. */
  abandon(): void {
    this.ended = true;
    this.pending = "";
    this.keepAliveScheduler.delete(this);
  }

  private commit(): void {
    this.headersWritten = true;
    const headers: Record<string, string> = {
      ...this.baseHeaders,
      ...providerHeaders(this.provider),
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
      "X-Timing": this.timing.header(),
    };
    this.res.writeHead(200, headers);
  }

  private write(s: string): void {
    this.lastWrite = performance.now();
    this.pending += s;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // After this turn's I/O callbacks: chunks that arrived together leave together.
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.pending === "" || this.res.writableEnded) return;
    const out = this.pending;
    this.pending = "";
    this.res.write(out);
  };

  private end(s: string): void {
    this.ended = true;
    this.keepAliveScheduler.delete(this);
    const out = this.pending + s;
    this.pending = "";
    this.res.end(out);
  }

  keepAlive(now: number): void {
    if (this.ended || now - this.lastWrite < this.keepAliveScheduler.intervalMs) return;
    if (!this.headersWritten) this.commit();
    this.write(KEEP_ALIVE);
  }
}
