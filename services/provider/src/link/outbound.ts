import { Channel } from "@darkbloom/protocol";
import type { ConnectRequest } from "@darkbloom/protocol/provider/v1";

/**
 * A chunk queued for the wire but not yet taken by the transport. While it waits, later tokens of the
 * same choice are appended to it instead of queueing another chunk: when the engine produces tokens
 * faster than the stream writes, they travel together. The message is built when the transport takes
 * it (where sealing will happen once encryption lands).
 */
export class ChunkDraft {
  taken = false;

  constructor(
    readonly requestId: string,
    readonly sequence: bigint,
    readonly choiceIndex: number,
    public text: string,
    public tokenCount: number,
  ) {}

  /** Adds text to the chunk; false once the transport has taken it. */
  append(text: string, tokens: number): boolean {
    if (this.taken) return false;
    this.text += text;
    this.tokenCount += tokens;
    return true;
  }

  toMessage(): ConnectRequest {
    return {
      $typeName: "darkbloom.provider.v1.ConnectRequest",
      message: {
        case: "inferenceChunk",
        value: {
          $typeName: "darkbloom.provider.v1.InferenceChunk",
          requestId: this.requestId,
          sequence: this.sequence,
          payload: {
            case: "plaintext",
            value: {
              $typeName: "darkbloom.provider.v1.ChunkPayload",
              text: this.text,
              tokenCount: this.tokenCount,
              choiceIndex: this.choiceIndex,
            },
          },
        },
      },
    };
  }
}

type Item = ConnectRequest | ChunkDraft;

/** The provider's half of the stream: messages and chunk drafts, in order. */
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
            const r = await inner.next();
            if (r.done) return { done: true, value: undefined };
            const item = r.value;
            if (item instanceof ChunkDraft) {
              item.taken = true;
              return { done: false, value: item.toMessage() };
            }
            return { done: false, value: item };
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
