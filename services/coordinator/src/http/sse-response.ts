import type { ApiError } from "../errors/index.js";
import type { CompletionResult, OutputChunk, ResponseSink } from "../inference/response-sink.js";
import type { Timing } from "../inference/timing.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import { BoundedWriter, type CutReason, type ResponseLimits, responseCutError } from "./bounded-writer.js";
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
 * Events go out as fast as the consumer reads them (BoundedWriter): a consumer that falls too far
 * behind, or a response that grows too large, is cut with an error event and onCut is told, so the
 * provider is cancelled and the stream settled as a cancelled one (the tokens sent are paid for).
 */
export class SseResponse implements ResponseSink, KeepAliveTarget {
  private provider: ProviderHandle | undefined;
  private headersWritten = false;
  private ended = false;
  private lastWrite = performance.now();
  private readonly writer: BoundedWriter;
  private readonly roleSent = new Set<number>();
  /** Completion tokens delivered to the consumer. */
  delivered = 0;
  onFirstToken: (() => void) | undefined;
  /** The response was cut by a limit (the consumer has its error event, or the connection closed). */
  onCut: ((reason: CutReason) => void) | undefined;

  constructor(
    private readonly res: HttpResponse,
    private readonly format: ChunkFormatter,
    private readonly timing: Timing,
    private readonly baseHeaders: Record<string, string>,
    private readonly keepAliveScheduler: KeepAliveScheduler,
    private readonly limits: ResponseLimits,
  ) {
    this.writer = new BoundedWriter(res, limits, (reason) => this.cut(reason));
    keepAliveScheduler.add(this);
  }

  readonly streaming = true;

  get committed(): boolean {
    return this.headersWritten;
  }

  attempt(provider: ProviderHandle): void {
    this.provider = provider;
  }

  chunk(payload: OutputChunk): void {
    if (this.ended) return;
    if (!this.headersWritten) {
      this.onFirstToken?.();
      this.commit();
    }
    const first = !this.roleSent.has(payload.choiceIndex);
    if (first) this.roleSent.add(payload.choiceIndex);
    this.delivered += payload.tokenCount;
    this.write(
      this.format.delta(payload.choiceIndex, payload.text, first, payload.toolCalls, payload.logprobs),
    );
  }

  complete(result: CompletionResult): void {
    if (this.ended) return;
    if (!this.headersWritten) this.commit();
    let out = "";
    const indices = [...result.finishReasons.keys()].sort((a, b) => a - b);
    for (const i of indices)
      out += this.format.finish(i, result.finishReasons.get(i) ?? "stop", !this.roleSent.has(i));
    out += this.format.last(result);
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
    this.writer.discard();
    this.keepAliveScheduler.delete(this);
  }

  /** A limit was passed: the stream ends with an error event, unless its connection is already closed. */
  private cut(reason: CutReason): void {
    const ended = this.ended;
    if (!ended) {
      this.ended = true;
      this.keepAliveScheduler.delete(this);
      // After a send timeout the writer has closed the response: there is no one to tell.
      if (reason !== "send_timeout")
        this.writer.end(`data: ${JSON.stringify(responseCutError(reason, this.limits).toJSON())}\n\n${DONE}`);
    }
    this.onCut?.(reason);
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
    this.writer.write(s);
  }

  private end(s: string): void {
    this.ended = true;
    this.keepAliveScheduler.delete(this);
    this.writer.end(s);
  }

  keepAlive(now: number): void {
    if (this.ended || now - this.lastWrite < this.keepAliveScheduler.intervalMs) return;
    if (!this.headersWritten) this.commit();
    this.write(KEEP_ALIVE);
  }
}
