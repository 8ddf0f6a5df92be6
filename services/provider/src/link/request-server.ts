import { shownToolCalls } from "@darkbloom/models/tools";
import type { SignedLogprob } from "@darkbloom/protocol/logprobs";
import {
  type Cancel,
  type ConnectRequest,
  Endpoint,
  type InferenceRequest,
} from "@darkbloom/protocol/provider/v1";
import {
  acceptedMessage,
  ChunkDraft,
  completeMessage,
  errorMessage,
  type InferenceFailure,
  type ResponseSignatureInit,
} from "@darkbloom/protocol/provider-client";
import { type BoxKey, type BoxKeyPair, wipe } from "@darkbloom/protocol/sealed-box";
import {
  hex,
  RESPONSE_SIGNATURE_VERSION,
  responseSha256,
  responseSignatureMessage,
  sha256,
  shownChoice,
} from "@darkbloom/protocol/verifiable-response";
import type { Logger } from "pino";
import type {
  EmbeddingJob,
  EmbeddingRequest,
  Engine,
  GenerationRequest,
  GenerationResult,
  ModelFile,
  TokenEvent,
  TokenLogprob,
} from "../engine/engine.js";
import { type EmbeddingsCompletion, embeddingChunk, embeddingsCompletion } from "./embedding-response.js";
import { inferenceFailure, Refusals } from "./errors.js";
import type { Heartbeats } from "./heartbeats.js";
import type { ModelOperations } from "./model-operations.js";
import type { LinkCounters, LinkObserver, RequestOutcome, ResponseSigner } from "./options.js";
import { choiceRequests, parseEmbeddingsBody, parseRequestBody } from "./request-body.js";
import type { Session } from "./session.js";

/** What a request asks the engine for: one generation per choice, or the embeddings of its inputs. */
type Work =
  | { kind: "generate"; submissions: GenerationRequest[] }
  | { kind: "embed"; request: EmbeddingRequest };

/** The signed record of a response: its hash and the exact bytes the provider signs. */
interface SignedRecord {
  responseSha256: Uint8Array;
  message: Uint8Array;
  version: number;
}

/** One request being served: its engine jobs, chunks and results, and its box key. */
export interface ActiveRequest {
  requestId: string;
  model: string;
  session: Session;
  /** The engine's generations (one per choice) or embedding job: what a cancel, failure or loss stops. */
  jobs: { cancel(): void }[];
  drafts: (ChunkDraft | undefined)[];
  results: (GenerationResult | undefined)[];
  n: number;
  nextSequence: bigint;
  /** The request's box key: chunks are sealed with it; wiped once the last one is on the wire. */
  key: BoxKey;
  /** SHA-256 of the request body as opened: what the response signature covers. */
  requestSha256: Uint8Array;
  /** Each choice's whole text as sent: the response bytes the signature covers. */
  texts: string[];
  /** With logprobs asked for: each choice's token entries as sent (signed with the text). */
  logprobs: SignedLogprob[][] | undefined;
  /** Whether any chunk was queued: failures after that are not retryable elsewhere. */
  sent: boolean;
  /** A terminal message was sent, or the request was cancelled or lost: nothing more is sent. */
  finished: boolean;
}

export interface RequestServerParts {
  engine: Engine;
  /** The models registered; requests for others are refused. */
  served: ReadonlyMap<string, ModelFile>;
  encryptionKey: BoxKeyPair;
  responseSigner: ResponseSigner | undefined;
  counters: LinkCounters;
  observer?: LinkObserver | undefined;
  log: Logger;
  models: ModelOperations;
  heartbeats: Heartbeats;
  /** Whether the link is stopping: new requests are refused. */
  stopping: () => boolean;
  /** The session's last request left (a drain waiting for it may end the stream). */
  onIdle: (session: Session) => void;
}

/**
 * Serves InferenceRequests, one state machine per request: refused, or accepted (InferenceAccepted)
 * with one engine generation per choice, whose tokens stream back as sealed chunks (an embeddings
 * request: one engine embedding job, one sealed chunk per input's vector), ending in exactly one
 * terminal message (InferenceComplete, signed, or InferenceError) unless the coordinator cancelled
 * it or the stream ended first.
 */
export class RequestServer {
  private readonly engine: Engine;
  private readonly served: ReadonlyMap<string, ModelFile>;
  private readonly encryptionKey: BoxKeyPair;
  private readonly responseSigner: ResponseSigner | undefined;
  private readonly counters: LinkCounters;
  private readonly observer: LinkObserver | undefined;
  private readonly log: Logger;
  private readonly models: ModelOperations;
  private readonly heartbeats: Heartbeats;
  private readonly stopping: () => boolean;
  private readonly onIdle: (session: Session) => void;

  constructor(parts: RequestServerParts) {
    this.engine = parts.engine;
    this.served = parts.served;
    this.encryptionKey = parts.encryptionKey;
    this.responseSigner = parts.responseSigner;
    this.counters = parts.counters;
    this.observer = parts.observer;
    this.log = parts.log;
    this.models = parts.models;
    this.heartbeats = parts.heartbeats;
    this.stopping = parts.stopping;
    this.onIdle = parts.onIdle;
  }

  /**
   * Accepts a request or refuses it with an InferenceError: opens the sealed body with the provider's
   * key, parses it into one generation per choice (or an embeddings request) and submits them (after
   * reloading a model the coordinator unloaded).
   */
  onRequest(session: Session, request: InferenceRequest): void {
    const { requestId, model } = request;
    if (session.active.has(requestId)) {
      this.log.warn({ requestId }, "duplicate InferenceRequest ignored");
      return;
    }
    let work: Work = { kind: "generate", submissions: [] };
    let refusal: InferenceFailure | undefined;
    let key: BoxKey | undefined;
    let requestSha256: Uint8Array = new Uint8Array();
    const embeddings = request.endpoint === Endpoint.EMBEDDINGS;
    if (session.draining || this.stopping()) refusal = Refusals.draining();
    else if (!this.served.has(model)) refusal = Refusals.modelNotServed(model);
    else if (embeddings && !this.engine.embed) refusal = Refusals.embeddingsUnsupported(this.engine.backend);
    else if (request.body.case === "plaintextBody") refusal = Refusals.encryptionRequired();
    else if (request.body.case !== "sealedBody") refusal = Refusals.emptyBody();
    else {
      let body: Buffer | undefined;
      try {
        key = this.encryptionKey.keyFor(request.body.value.senderPublicKey);
        body = key.open(request.body.value);
      } catch {
        refusal = Refusals.unopenable();
      }
      if (body) {
        try {
          requestSha256 = sha256(body);
          if (embeddings) {
            const { inputs, dimensions } = parseEmbeddingsBody(body);
            work = { kind: "embed", request: { id: requestId, model, inputs, dimensions } };
          } else {
            const parsed = parseRequestBody(request.endpoint, body, request.maxTokens);
            work = { kind: "generate", submissions: choiceRequests(requestId, model, parsed) };
          }
        } catch (error) {
          refusal = inferenceFailure(error, false);
        } finally {
          wipe(body); // the prompt now lives only in the parsed strings
        }
      }
    }
    if (refusal) {
      key?.wipe();
      session.outbound.send(errorMessage(requestId, refusal));
      this.count(model, "refused");
      this.log.info({ requestId, model, code: refusal.code }, "request refused");
      return;
    }
    const choices = work.kind === "generate" ? work.submissions.length : 0;
    const active: ActiveRequest = {
      requestId,
      model,
      session,
      jobs: [],
      drafts: [],
      results: [],
      n: choices,
      nextSequence: 0n,
      key: key as BoxKey,
      requestSha256,
      texts: Array.from({ length: choices }, () => ""),
      logprobs:
        work.kind === "generate" && work.submissions[0]?.sampling.logprobs !== undefined
          ? Array.from({ length: choices }, () => [])
          : undefined,
      sent: false,
      finished: false,
    };
    session.active.set(requestId, active);
    this.heartbeats.used(model);
    const reload = this.models.reloadIfUnloaded(model);
    if (reload) {
      // Unloaded on the coordinator's command: load it again for this request.
      reload.then(
        () => {
          if (!active.finished) this.begin(active, work);
        },
        (error: unknown) => this.fail(active, inferenceFailure(error, false), error),
      );
      return;
    }
    this.begin(active, work);
  }

  /** Submits one generation per choice (or the embedding job), then acknowledges the request. */
  private begin(active: ActiveRequest, work: Work): void {
    if (work.kind === "embed") {
      this.beginEmbedding(active, work.request);
      return;
    }
    const generations = [];
    for (const [index, submission] of work.submissions.entries()) {
      try {
        const generation = this.engine.generate(submission, (event) => this.onToken(active, index, event));
        generations.push(generation);
        active.jobs.push(generation);
      } catch (error) {
        this.fail(active, inferenceFailure(error, active.sent), error);
        return;
      }
    }
    active.session.outbound.send(acceptedMessage(active.requestId));
    for (const [index, generation] of generations.entries()) {
      generation.done.then(
        (result) => this.onChoiceDone(active, index, result),
        (error: unknown) => this.fail(active, inferenceFailure(error, active.sent), error),
      );
    }
  }

  /**
   * Submits the embedding job and acknowledges the request; each input's vector goes out as a sealed
   * chunk as soon as it is computed (embedding-response.ts), and once every input has one, the
   * InferenceComplete with the inputs' tokens as the usage, signed over the embeddings record.
   */
  private beginEmbedding(active: ActiveRequest, request: EmbeddingRequest): void {
    let job: EmbeddingJob | undefined;
    try {
      // The chunks do not mark the request `sent`: the coordinator shows nothing before the
      // completion, so a failure after some of them may still be served by another provider.
      job = this.engine.embed?.(request, (event) => {
        if (!active.finished) active.session.outbound.sendChunk(embeddingChunk(active, event));
      });
    } catch (error) {
      this.fail(active, inferenceFailure(error, false), error);
      return;
    }
    if (!job) {
      this.fail(active, Refusals.embeddingsUnsupported(this.engine.backend));
      return;
    }
    active.jobs.push(job);
    active.session.outbound.send(acceptedMessage(active.requestId));
    job.done.then(
      (result) => {
        if (active.finished) return;
        let completion: EmbeddingsCompletion;
        try {
          completion = embeddingsCompletion(active, request.inputs.length, result);
        } catch (error) {
          this.fail(active, inferenceFailure(error, false), error);
          return;
        }
        const complete = (signature?: ResponseSignatureInit) =>
          completeMessage(active.requestId, completion.promptTokens, 0, [], signature);
        this.finish(active, complete, completion.record);
      },
      (error: unknown) => this.fail(active, inferenceFailure(error, false), error),
    );
  }

  private onToken(active: ActiveRequest, choice: number, event: TokenEvent): void {
    if (active.finished || (event.text === "" && event.tokens === 0 && !event.logprobs?.length)) return;
    active.texts[choice] += event.text;
    let entries: SignedLogprob[] | undefined;
    if (active.logprobs) {
      entries = signedLogprobs(event.logprobs ?? []);
      active.logprobs[choice]?.push(...entries);
    }
    if (active.drafts[choice]?.append(event.text, event.tokens, entries)) return;
    const draft = new ChunkDraft(
      active.requestId,
      active.nextSequence++,
      choice,
      event.text,
      event.tokens,
      active.key,
      undefined,
      entries,
    );
    active.drafts[choice] = draft;
    active.sent = true;
    active.session.outbound.sendChunk(draft);
  }

  private onChoiceDone(active: ActiveRequest, choice: number, result: GenerationResult): void {
    if (active.finished) return;
    if (result.finishReason === "cancelled") {
      // Not cancelled by us (that marks the request finished first): the engine stopped it.
      this.fail(active, Refusals.cancelledByEngine(active.sent));
      return;
    }
    active.results[choice] = result;
    const results = active.results.filter((r): r is GenerationResult => r !== undefined);
    if (results.length < active.n) return;
    const promptTokens = Math.max(...results.map((r) => r.promptTokens));
    const completionTokens = results.reduce((sum, r) => sum + r.completionTokens, 0);
    const choices = active.results.map((r, index) => ({ index, finishReason: r?.finishReason ?? "stop" }));
    // Everything the consumer is shown: the coordinator refuses a signature that differs from it.
    const record = (): SignedRecord => {
      const responseHash = responseSha256({
        providerId: active.session.ack?.providerId ?? "",
        model: active.model,
        choices: active.results.map((r, index) => {
          const finishReason = choices[index]?.finishReason ?? "stop";
          if (r?.tools === undefined) {
            const shown = shownChoice(index, active.texts[index] ?? "", [], finishReason);
            return active.logprobs ? { ...shown, logprobs: active.logprobs[index] ?? [] } : shown;
          }
          const calls = shownToolCalls(hex(active.requestSha256), index, r.tools.calls);
          return shownChoice(index, r.tools.content, calls, finishReason);
        }),
        usage: { promptTokens, completionTokens },
      });
      return {
        responseSha256: responseHash,
        message: responseSignatureMessage(active.requestSha256, responseHash),
        version: RESPONSE_SIGNATURE_VERSION,
      };
    };
    this.finish(
      active,
      (signature) => completeMessage(active.requestId, promptTokens, completionTokens, choices, signature),
      record,
    );
  }

  /**
   * Ends a request with its InferenceComplete (`complete`), signed over `record()` (the response's
   * hash and the message to sign) when the daemon has a signing key.
   */
  private finish(
    active: ActiveRequest,
    complete: (signature?: ResponseSignatureInit) => ConnectRequest,
    record: () => SignedRecord,
  ): void {
    active.finished = true;
    const send = (signature?: ResponseSignatureInit) => {
      active.session.outbound.send(complete(signature));
      this.count(active.model, "completed");
      this.release(active); // after the terminal message: releasing the last request may end a drain
    };
    const signer = this.responseSigner;
    if (!signer) {
      send();
      return;
    }
    let signed: SignedRecord;
    try {
      signed = record();
    } catch (error) {
      active.finished = false;
      this.fail(active, { ...Refusals.signingFailed(), retryable: false }, error);
      return;
    }
    signer.sign(signed.message).then(
      (signature) =>
        send({
          requestSha256: active.requestSha256,
          responseSha256: signed.responseSha256,
          signature,
          version: signed.version,
        }),
      (error: unknown) => {
        // Unsigned would be flagged by the coordinator; fail the request instead (retryable: nothing
        // reached the consumer yet only for non-streaming requests, which the coordinator knows).
        this.log.warn(
          { requestId: active.requestId, err: (error as Error).message },
          "response signing failed",
        );
        active.finished = false;
        this.fail(active, { ...Refusals.signingFailed(), retryable: false }, error);
      },
    );
  }

  /** Ends a request with an InferenceError and cancels its other choices. */
  private fail(active: ActiveRequest, failure: InferenceFailure, cause?: unknown): void {
    if (active.finished) return;
    active.finished = true;
    for (const job of active.jobs) job.cancel();
    active.session.outbound.send(errorMessage(active.requestId, failure));
    this.count(active.model, "failed");
    this.release(active);
    const level = failure.httpStatus >= 500 ? "warn" : "info";
    this.log[level](
      {
        requestId: active.requestId,
        model: active.model,
        code: failure.code,
        retryable: failure.retryable,
        err: cause instanceof Error && failure.code === "provider_error" ? cause.message : undefined,
      },
      "request failed",
    );
  }

  /** The coordinator cancelled a request (its consumer left, a deadline passed): stop generating. */
  onCancel(session: Session, cancel: Cancel): void {
    const active = session.active.get(cancel.requestId);
    if (!active || active.finished) return;
    active.finished = true;
    for (const job of active.jobs) job.cancel();
    this.release(active);
    this.count(active.model, "cancelled");
    this.log.info(
      { requestId: cancel.requestId, reason: cancel.reason },
      "request cancelled by the coordinator",
    );
  }

  private release(active: ActiveRequest): void {
    const { session } = active;
    if (session.active.get(active.requestId) !== active) return;
    session.active.delete(active.requestId);
    // Drafts of this request still queued are sealed when the transport takes them: wipe after.
    session.outbound.afterFlush(() => active.key.wipe());
    if (session.active.size === 0) {
      session.wakeIdleWaiters();
      this.onIdle(session);
    }
  }

  /** Fails every request in flight with `failure` (a drain's deadline passed, the link is stopping). */
  failAll(session: Session, failure: (active: ActiveRequest) => InferenceFailure): void {
    for (const active of [...session.active.values()]) this.fail(active, failure(active));
  }

  /**
   * The stream ended: the coordinator fails or retries what was in flight, so nothing more is sent
   * for it; the engine is freed at once and each key is wiped once the transport let go of it.
   */
  abandon(session: Session): void {
    for (const active of session.active.values()) {
      session.outbound.afterFlush(() => active.key.wipe());
      if (active.finished) continue;
      active.finished = true;
      for (const job of active.jobs) job.cancel();
      this.count(active.model, "abandoned");
    }
    session.active.clear();
  }

  /**
   * Counts how a request ended: the heartbeat's counters and the observer's from the same call, so
   * the two cannot disagree.
   */
  private count(model: string, outcome: RequestOutcome): void {
    if (outcome === "completed") this.counters.requestsCompleted++;
    else if (outcome === "refused" || outcome === "failed") this.counters.requestsFailed++;
    else if (outcome === "cancelled") this.counters.requestsCancelled++;
    this.observer?.requestFinished(model, outcome);
  }
}

/** An engine's token entries as the record signs them and chunks carry them (the same bytes and figures). */
function signedLogprobs(entries: readonly TokenLogprob[]): SignedLogprob[] {
  return entries.map((e) => ({
    token: e.bytes,
    logprob: e.logprob,
    top: e.top.map((t) => ({ token: t.bytes, logprob: t.logprob })),
  }));
}
