import { type Cancel, Endpoint, type InferenceRequest } from "@darkbloom/protocol/provider/v1";
import {
  acceptedMessage,
  chunkMessage,
  completeMessage,
  embeddingChunkMessage,
  errorMessage,
  logprobsChunkMessage,
  type ResponseSignatureInit,
  sealedChunkMessage,
} from "@darkbloom/protocol/provider-client";
import { type BoxKey, BoxKeyPair } from "@darkbloom/protocol/sealed-box";
import { embeddingBytes } from "@darkbloom/protocol/verifiable-embeddings";
import { sha256, textChoices } from "@darkbloom/protocol/verifiable-response";
import { signResponse } from "./response-signing.js";
import {
  defaultScript,
  type FailureMode,
  type Plan,
  planFor,
  type ReceivedRequest,
  type ScriptError,
  type ScriptFn,
} from "./script.js";
import { embeddingInputs, scriptedEmbeddings, signEmbeddings } from "./scripted-embeddings.js";
import type { ScriptedProviderOptions } from "./scripted-options.js";
import { type ActiveRequest, pause, type Session, stall, stopRequest } from "./scripted-session.js";

/** What a scripted provider records of the requests it serves (its public lists and counters). */
export interface RequestLog {
  readonly received: ReceivedRequest[];
  readonly completed: string[];
  readonly failed: string[];
  readonly cancelled: string[];
  requestsCompleted: number;
  requestsFailed: number;
  tokensGenerated: number;
}

/** The models a scripted provider serves, and which of them are loaded and warm now. */
export interface ScriptedModels {
  readonly served: ReadonlySet<string>;
  readonly loaded: Set<string>;
  readonly warm: Set<string>;
}

const EMPTY = new Uint8Array();

/**
 * Serves InferenceRequests from the provider's script: opens the body, refuses what the daemon would
 * refuse, then plays the plan (accept, prefill delay, chunks, complete) with the scripted failure on
 * the way. The wire messages are the daemon's own (@darkbloom/protocol/provider-client); what is
 * scripted here is only what a test asks for: timings, chunking, failures, and the misbehaviour of
 * `options.misbehave` and of lying token counts.
 */
export class ScriptedRequests {
  private readonly script: ScriptFn;

  constructor(
    private readonly options: ScriptedProviderOptions,
    private readonly maxBatch: number,
    private readonly encryptionKey: BoxKeyPair | undefined,
    private readonly models: ScriptedModels,
    private readonly log: RequestLog,
    private readonly onReceived: (received: ReceivedRequest) => void,
  ) {
    this.script = options.script ?? defaultScript;
  }

  private get recording(): boolean {
    return this.options.recordRequests !== false;
  }

  onRequest(session: Session, request: InferenceRequest): void {
    const opened = this.openBody(request);
    const received = receive(request, opened.body);
    if (this.recording) this.log.received.push(received);
    this.onReceived(received);
    if (session.halted) {
      opened.key?.wipe();
      return;
    }
    const refusal = this.refusal(session, request, received, opened.refusal);
    if (refusal) {
      opened.key?.wipe();
      this.sendError(session, received.requestId, refusal);
      return;
    }
    let plan: Plan;
    try {
      plan = planFor(this.script(received), received);
    } catch (error) {
      opened.key?.wipe();
      const reason = error instanceof Error ? error.message : String(error);
      this.sendError(session, received.requestId, providerError(`the provider's script threw: ${reason}`));
      return;
    }
    const active: ActiveRequest = {
      stopped: false,
      wake: undefined,
      key: opened.key,
      requestSha256: this.options.responseSigningKey ? sha256(received.rawBody) : EMPTY,
      model: received.model,
      endpoint: received.endpoint,
      inputs: received.endpoint === Endpoint.EMBEDDINGS ? embeddingInputs(received.body) : [],
    };
    session.active.set(received.requestId, active);
    this.models.loaded.add(received.model);
    this.models.warm.add(received.model);
    void this.serve(session, received.requestId, plan, active);
  }

  onCancel(session: Session, cancel: Cancel): void {
    if (this.recording) this.log.cancelled.push(cancel.requestId);
    const active = session.active.get(cancel.requestId);
    if (active) {
      stopRequest(active);
      session.release(cancel.requestId, active);
    }
  }

  /** Opens a sealed body with the provider's key; plaintext is read only with encryption off. */
  private openBody(request: InferenceRequest): { body: Uint8Array; key?: BoxKey; refusal?: ScriptError } {
    const body = request.body;
    if (!this.encryptionKey) {
      if (body.case === "plaintextBody") return { body: body.value };
      return { body: EMPTY, refusal: invalidRequest("this provider has no encryption key; send plaintext") };
    }
    if (body.case === "plaintextBody") {
      return {
        body: EMPTY,
        refusal: {
          httpStatus: 400,
          code: "encryption_required",
          message: "this provider only accepts sealed request bodies",
          retryable: false,
        },
      };
    }
    if (body.case !== "sealedBody")
      return { body: EMPTY, refusal: invalidRequest("the request has no body") };
    let key: BoxKey | undefined;
    try {
      key = this.encryptionKey.keyFor(body.value.senderPublicKey);
      return { body: key.open(body.value), key };
    } catch {
      key?.wipe();
      return {
        body: EMPTY,
        refusal: {
          httpStatus: 500,
          code: "decryption_failed",
          message: "the sealed request body did not open with this provider's key",
          retryable: true,
        },
      };
    }
  }

  private refusal(
    session: Session,
    request: InferenceRequest,
    received: ReceivedRequest,
    bodyRefusal: ScriptError | undefined,
  ): ScriptError | undefined {
    if (!this.models.served.has(request.model)) {
      return invalidRequest(`model ${JSON.stringify(request.model)} is not served by this provider`);
    }
    if (bodyRefusal) return bodyRefusal;
    if (received.body === undefined) return invalidRequest("request body is not valid JSON");
    if (session.active.has(request.requestId)) {
      return invalidRequest(`request ${request.requestId} is already in flight`);
    }
    if (session.draining) return unavailable("provider_draining", "provider is draining");
    if (session.active.size >= this.maxBatch) {
      return unavailable("provider_busy", `all ${this.maxBatch} batch slots are busy`);
    }
    return undefined;
  }

  private async serve(session: Session, requestId: string, plan: Plan, active: ActiveRequest): Promise<void> {
    try {
      await this.play(session, requestId, plan, active);
    } finally {
      session.release(requestId, active);
      active.key?.wipe();
    }
  }

  /** Accept, prefill, chunks, complete: the script's request lifecycle, with its failure on the way. */
  private async play(session: Session, requestId: string, plan: Plan, active: ActiveRequest): Promise<void> {
    const failure = plan.failure;
    if (failure?.when === "before_accept") {
      await this.fail(session, requestId, failure.mode, active);
      return;
    }
    session.send(acceptedMessage(requestId));
    if (plan.firstTokenDelayMs > 0) await pause(active, plan.firstTokenDelayMs);
    if (active.stopped) return;
    if (failure?.when === "before_first_token") {
      await this.fail(session, requestId, failure.mode, active);
      return;
    }
    if (active.endpoint === Endpoint.EMBEDDINGS) {
      this.embed(session, requestId, plan, active);
      return;
    }
    await this.generate(session, requestId, plan, active);
    if (active.stopped) return;
    if (failure) await this.fail(session, requestId, failure.mode, active);
    else this.complete(session, requestId, plan, active);
  }

  /** An embeddings answer: one chunk per input (the script's vectors and counts), then the usage. */
  private embed(session: Session, requestId: string, plan: Plan, active: ActiveRequest): void {
    const { vectors, tokens, promptTokens } = scriptedEmbeddings(active.inputs, plan.embeddings);
    const key = this.chunkKey(active);
    for (const [index, vector] of vectors.entries()) {
      session.send(
        embeddingChunkMessage(
          requestId,
          BigInt(index),
          key,
          index,
          embeddingBytes(vector),
          tokens[index] ?? 0,
        ),
      );
    }
    const signingKey = this.options.responseSigningKey;
    const signature =
      signingKey &&
      signEmbeddings(signingKey, this.options.misbehave?.forgeSignature, active.requestSha256, {
        providerId: session.ack?.providerId ?? "",
        model: active.model,
        embeddings: vectors,
        promptTokens,
      });
    session.send(completeMessage(requestId, promptTokens, 0, [], signature));
    this.log.requestsCompleted++;
    if (this.recording) this.log.completed.push(requestId);
  }

  /**
   * Sends the plan's chunks: `tokensPerChunk` tokens per chunk, one chunk per choice per step, each
   * claiming `claimedTokensPerChunk` tokens when the script lies. Unlike the daemon, chunks are never
   * coalesced: a test decides where their boundaries fall.
   */
  private async generate(
    session: Session,
    requestId: string,
    plan: Plan,
    active: ActiveRequest,
  ): Promise<void> {
    const { tokens, emit, choices, tokensPerChunk, interTokenDelayMs } = plan;
    const key = this.chunkKey(active);
    let sequence = 0n;
    for (let position = 0; position < emit; ) {
      const end = Math.min(position + tokensPerChunk, emit);
      const count = end - position;
      if (position > 0) {
        if (interTokenDelayMs > 0) await pause(active, interTokenDelayMs * count);
        else if (session.congested) await session.catchUp();
        if (active.stopped) return;
      }
      const text = count === 1 ? (tokens[position] ?? "") : tokens.slice(position, end).join("");
      const claimed = plan.claimedTokensPerChunk ?? count;
      const logprobs = plan.logprobs?.slice(position, end);
      for (let choice = 0; choice < choices; choice++) {
        session.send(
          logprobs
            ? logprobsChunkMessage(requestId, sequence++, key, text, claimed, choice, logprobs)
            : key
              ? sealedChunkMessage(requestId, sequence++, key, text, claimed, choice)
              : chunkMessage(requestId, sequence++, text, claimed, choice),
        );
      }
      this.log.tokensGenerated += count * choices;
      position = end;
    }
  }

  /** The key chunks are sealed with: the request's, or none or a wrong one for a misbehaving provider. */
  private chunkKey(active: ActiveRequest): BoxKey | undefined {
    const misbehave = this.options.misbehave;
    if (misbehave?.plaintextChunks) return undefined;
    if (active.key && misbehave?.sealChunksToAnotherKey && this.encryptionKey) {
      return this.encryptionKey.keyFor(BoxKeyPair.generate().publicKey);
    }
    return active.key;
  }

  private complete(session: Session, requestId: string, plan: Plan, active: ActiveRequest): void {
    const completionTokens = plan.completionTokens ?? plan.emit * plan.choices;
    const choices = Array.from({ length: plan.choices }, (_, index) => ({
      index,
      finishReason: plan.finishReason,
    }));
    session.send(
      completeMessage(
        requestId,
        plan.promptTokens,
        completionTokens,
        choices,
        this.signResponse(session, plan, active, completionTokens),
      ),
    );
    this.log.requestsCompleted++;
    if (this.recording) this.log.completed.push(requestId);
  }

  /** The response signature over the request as opened and the response as sent. */
  private signResponse(
    session: Session,
    plan: Plan,
    active: ActiveRequest,
    completionTokens: number,
  ): ResponseSignatureInit | undefined {
    const key = this.options.responseSigningKey;
    if (!key) return undefined;
    return signResponse(key, this.options.misbehave?.forgeSignature, active.requestSha256, {
      providerId: session.ack?.providerId ?? "",
      model: active.model,
      choices: textChoices(
        Array.from({ length: plan.choices }, () => plan.tokens.slice(0, plan.emit).join("")),
        Array.from({ length: plan.choices }, () => plan.finishReason),
      ).map((c) => (plan.logprobs ? { ...c, logprobs: plan.logprobs.slice(0, plan.emit) } : c)),
      usage: { promptTokens: plan.promptTokens, completionTokens },
    });
  }

  private async fail(
    session: Session,
    requestId: string,
    mode: FailureMode,
    active: ActiveRequest,
  ): Promise<void> {
    if (mode === "stall") {
      await stall(active);
    } else if (mode === "disconnect") {
      await session.drop();
    } else {
      this.sendError(session, requestId, mode);
    }
  }

  private sendError(session: Session, requestId: string, error: ScriptError): void {
    session.send(errorMessage(requestId, error));
    this.log.requestsFailed++;
    if (this.recording) this.log.failed.push(requestId);
  }
}

function receive(request: InferenceRequest, rawBody: Uint8Array): ReceivedRequest {
  return {
    requestId: request.requestId,
    model: request.model,
    endpoint: request.endpoint,
    sealed: request.body.case === "sealedBody",
    body: parseJson(rawBody),
    rawBody,
    maxTokens: request.maxTokens,
    stream: request.stream,
    promptTokensEstimate: request.promptTokensEstimate,
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function parseJson(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return undefined;
  try {
    return JSON.parse(utf8.decode(bytes));
  } catch {
    return undefined;
  }
}

function invalidRequest(message: string): ScriptError {
  return { httpStatus: 400, code: "invalid_request_error", message, retryable: false };
}

function unavailable(code: string, message: string): ScriptError {
  return { httpStatus: 503, code, message, retryable: true };
}

function providerError(message: string): ScriptError {
  return { httpStatus: 500, code: "provider_error", message, retryable: false };
}
