import { ToolCallSplitter, type ToolCallSyntax, toolCallId } from "@darkbloom/models/tools";
import { sha256 } from "@darkbloom/protocol/verifiable-response";
import type { TokenCounter } from "../billing/usage-meter.js";
import { type ApiError, invalidRequest } from "../errors/index.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { InferenceJob } from "./inference-job.js";
import type { CompletionResult, OutputChunk, ResponseSink, ToolCallDelta } from "./response-sink.js";

/**
 * Trust reason code of a provider whose complete output is not what the request's tool grammar
 * allows (calls of functions not offered, arguments their schema refuses, text after the calls).
 * Part of the API, as the metering codes are: never renamed.
 */
export const TOOL_CALLS_INVALID = "tool_calls_invalid";

/** What splitting a tool-using request's output needs: the model's call syntax, the names, the ids' seed. */
export interface ToolOutputContext {
  syntax: ToolCallSyntax;
  names: readonly string[];
  /** Lowercase hex SHA-256 of the request body: the calls' ids derive from it (toolCallId). */
  requestSha256Hex: string;
}

/**
 * A request with `tools`: the provider streams the text as the model wrote it (calls in the model's
 * syntax, which the meter counts as text), and this shows it as OpenAI does: the content before the
 * calls as `delta.content`, each call as `delta.tool_calls` pieces (its id and name first, then its
 * arguments as they come). Text that may begin the calls is held back until it is known not to, and
 * the claimed tokens of what is held ride on the next piece shown. One splitter per choice, the one
 * the provider split its own output with; each attempt starts afresh.
 */
export class ToolCallSink implements ResponseSink {
  private splitters = new Map<number, ToolCallSplitter>();
  private pendingTokens = new Map<number, number>();

  constructor(
    private readonly inner: ResponseSink,
    private readonly context: ToolOutputContext,
  ) {}

  get committed(): boolean {
    return this.inner.committed;
  }

  get streaming(): boolean {
    return this.inner.streaming;
  }

  attempt(provider: ProviderHandle): void {
    this.splitters.clear();
    this.pendingTokens.clear();
    this.inner.attempt(provider);
  }

  chunk(payload: OutputChunk): void {
    const choice = payload.choiceIndex;
    let splitter = this.splitters.get(choice);
    if (splitter === undefined) {
      splitter = new ToolCallSplitter(this.context.syntax, this.context.names);
      this.splitters.set(choice, splitter);
    }
    const delta = splitter.push(payload.text);
    this.show(choice, delta.content, delta.calls, payload.tokenCount);
  }

  complete(result: CompletionResult): void {
    for (const [choice, splitter] of [...this.splitters].sort(([a], [b]) => a - b)) {
      const { delta } = splitter.finish();
      this.show(choice, delta.content, delta.calls, 0);
    }
    this.inner.complete(result);
  }

  fail(error: ApiError): void {
    this.inner.fail(error);
  }

  private show(choice: number, content: string, calls: readonly ToolCallDelta[], tokens: number): void {
    const tokenCount = (this.pendingTokens.get(choice) ?? 0) + tokens;
    if (content === "" && calls.length === 0) {
      this.pendingTokens.set(choice, tokenCount);
      return;
    }
    this.pendingTokens.set(choice, 0);
    const toolCalls = calls.map((c) =>
      c.name === undefined ? c : { ...c, id: toolCallId(this.context.requestSha256Hex, choice, c.index) },
    );
    this.inner.chunk({
      text: content,
      tokenCount,
      choiceIndex: choice,
      ...(toolCalls.length ? { toolCalls } : {}),
    });
  }
}

/**
 * How a tool-using job's output splits, from the model's vocabulary (the call syntax of its chat
 * template, derived where the catalog loaded it); a 400 where the coordinator cannot split it: a
 * model without a vocabulary here, or whose template has no call syntax.
 */
export function toolOutputContext(
  job: InferenceJob,
  counter: TokenCounter | undefined,
): ToolOutputContext | ApiError {
  const syntax = counter?.toolSyntax;
  if (syntax === undefined) {
    return invalidRequest(
      counter === undefined
        ? `'tools' needs the model's vocabulary on this network, and ${job.request.model} has none yet.`
        : `${job.request.model}'s chat template has no function-call syntax: it cannot serve 'tools'.`,
      "tools",
    );
  }
  job.requestSha256 ??= sha256(job.request.body);
  return {
    syntax,
    names: (job.request.tools?.functions ?? []).map((f) => f.name),
    requestSha256Hex: Buffer.from(job.requestSha256).toString("hex"),
  };
}
