import { chatLogprobs, completionLogprobs, type SignedLogprob } from "@darkbloom/protocol/logprobs";
import { Endpoint } from "@darkbloom/protocol/provider/v1";
import type { SignedChoice } from "@darkbloom/protocol/verifiable-response";
import type { CompletionResult, ToolCallDelta } from "../inference/response-sink.js";

/** Precomputed JSON fragments of one response's SSE events, so each token costs one string concat. */
export class ChunkFormatter {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);
  private readonly head: string;
  private readonly usageNull: string;
  /** A completions stream's characters so far per choice (its logprobs' text_offset). */
  private readonly offsets = new Map<number, number>();

  constructor(
    readonly endpoint: Endpoint,
    requestId: string,
    readonly model: string,
    includeUsage: boolean,
    /** Whether the request asked for log-probabilities: every choice event then carries them. */
    private readonly logprobs = false,
  ) {
    const chat = endpoint === Endpoint.CHAT_COMPLETIONS;
    this.id = `${chat ? "chatcmpl" : "cmpl"}-${requestId}`;
    const object = chat ? "chat.completion.chunk" : "text_completion";
    this.head = `{"id":"${this.id}","object":"${object}","created":${this.created},"model":${JSON.stringify(model)},"choices":[`;
    this.usageNull = includeUsage ? `,"usage":null` : "";
  }

  /**
   * A delta event; `first` adds the assistant role to a chat choice's first delta. Tool calls go out
   * as OpenAI streams them: a call's first piece with its id, type and name, then its arguments.
   */
  delta(
    index: number,
    text: string,
    first: boolean,
    toolCalls?: readonly ToolCallDelta[],
    logprobs?: readonly SignedLogprob[],
  ): string {
    const t = JSON.stringify(text);
    const lp = this.logprobsJson(index, logprobs ?? []);
    if (this.endpoint === Endpoint.CHAT_COMPLETIONS) {
      // With logprobs, a choice opens as OpenAI's do, with a delta of its role alone and no tokens:
      // the openai SDK's stream helper counts the tokens of a choice's first event twice.
      let opening = "";
      let role = first;
      if (first && this.logprobs) {
        opening = `data: ${this.head}{"index":${index},"delta":{"role":"assistant","content":""},"logprobs":${this.logprobsJson(index, [])},"finish_reason":null}]${this.usageNull}}\n\n`;
        role = false;
      }
      const delta =
        toolCalls === undefined || toolCalls.length === 0
          ? role
            ? `{"role":"assistant","content":${t}}`
            : `{"content":${t}}`
          : toolCallsDelta(text, role, toolCalls);
      return `${opening}data: ${this.head}{"index":${index},"delta":${delta},"logprobs":${lp},"finish_reason":null}]${this.usageNull}}\n\n`;
    }
    return `data: ${this.head}{"text":${t},"index":${index},"logprobs":${lp},"finish_reason":null}]${this.usageNull}}\n\n`;
  }

  /**
   * A choice event's `logprobs`: null unless the request asked, else the event's tokens (none on a
   * closing event, so that a choice with no tokens still shows it had them asked for).
   */
  private logprobsJson(index: number, entries: readonly SignedLogprob[]): string {
    if (!this.logprobs) return "null";
    if (this.endpoint === Endpoint.CHAT_COMPLETIONS) return JSON.stringify(chatLogprobs(entries));
    const shown = completionLogprobs(entries, this.offsets.get(index) ?? 0);
    this.offsets.set(index, shown.offset);
    return JSON.stringify(shown.logprobs);
  }

  /** The closing event of one choice. */
  finish(index: number, reason: string, roleNotSent: boolean): string {
    const r = JSON.stringify(reason);
    const lp = this.logprobsJson(index, []);
    if (this.endpoint === Endpoint.CHAT_COMPLETIONS) {
      const delta = roleNotSent ? `{"role":"assistant","content":""}` : "{}";
      return `data: ${this.head}{"index":${index},"delta":${delta},"logprobs":${lp},"finish_reason":${r}}]${this.usageNull}}\n\n`;
    }
    return `data: ${this.head}{"text":"","index":${index},"logprobs":${lp},"finish_reason":${r}}]${this.usageNull}}\n\n`;
  }

  /**
   * The last event before [DONE], with no choices: the usage when stream_options.include_usage is
   * set, and the `darkbloom` object (verifiable responses) when there is one. One event, because
   * OpenAI's clients take the usage from the last chunk (the SDK's stream helpers copy every later
   * chunk's fields over it, so a later `"usage": null` would erase it).
   */
  last(result: CompletionResult): string {
    const usage = this.usageNull === "" ? "" : `,"usage":${JSON.stringify(usageObject(result))}`;
    const proof = result.proof ? `,"darkbloom":${JSON.stringify(result.proof)}` : "";
    return usage === "" && proof === "" ? "" : `data: ${this.head}]${usage}${proof}}\n\n`;
  }
}

function toolCallsDelta(text: string, first: boolean, calls: readonly ToolCallDelta[]): string {
  const delta: Record<string, unknown> = {};
  if (first) delta.role = "assistant";
  if (text !== "" || first) delta.content = text === "" ? null : text;
  delta.tool_calls = calls.map((c) =>
    c.name === undefined
      ? { index: c.index, function: { arguments: c.arguments } }
      : { index: c.index, id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } },
  );
  return JSON.stringify(delta);
}

export function usageObject(r: CompletionResult): {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
} {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
  };
}

/** A whole (non-streaming) response body; a chat response shows `result.choices` where it has them. */
export function completionBody(
  endpoint: Endpoint,
  requestId: string,
  model: string,
  texts: readonly string[],
  result: CompletionResult,
): Record<string, unknown> {
  const created = Math.floor(Date.now() / 1000);
  const usage = usageObject(result);
  if (endpoint === Endpoint.CHAT_COMPLETIONS) {
    return {
      id: `chatcmpl-${requestId}`,
      object: "chat.completion",
      created,
      model,
      choices: texts.map((text, index) => {
        const entries = result.choices?.[index]?.logprobs;
        return {
          index,
          message: chatMessage(text, result.choices?.[index]),
          logprobs: entries ? chatLogprobs(entries) : null,
          finish_reason: result.finishReasons.get(index) ?? "stop",
        };
      }),
      usage,
    };
  }
  return {
    id: `cmpl-${requestId}`,
    object: "text_completion",
    created,
    model,
    choices: texts.map((text, index) => {
      const entries = result.choices?.[index]?.logprobs;
      return {
        text,
        index,
        logprobs: entries ? completionLogprobs(entries).logprobs : null,
        finish_reason: result.finishReasons.get(index) ?? "stop",
      };
    }),
    usage,
  };
}

function chatMessage(text: string, shown: SignedChoice | undefined): Record<string, unknown> {
  if (shown === undefined || shown.toolCalls.length === 0)
    return { role: "assistant", content: shown?.content ?? text, refusal: null };
  return {
    role: "assistant",
    content: shown.content,
    refusal: null,
    tool_calls: shown.toolCalls.map((c) => ({
      id: c.id,
      type: c.type,
      function: { name: c.name, arguments: c.arguments },
    })),
  };
}
