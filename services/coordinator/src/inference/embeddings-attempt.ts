import type { ChunkPayload, InferenceComplete } from "@darkbloom/protocol/provider/v1";
import { Endpoint } from "@darkbloom/protocol/provider/v1";
import { embeddingFromBytes } from "@darkbloom/protocol/verifiable-embeddings";
import type { ResponseProof } from "@darkbloom/protocol/verifiable-response";
import type { TokenCounter } from "../billing/usage-meter.js";
import { type ApiError, unexpectedError } from "../errors/index.js";
import type { CallObserver } from "../link/provider-session.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { DispatchTarget } from "../routing/provider-pool.js";
import type { AttemptDeps, AttemptOutcome } from "./attempt.js";
import { dispatchSealed } from "./dispatch.js";
import type { ValidatedEmbeddings } from "./embeddings-request.js";
import { providerErrorFrom } from "./provider-errors.js";
import { verifyEmbeddings } from "./response-verification.js";
import type { RoutedRequest } from "./routing-loop.js";

/** A unit vector's length may be off by the rounding of its binary32 values, and no more. */
const NORM_TOLERANCE = 1e-3;

/** Trust reason for a provider whose embeddings are not what the request asked for. */
export const EMBEDDINGS_INVALID = "embeddings_invalid";

/** An embeddings request ready to route. */
export interface EmbeddingsJob extends RoutedRequest {
  accountId: string;
  request: ValidatedEmbeddings;
  /** The model's token counts, when the catalog has its vocabulary. */
  counter: TokenCounter | undefined;
  /** Each input's tokens with the model's tokenizer (undefined: not counted; bounds apply). */
  inputCounts: Promise<number[] | undefined> | undefined;
  /** The length every vector must have: `dimensions`, or the model's when its vocabulary says. */
  dimensions: number | undefined;
  requestSha256: Uint8Array;
  /** Whether the current attempt's provider accepted the request (a consumer who leaves then pays). */
  dispatched: boolean;
  provider?: ProviderHandle;
  /** Set by the attempt that succeeded. */
  result?: EmbeddingsResult;
  /** Set by the attempt that ended the request with an error for the consumer. */
  failure?: ApiError;
}

export interface EmbeddingsResult {
  embeddings: Float32Array[];
  promptTokens: number;
  provider: ProviderHandle;
  proof: ResponseProof;
}

type Verdict =
  | { ok: true; embeddings: Float32Array[]; promptTokens: number }
  | { ok: false; message: string };

export function runEmbeddingsAttempt(
  deps: AttemptDeps,
  session: DispatchTarget,
  job: EmbeddingsJob,
  signal: AbortSignal,
): Promise<AttemptOutcome> {
  const { config, log } = deps;
  const { requestId, request, timing } = job;
  const n = request.inputs.length;
  const provider = session.handle;
  job.provider = provider;
  job.dispatched = false;
  return new Promise<AttemptOutcome>((resolve) => {
    let finished = false;
    const chunks: (ChunkPayload | undefined)[] = new Array(n);
    const dispatchedAt = performance.now();
    const finish = (outcome: AttemptOutcome) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      resolve(outcome);
    };
    const retry = (reason: string, departed = false) => {
      provider.performance.recordFailure();
      finish({ kind: "retry", reason, departed });
    };
    const cut = (message: string) => {
      session.cancel(requestId, EMBEDDINGS_INVALID);
      retry(`provider untrusted: ${EMBEDDINGS_INVALID}`);
      session.markUntrusted(EMBEDDINGS_INVALID, message);
    };
    const onAbort = () => {
      session.cancel(requestId, "consumer_disconnected");
      finish({ kind: "done" });
    };
    // The embeddings arrive as each input is done: the silence limit applies between them.
    const onSilence = () => {
      session.cancel(requestId, "provider_stalled");
      retry("provider_stalled");
    };
    const timer = setTimeout(onSilence, config.firstTokenTimeoutMs);
    timer.unref();
    const observer: CallObserver = {
      admitted() {
        timing.add("forward", dispatchedAt);
      },
      accepted() {
        timing.add("dispatch", dispatchedAt);
        job.dispatched = true;
      },
      chunk(payload) {
        const e = payload.embedding;
        if (!e || payload.text !== "")
          return cut("a chunk of an embeddings response carries no embedding, or text");
        if (e.index >= n) return cut(`an embedding for input ${e.index} of ${n}`);
        if (chunks[e.index]) return cut(`a second embedding for input ${e.index}`);
        chunks[e.index] = payload;
        timer.refresh();
      },
      complete(message) {
        clearTimeout(timer);
        const collected = chunks.filter((c): c is ChunkPayload => c !== undefined);
        if (collected.length < n) return cut(`${collected.length} embeddings for ${n} inputs`);
        const counted = job.inputCounts ?? Promise.resolve(undefined);
        counted
          .then(
            (counts) => conclude(message, chunks as ChunkPayload[], counts),
            (e: Error) => {
              log.warn(
                { requestId, err: e.message },
                "the inputs could not be counted; their usage is only bounded",
              );
              conclude(message, chunks as ChunkPayload[], undefined);
            },
          )
          .catch((e: unknown) => {
            // A fault of the coordinator's own: the request fails instead of hanging.
            log.error({ requestId, err: e }, "concluding the embeddings failed");
            job.failure = unexpectedError(e);
            finish({ kind: "done" });
          });
      },
      error(message) {
        const clientError = message.httpStatus >= 400 && message.httpStatus < 500;
        if (!clientError || message.httpStatus === 408 || message.httpStatus === 429) {
          provider.performance.recordFailure();
        }
        if (message.retryable) {
          finish({
            kind: "retry",
            reason: message.code || "provider_error",
            departed: message.httpStatus === 503,
          });
          return;
        }
        job.failure = providerErrorFrom(message, "input");
        finish({ kind: "done" });
      },
      lost(reason) {
        retry(reason, true);
      },
    };
    const conclude = (message: InferenceComplete, payloads: ChunkPayload[], counts: number[] | undefined) => {
      if (finished) return; // ended meanwhile (the provider dropped, the consumer left)
      const verdict = checkEmbeddings(job, message, payloads, counts);
      if (!verdict.ok) return cut(verdict.message);
      const signed = verifyEmbeddings(
        provider,
        session.signingKey,
        job.requestSha256,
        request.model,
        verdict.embeddings,
        verdict.promptTokens,
        message.signature,
      );
      if (!signed.ok) {
        retry(`provider untrusted: ${signed.code}`);
        session.markUntrusted(signed.code, signed.message);
        return;
      }
      job.result = {
        embeddings: verdict.embeddings,
        promptTokens: verdict.promptTokens,
        provider,
        proof: signed.proof,
      };
      finish({ kind: "done" });
    };
    signal.addEventListener("abort", onAbort, { once: true });
    const undelivered = dispatchSealed(
      session,
      config.requireEncryption,
      timing,
      {
        requestId,
        model: request.model,
        endpoint: Endpoint.EMBEDDINGS,
        body: request.body,
        maxTokens: 0,
        stream: false,
        promptTokensEstimate: request.promptTokens,
      },
      observer,
    );
    if (undelivered) finish(undelivered);
  });
}

/**
 * What a provider's embeddings must be: one per input (collected in input order), each of one length
 * (the model's, or the `dimensions` asked for) and unit length with finite values, each input's
 * token count the coordinator's own count (without the vocabulary: at least one token and within the
 * input's bound), and the usage their sum with no completion tokens.
 */
export function checkEmbeddings(
  job: Pick<EmbeddingsJob, "request" | "dimensions">,
  message: InferenceComplete,
  payloads: readonly ChunkPayload[],
  counts: readonly number[] | undefined,
): Verdict {
  const { request } = job;
  const embeddings: Float32Array[] = [];
  let promptTokens = 0;
  let length = job.dimensions;
  for (const [index, payload] of payloads.entries()) {
    const bytes = payload.embedding?.values ?? new Uint8Array();
    if (bytes.byteLength === 0 || bytes.byteLength % 4 !== 0) {
      return { ok: false, message: `embedding ${index} is ${bytes.byteLength} bytes, not binary32 values` };
    }
    const vector = embeddingFromBytes(bytes);
    length ??= vector.length;
    if (vector.length !== length) {
      return { ok: false, message: `embedding ${index} has ${vector.length} values where ${length} are due` };
    }
    let squares = 0;
    for (const v of vector) squares += v * v;
    if (!Number.isFinite(squares) || Math.abs(Math.sqrt(squares) - 1) > NORM_TOLERANCE) {
      return {
        ok: false,
        message: `embedding ${index} is not a unit vector (its length is ${Math.sqrt(squares)})`,
      };
    }
    const tokens = payload.tokenCount;
    const expected = counts?.[index];
    if (
      expected !== undefined
        ? tokens !== expected
        : tokens < 1 || tokens > (request.inputTokenBounds[index] ?? 0)
    ) {
      return {
        ok: false,
        message:
          expected !== undefined
            ? `input ${index} is ${expected} tokens; the provider said ${tokens}`
            : `input ${index} cannot be ${tokens} tokens (at most ${request.inputTokenBounds[index]})`,
      };
    }
    promptTokens += tokens;
    embeddings.push(vector);
  }
  const usage = message.usage;
  if (usage?.promptTokens !== promptTokens || usage.completionTokens !== 0) {
    return {
      ok: false,
      message: `usage says ${usage?.promptTokens} prompt and ${usage?.completionTokens} completion tokens; the inputs are ${promptTokens} and 0`,
    };
  }
  return { ok: true, embeddings, promptTokens };
}
