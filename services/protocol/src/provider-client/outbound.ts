import { Channel } from "../channel.js";
import type { ConnectRequest } from "../gen/darkbloom/provider/v1/provider_pb.js";
import type { SignedLogprob } from "../logprobs.js";
import type { BoxKey } from "../sealed-box.js";
import { chunkMessage, embeddingChunkMessage, logprobsChunkMessage, sealedChunkMessage } from "./messages.js";

/**
 * A chunk queued for the wire but not yet taken by the transport. While it waits, later tokens of the
 * same choice are appended to it instead of queueing another chunk: when the engine produces tokens
 * faster than the stream writes, they travel together. The message is built when the transport takes
 * it: with a `key` (the request's box key) the serialized ChunkPayload is sealed with it then. An
 * embeddings request's chunk carries one input's vector (`embedding`) and its token count, no text,
 * and is never appended to. A request that asked for log-probabilities has them on every chunk
 * (`logprobs`), appended with the text they are of.
 */
export class ChunkDraft {
  taken = false;

  constructor(
    readonly requestId: string,
    readonly sequence: bigint,
    readonly choiceIndex: number,
    public text: string,
    public tokenCount: number,
    readonly key?: BoxKey,
    readonly embedding?: { index: number; values: Uint8Array },
    readonly logprobs?: SignedLogprob[],
  ) {}

  /**
   * Adds text (and its tokens' log-probabilities) to the chunk; false once the transport has taken
   * it, for an embedding, or when only one of them has log-probabilities.
   */
  append(text: string, tokens: number, logprobs?: readonly SignedLogprob[]): boolean {
    if (this.taken || this.embedding || (logprobs === undefined) !== (this.logprobs === undefined))
      return false;
    this.text += text;
    this.tokenCount += tokens;
    if (logprobs) this.logprobs?.push(...logprobs);
    return true;
  }

  toMessage(): ConnectRequest {
    if (this.embedding) {
      const { index, values } = this.embedding;
      return embeddingChunkMessage(this.requestId, this.sequence, this.key, index, values, this.tokenCount);
    }
    if (this.logprobs) {
      return logprobsChunkMessage(
        this.requestId,
        this.sequence,
        this.key,
        this.text,
        this.tokenCount,
        this.choiceIndex,
        this.logprobs,
      );
    }
    return this.key
      ? sealedChunkMessage(
          this.requestId,
          this.sequence,
          this.key,
          this.text,
          this.tokenCount,
          this.choiceIndex,
        )
      : chunkMessage(this.requestId, this.sequence, this.text, this.tokenCount, this.choiceIndex);
  }
}

/** Runs once the transport has taken everything queued before it (e.g. wipes a request's key). */
class AfterFlush {
  constructor(readonly run: () => void) {}
}

type Item = ConnectRequest | ChunkDraft | AfterFlush;

/**
 * The provider's half of the stream: messages and chunk drafts, in order. Producers queue without
 * awaiting; the Connect client pulls through messages(), HTTP/2 flow control being the back-pressure.
 */
export class Outbound {
  private readonly channel = new Channel<Item>();

  get isClosed(): boolean {
    return this.channel.isClosed;
  }

  /** Messages waiting for the transport. */
  get size(): number {
    return this.channel.size;
  }

  /** Queues a message unless the stream is closed; returns whether it was queued. */
  send(message: ConnectRequest): boolean {
    return this.channel.offer(message);
  }

  /** Queues a chunk draft unless the stream is closed. */
  sendChunk(draft: ChunkDraft): boolean {
    return this.channel.offer(draft);
  }

  /**
   * Runs `fn` once the transport has taken everything queued so far (a request's last chunk drafts
   * are sealed by then), or at once when the stream is closed. If the transport drops the queue
   * instead, `fn` never runs.
   */
  afterFlush(fn: () => void): void {
    if (!this.channel.offer(new AfterFlush(fn))) fn();
  }

  /** Ends the stream after what is queued (END_STREAM). */
  close(): void {
    this.channel.close();
  }

  /**
   * The request stream for the Connect client. Its iterator also implements throw(), which the
   * client calls to abort the stream; next() builds a draft's message when the transport takes it.
   */
  messages(): AsyncIterable<ConnectRequest> {
    const channel = this.channel;
    return {
      [Symbol.asyncIterator]: () => {
        const inner = channel[Symbol.asyncIterator]();
        return {
          next: async (): Promise<IteratorResult<ConnectRequest>> => {
            for (;;) {
              const r = await inner.next();
              if (r.done) return { done: true, value: undefined };
              const item = r.value;
              if (item instanceof AfterFlush) {
                item.run();
                continue;
              }
              if (item instanceof ChunkDraft) {
                item.taken = true;
                return { done: false, value: item.toMessage() };
              }
              return { done: false, value: item };
            }
          },
          return: async () => {
            await inner.return?.();
            return { done: true, value: undefined };
          },
          throw: async (error: unknown) => {
            await inner.return?.();
            throw error;
          },
        };
      },
    };
  }
}
