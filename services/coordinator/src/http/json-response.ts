import type { Endpoint } from "@darkbloom/protocol/provider/v1";
import type { ApiError } from "../errors/index.js";
import type { CompletionResult, OutputChunk, ResponseSink } from "../inference/response-sink.js";
import type { Timing } from "../inference/timing.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import {
  type CutReason,
  cutOff,
  type ResponseLimits,
  responseCutError,
  StallWatch,
} from "./bounded-writer.js";
import { completionBody } from "./openai-format.js";
import { providerHeaders } from "./provider-headers.js";
import { sendError, sendJson } from "./respond.js";
import type { HttpResponse } from "./types.js";

/**
 * A non-streaming response: buffers the text per choice and writes one JSON body at the end. The text
 * held is bounded by `maxResponseBytes` (past it the response is cut: 502 response_too_large, onCut
 * cancels the provider, and nothing is charged, as for any failed non-streaming request); a consumer
 * that then reads none of the body for `sendTimeoutMs` has its connection closed.
 */
export class JsonResponse implements ResponseSink {
  private provider: ProviderHandle | undefined;
  private parts: string[][] = [];
  private bytes = 0;
  private done = false;
  delivered = 0;
  /** The response was cut by a limit. */
  onCut: ((reason: CutReason) => void) | undefined;

  constructor(
    private readonly res: HttpResponse,
    private readonly endpoint: Endpoint,
    private readonly requestId: string,
    private readonly model: string,
    private readonly n: number,
    private readonly timing: Timing,
    private readonly baseHeaders: Record<string, string>,
    private readonly limits: ResponseLimits,
  ) {}

  readonly streaming = false;

  /** Nothing reaches the consumer before the end, so every failure before it can be retried. */
  get committed(): boolean {
    return this.done;
  }

  attempt(provider: ProviderHandle): void {
    this.provider = provider;
    this.parts = [];
    this.bytes = 0;
    this.delivered = 0;
  }

  chunk(payload: OutputChunk): void {
    if (this.done) return;
    const i = payload.choiceIndex;
    if (i >= this.n) return; // a provider may not invent choices
    const parts = this.parts[i] ?? [];
    parts.push(payload.text);
    this.parts[i] = parts;
    this.delivered += payload.tokenCount;
    this.bytes += Buffer.byteLength(payload.text);
    for (const call of payload.toolCalls ?? []) this.bytes += Buffer.byteLength(call.arguments);
    if (this.bytes > this.limits.maxResponseBytes) this.cut("response_bytes");
  }

  complete(result: CompletionResult): void {
    if (this.done) return;
    this.done = true;
    const texts = Array.from({ length: this.n }, (_, i) => (this.parts[i] ?? []).join(""));
    const body = completionBody(this.endpoint, this.requestId, this.model, texts, result);
    if (result.proof) body.darkbloom = result.proof;
    this.parts = [];
    sendJson(this.res, 200, body, {
      ...this.baseHeaders,
      ...providerHeaders(this.provider),
      "X-Timing": this.timing.header(),
    });
    // The body is written whole (its length is in the headers); a consumer that takes none of it is cut.
    new StallWatch(this.res, this.limits.sendTimeoutMs, () => {
      cutOff(this.res);
      this.onCut?.("send_timeout");
    }).untilFinished();
  }

  private cut(reason: CutReason): void {
    this.fail(responseCutError(reason, this.limits));
    this.parts = [];
    this.onCut?.(reason);
  }

  fail(error: ApiError): void {
    if (this.done) return;
    this.done = true;
    sendError(this.res, error, {
      ...this.baseHeaders,
      ...providerHeaders(this.provider),
      "X-Timing": this.timing.header(),
    });
  }
}
