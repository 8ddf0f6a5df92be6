import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { Channel, trustLevelName } from "@darkbloom/protocol";
import {
  type CreateChatCompletionRequest,
  type InferenceService,
  ProviderInfoSchema,
  ResponseProofSchema,
  type SamplingParams,
  type StreamChatCompletionRequest,
  type StreamChatCompletionResponse,
  StreamChatCompletionResponseSchema,
  type StreamCompletionResponse,
  StreamCompletionResponseSchema,
  TokenLogprobSchema,
  UsageSchema,
} from "@darkbloom/protocol/inference/v1";
import { type SignedLogprob, tokenText } from "@darkbloom/protocol/logprobs";
import { Endpoint } from "@darkbloom/protocol/provider/v1";
import type { ResponseProof } from "@darkbloom/protocol/verifiable-response";
import type { Authenticator } from "../auth/authenticator.js";
import type { RateLimiter } from "../auth/rate-limiter.js";
import type { ClusterProviders } from "../cluster/cluster-view.js";
import { type ApiError, isApiError, unexpectedError } from "../errors/index.js";
import { type CutReason, type ResponseLimits, responseCutError } from "../http/bounded-writer.js";
import { CLIENT_ADDRESS } from "../http/client-address.js";
import { newRequestId } from "../http/request-id.js";
import { validateEmbeddingsRequest } from "../inference/embeddings-request.js";
import { type CatalogListing, listModels } from "../inference/model-list.js";
import type { InferencePipeline } from "../inference/pipeline.js";
import { validateRequest } from "../inference/request-validation.js";
import {
  type CompletionResult,
  type OutputChunk,
  RequestStopped,
  type ResponseSink,
  type ToolCallDelta,
} from "../inference/response-sink.js";
import { readRoutingPreferences } from "../inference/routing-preferences.js";
import { Timing } from "../inference/timing.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { ProviderRegistry } from "../routing/provider-registry.js";
import { toConnectError } from "./api-error-to-connect.js";

export interface InferenceServiceDeps {
  auth: Authenticator;
  rateLimiter: RateLimiter;
  pipeline: InferencePipeline;
  registry: ProviderRegistry;
  /** Every provider in the cluster, for the model list every replica answers alike. */
  cluster: ClusterProviders;
  catalog: CatalogListing;
  /** What one response may hold for its consumer and reach in all (the SSE writer's limits). */
  limits: ResponseLimits;
  /** Told each time a response is cut by a limit (metrics). */
  onCut?: (reason: CutReason) => void;
}

type Delta = {
  index: number;
  text: string;
  finishReason: string;
  toolCalls?: readonly ToolCallDelta[];
  /** The tokens of `text` with their log-probabilities (a request with top_logprobs). */
  logprobs?: readonly SignedLogprob[];
  usage?: CompletionResult;
  provider?: ProviderHandle;
  /** On the final delta: the provider's signature, with the request body it covers. */
  proof?: ReturnType<typeof proofMessage>;
};

/**
 * The typed consumer API. Each call is turned into the same JSON body the OpenAI routes accept and
 * runs through the same validation, routing and dispatch.
 */
export function createInferenceService(deps: InferenceServiceDeps): ServiceImpl<typeof InferenceService> {
  /** The caller's account (401 otherwise), its rate limit taken and said in the response headers. */
  async function admit(ctx: HandlerContext) {
    const principal = await deps.auth.authenticate(
      ctx.requestHeader.get("authorization") ?? undefined,
      ctx.values.get(CLIENT_ADDRESS),
    );
    for (const [k, v] of Object.entries(deps.rateLimiter.take(principal.accountId)))
      ctx.responseHeader.set(k, v);
    return principal;
  }

  async function* run(
    endpoint: Endpoint,
    json: Record<string, unknown>,
    ctx: HandlerContext,
    stream: boolean,
  ) {
    const timing = new Timing();
    const requestId = newRequestId();
    ctx.responseHeader.set("x-request-id", requestId);
    const out = new Channel<Delta>();
    let sink: ChannelSink;
    try {
      const principal = await admit(ctx);
      const body = new TextEncoder().encode(JSON.stringify({ ...json, stream }));
      // The pipeline wipes the body it sends; the consumer gets this copy with the proof.
      const requestBody = body.slice();
      const request = validateRequest(endpoint, body);
      const preferences = readRoutingPreferences((name) => ctx.requestHeader.get(name) ?? undefined);
      const job = deps.pipeline.prepare(requestId, principal.accountId, request, timing, preferences);
      // A response cut by a limit cancels the provider as a disconnect does (settled as cancelled).
      const cut = new AbortController();
      sink = new ChannelSink(out, stream, requestBody, deps.limits, (reason) => {
        deps.onCut?.(reason);
        // Too large is the response's doing; too slow to read, the consumer's.
        cut.abort(new RequestStopped(`response cut: ${reason}`, reason !== "response_bytes"));
      });
      void deps.pipeline
        .execute(job, sink, AbortSignal.any([ctx.signal, cut.signal]))
        .finally(() => out.close());
    } catch (e) {
      throw toConnectError(isApiError(e) ? e : unexpectedError(e));
    }
    // Pulled as the Connect writer takes them (it waits for the consumer): what was offered and not
    // yet taken is what waits for the consumer.
    for await (const d of out) {
      sink.taken(d);
      yield d;
    }
  }

  async function collect(endpoint: Endpoint, json: Record<string, unknown>, ctx: HandlerContext) {
    const texts: string[] = [];
    const logprobs: SignedLogprob[][] = [];
    const calls: Array<Map<number, { id: string; name: string; arguments: string }>> = [];
    const finish: string[] = [];
    let usage: CompletionResult | undefined;
    let provider: ProviderHandle | undefined;
    let proof: Delta["proof"];
    for await (const d of run(endpoint, json, ctx, false)) {
      if (d.provider) provider = d.provider;
      texts[d.index] = (texts[d.index] ?? "") + d.text;
      if (d.logprobs) {
        const entries = logprobs[d.index] ?? [];
        entries.push(...d.logprobs);
        logprobs[d.index] = entries;
      }
      for (const c of d.toolCalls ?? []) {
        const choice = calls[d.index] ?? new Map();
        calls[d.index] = choice;
        const call = choice.get(c.index) ?? { id: "", name: "", arguments: "" };
        call.id += c.id ?? "";
        call.name += c.name ?? "";
        call.arguments += c.arguments;
        choice.set(c.index, call);
      }
      if (d.finishReason) finish[d.index] = d.finishReason;
      if (d.usage) usage = d.usage;
      if (d.proof) proof = d.proof;
    }
    const n = Math.max(texts.length, finish.length);
    return {
      texts: Array.from({ length: n }, (_, i) => texts[i] ?? ""),
      calls: Array.from({ length: n }, (_, i) =>
        [...(calls[i] ?? new Map()).entries()].sort(([a], [b]) => a - b).map(([, c]) => c),
      ),
      logprobs: Array.from({ length: n }, (_, i) => typedLogprobs(logprobs[i] ?? [])),
      finish,
      usage,
      provider,
      proof,
    };
  }

  return {
    async createChatCompletion(req, ctx) {
      const r = await collect(Endpoint.CHAT_COMPLETIONS, chatJson(req), ctx);
      return {
        id: `chatcmpl-${ctx.responseHeader.get("x-request-id")}`,
        created: BigInt(Math.floor(Date.now() / 1000)),
        model: req.model,
        choices: r.texts.map((content, index) => ({
          index,
          message: { role: "assistant", content, toolCalls: r.calls[index] },
          finishReason: r.finish[index] ?? "stop",
          logprobs: r.logprobs[index],
        })),
        usage: usageMessage(r.usage),
        provider: providerInfo(r.provider),
        darkbloom: r.proof,
      };
    },
    async *streamChatCompletion(req, ctx) {
      for await (const d of run(Endpoint.CHAT_COMPLETIONS, chatJson(req), ctx, true)) {
        const id = `chatcmpl-${ctx.responseHeader.get("x-request-id")}`;
        yield chatDelta(id, d);
      }
    },
    async createCompletion(req, ctx) {
      const r = await collect(Endpoint.COMPLETIONS, promptJson(req.model, req.prompt, req.sampling), ctx);
      return {
        id: `cmpl-${ctx.responseHeader.get("x-request-id")}`,
        created: BigInt(Math.floor(Date.now() / 1000)),
        model: req.model,
        choices: r.texts.map((text, index) => ({
          index,
          text,
          finishReason: r.finish[index] ?? "stop",
          logprobs: r.logprobs[index],
        })),
        usage: usageMessage(r.usage),
        provider: providerInfo(r.provider),
        darkbloom: r.proof,
      };
    },
    async *streamCompletion(req, ctx) {
      for await (const d of run(
        Endpoint.COMPLETIONS,
        promptJson(req.model, req.prompt, req.sampling),
        ctx,
        true,
      )) {
        const id = `cmpl-${ctx.responseHeader.get("x-request-id")}`;
        yield textDelta(id, d);
      }
    },
    async embed(req, ctx) {
      const timing = new Timing();
      const requestId = newRequestId();
      ctx.responseHeader.set("x-request-id", requestId);
      try {
        const principal = await admit(ctx);
        // The body the HTTP route takes; vectors go back as binary32 either way (repeated float).
        const json: Record<string, unknown> = {
          model: req.model,
          input: req.inputs,
          encoding_format: "base64",
        };
        if (req.dimensions !== undefined) json.dimensions = req.dimensions;
        if (req.user !== "") json.user = req.user;
        const body = new TextEncoder().encode(JSON.stringify(json));
        const requestBody = body.slice(); // the pipeline wipes the body it sends
        const request = validateEmbeddingsRequest(body);
        const preferences = readRoutingPreferences((name) => ctx.requestHeader.get(name) ?? undefined);
        const r = await deps.pipeline.embed(
          requestId,
          principal.accountId,
          request,
          timing,
          preferences,
          ctx.signal,
        );
        if (r === undefined) throw new ConnectError("the call was cancelled", Code.Canceled);
        return {
          model: req.model,
          embeddings: r.embeddings.map((vector, index) => ({ index, values: Array.from(vector) })),
          usage: { promptTokens: r.promptTokens, completionTokens: 0, totalTokens: r.promptTokens },
          provider: providerInfo(r.provider),
          darkbloom: proofMessage(r.proof, requestBody),
        };
      } catch (e) {
        if (e instanceof ConnectError) throw e;
        throw toConnectError(isApiError(e) ? e : unexpectedError(e));
      }
    },
    async listModels(_req, ctx) {
      try {
        await deps.auth.authenticate(
          ctx.requestHeader.get("authorization") ?? undefined,
          ctx.values.get(CLIENT_ADDRESS),
        );
      } catch (e) {
        throw toConnectError(isApiError(e) ? e : unexpectedError(e));
      }
      return {
        models: listModels(deps.cluster, deps.catalog).map((m) => ({
          id: m.id,
          created: BigInt(m.created),
          ownedBy: m.ownedBy,
          providers: m.providers,
          contextLength: m.contextLength,
        })),
      };
    },
  };
}

/**
 * Feeds pipeline output into a channel the Connect handler yields from. A streaming call sends each
 * delta as it comes (and is committed from the first); a unary call buffers the deltas of the current
 * try and hands them over only on completion, so a failed try can be retried invisibly. As the SSE
 * writer, it cuts a response (failing the call, onCut) whose text grows past `maxResponseBytes` or of
 * which more than `maxResponseBufferBytes` waits for a consumer that does not read.
 */
class ChannelSink implements ResponseSink {
  private provider: ProviderHandle | undefined;
  private sentProvider = false;
  private pending: Delta[] = [];
  /** Text bytes of this try, and of those offered to the channel and taken from it. */
  private bytes = 0;
  private offered = 0;
  private takenBytes = 0;
  private cut = false;
  committed = false;

  constructor(
    private readonly out: Channel<Delta>,
    readonly streaming: boolean,
    private readonly requestBody: Uint8Array,
    private readonly limits: ResponseLimits,
    private readonly onCut: (reason: CutReason) => void,
  ) {}

  attempt(provider: ProviderHandle): void {
    this.provider = provider;
    this.pending = [];
    if (!this.committed) this.bytes = 0;
  }

  chunk(p: OutputChunk): void {
    if (this.cut) return;
    const delta: Delta = { index: p.choiceIndex, text: p.text, finishReason: "" };
    if (p.toolCalls) delta.toolCalls = p.toolCalls;
    if (p.logprobs && p.logprobs.length > 0) delta.logprobs = p.logprobs;
    this.bytes += deltaBytes(delta);
    if (this.streaming) {
      this.committed = true;
      this.emit(delta);
    } else {
      this.pending.push(delta);
    }
    if (this.bytes > this.limits.maxResponseBytes) this.stop("response_bytes");
    else if (this.offered - this.takenBytes > this.limits.maxResponseBufferBytes)
      this.stop("response_buffer");
  }

  /** The Connect writer took `d` (the consumer has read what came before). */
  taken(d: Delta): void {
    this.takenBytes += deltaBytes(d);
  }

  private stop(reason: CutReason): void {
    this.cut = true;
    this.committed = true;
    this.pending = [];
    this.out.fail(toConnectError(responseCutError(reason, this.limits)));
    this.onCut(reason);
  }

  complete(result: CompletionResult): void {
    if (this.cut) return;
    this.committed = true;
    for (const d of this.pending.splice(0)) this.emit(d);
    for (const [index, reason] of [...result.finishReasons].sort((a, b) => a[0] - b[0])) {
      this.emit({ index, text: "", finishReason: reason });
    }
    this.emit({
      index: 0,
      text: "",
      finishReason: "",
      usage: result,
      proof: result.proof && proofMessage(result.proof, this.requestBody),
    });
  }

  fail(error: ApiError): void {
    if (this.cut) return;
    this.committed = true;
    this.out.fail(toConnectError(error));
  }

  private emit(d: Delta): void {
    if (!this.sentProvider && this.provider) {
      this.sentProvider = true;
      d.provider = this.provider;
    }
    this.offered += deltaBytes(d);
    this.out.offer(d);
  }
}

/** What a delta holds for the consumer: its text, its calls' text and its tokens' bytes. */
function deltaBytes(d: Delta): number {
  let bytes = Buffer.byteLength(d.text);
  for (const c of d.toolCalls ?? []) bytes += Buffer.byteLength(c.arguments);
  for (const e of d.logprobs ?? []) {
    bytes += e.token.byteLength + 8;
    for (const t of e.top) bytes += t.token.byteLength + 8;
  }
  return bytes;
}

/** Entries as the typed API carries them (OpenAI's logprobs.content[] fields). */
function typedLogprobs(entries: readonly SignedLogprob[]) {
  return entries.map((e) =>
    create(TokenLogprobSchema, {
      token: tokenText(e.token),
      logprob: e.logprob,
      bytes: e.token,
      topLogprobs: e.top.map((t) => ({ token: tokenText(t.token), logprob: t.logprob, bytes: t.token })),
    }),
  );
}

/** The body's sampling fields; `chat`: logprobs as chat asks for them, else as text completions do. */
function sampling(s: SamplingParams | undefined, chat: boolean): Record<string, unknown> {
  if (!s) return {};
  const o: Record<string, unknown> = {};
  if (s.topLogprobs !== undefined) {
    if (chat) {
      o.logprobs = true;
      o.top_logprobs = s.topLogprobs;
    } else o.logprobs = s.topLogprobs;
  }
  if (s.maxTokens !== undefined) o.max_tokens = s.maxTokens;
  if (s.temperature !== undefined) o.temperature = s.temperature;
  if (s.topP !== undefined) o.top_p = s.topP;
  if (s.topK !== undefined) o.top_k = s.topK;
  if (s.n !== undefined) o.n = s.n;
  if (s.stop.length > 0) o.stop = s.stop;
  if (s.seed !== undefined) o.seed = Number(s.seed);
  if (s.presencePenalty !== undefined) o.presence_penalty = s.presencePenalty;
  if (s.frequencyPenalty !== undefined) o.frequency_penalty = s.frequencyPenalty;
  if (s.user) o.user = s.user;
  const format = s.responseFormat?.format;
  if (format?.case === "jsonObject") o.response_format = { type: "json_object" };
  if (format?.case === "jsonSchema") {
    const { name, schema, strict, description } = format.value;
    o.response_format = {
      type: "json_schema",
      json_schema: { name, strict, ...(schema ? { schema } : {}), ...(description ? { description } : {}) },
    };
  }
  return o;
}

/**
 * The OpenAI-format body of a chat call: the messages (with their tool calls and the calls tool
 * messages answer), the sampling settings, and the tools.
 */
function chatJson(req: CreateChatCompletionRequest | StreamChatCompletionRequest): Record<string, unknown> {
  const o: Record<string, unknown> = {
    model: req.model,
    messages: req.messages.map((m) => {
      const message: Record<string, unknown> = { role: m.role, content: m.content };
      if (m.name) message.name = m.name;
      if (m.toolCalls.length > 0) {
        message.tool_calls = m.toolCalls.map((c) => ({
          id: c.id,
          type: "function",
          function: { name: c.name, arguments: c.arguments },
        }));
        if (m.content === "") message.content = null;
      }
      if (m.toolCallId) message.tool_call_id = m.toolCallId;
      return message;
    }),
    ...sampling(req.sampling, true),
  };
  if (req.tools.length > 0) {
    o.tools = req.tools.map((t) => ({
      type: "function",
      function: {
        name: t.name,
        ...(t.description ? { description: t.description } : {}),
        ...(t.parameters ? { parameters: t.parameters } : {}),
        ...(t.strict ? { strict: true } : {}),
      },
    }));
  }
  const choice = req.toolChoice?.choice;
  if (choice?.case === "mode") o.tool_choice = choice.value;
  if (choice?.case === "function") o.tool_choice = { type: "function", function: { name: choice.value } };
  if (req.parallelToolCalls !== undefined) o.parallel_tool_calls = req.parallelToolCalls;
  return o;
}

function promptJson(model: string, prompt: string, s: SamplingParams | undefined): Record<string, unknown> {
  return { model, prompt, ...sampling(s, false) };
}

function usageMessage(r: CompletionResult | undefined) {
  if (!r) return undefined;
  return create(UsageSchema, {
    promptTokens: r.promptTokens,
    completionTokens: r.completionTokens,
    totalTokens: r.promptTokens + r.completionTokens,
  });
}

function providerInfo(p: ProviderHandle | undefined) {
  if (!p) return undefined;
  return create(ProviderInfoSchema, {
    providerId: p.id,
    trustLevel: trustLevelName(p.trustLevel),
    attested: p.attested(),
  });
}

/** The `darkbloom` object as the typed API carries it (bytes instead of hex and base64). */
function proofMessage(p: ResponseProof, requestBody: Uint8Array) {
  const bytes = (v: string | null, encoding: "hex" | "base64") =>
    v === null ? new Uint8Array() : new Uint8Array(Buffer.from(v, encoding));
  return create(ResponseProofSchema, {
    providerId: p.provider_id,
    trustLevel: p.trust_level,
    signingKey: bytes(p.signing_key, "base64"),
    requestSha256: bytes(p.request_sha256, "hex"),
    responseSha256: bytes(p.response_sha256, "hex"),
    signature: bytes(p.signature, "base64"),
    requestBody,
    version: p.version,
    usage: {
      promptTokens: p.usage.prompt_tokens,
      completionTokens: p.usage.completion_tokens,
      totalTokens: p.usage.prompt_tokens + p.usage.completion_tokens,
    },
  });
}

function chatDelta(id: string, d: Delta): StreamChatCompletionResponse {
  return create(StreamChatCompletionResponseSchema, {
    id,
    index: d.index,
    content: d.text,
    toolCalls: (d.toolCalls ?? []).map((c) => ({
      index: c.index,
      id: c.id ?? "",
      name: c.name ?? "",
      arguments: c.arguments,
    })),
    logprobs: typedLogprobs(d.logprobs ?? []),
    finishReason: d.finishReason,
    usage: usageMessage(d.usage),
    provider: providerInfo(d.provider),
    darkbloom: d.proof,
  });
}

function textDelta(id: string, d: Delta): StreamCompletionResponse {
  return create(StreamCompletionResponseSchema, {
    id,
    index: d.index,
    text: d.text,
    logprobs: typedLogprobs(d.logprobs ?? []),
    finishReason: d.finishReason,
    usage: usageMessage(d.usage),
    provider: providerInfo(d.provider),
    darkbloom: d.proof,
  });
}
