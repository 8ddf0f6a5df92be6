import http2 from "node:http2";
import type { CoordinatorConfig } from "../config.js";
import { ApiError } from "../errors/index.js";
import type { LimitName } from "./connection-guard.js";
import type { HttpResponse } from "./types.js";

/** What a completion response may hold and how long it may wait for its consumer (serve flags). */
export type ResponseLimits = Pick<
  CoordinatorConfig,
  "maxResponseBufferBytes" | "maxResponseBytes" | "sendTimeoutMs"
>;

/** Why a response was cut. */
export type CutReason = Extract<LimitName, "send_timeout" | "response_buffer" | "response_bytes">;

/** What the consumer is told when its response is cut (in-band on a stream, as the body otherwise). */
export function responseCutError(reason: CutReason, limits: ResponseLimits): ApiError {
  if (reason === "response_bytes") {
    return new ApiError({
      status: 502,
      type: "provider_error",
      code: "response_too_large",
      message: `The response passed the coordinator's limit of ${limits.maxResponseBytes} bytes and was stopped.`,
    });
  }
  return new ApiError({
    status: 408,
    type: "invalid_request_error",
    code: "response_not_read",
    message:
      reason === "response_buffer"
        ? `The client read the response too slowly (more than ${limits.maxResponseBufferBytes} bytes waited for it), so it was stopped.`
        : `The client read nothing of the response for ${limits.sendTimeoutMs} ms, so it was stopped.`,
  });
}

/**
 * Bytes written to a response that have not reached the kernel: for HTTP/1.1 the response's and its
 * socket's buffers, for HTTP/2 also what the stream has handed to nghttp2 and flow control holds back
 * (writableLength leaves that out).
 */
export function unsent(res: HttpResponse): number {
  return res.stream?.bufferSize ?? res.writableLength;
}

/**
 * Closes a response at once: its HTTP/1.1 connection, or its HTTP/2 stream with CANCEL (destroy()
 * would reset it with NO_ERROR, which a client that is not reading takes for a normal end it waits
 * to read up to).
 */
export function cutOff(res: HttpResponse): void {
  if (res.stream) res.stream.close(http2.constants.NGHTTP2_CANCEL);
  else res.destroy();
}

/**
 * Writes one streamed response no faster than its consumer reads it, holding a bounded amount:
 * what is written in one turn of the event loop leaves together (one syscall); while the response's
 * buffer is full (`write` returned false) nothing more is handed to it and the rest waits here until
 * 'drain'. The response is cut (onCut) once more than `maxResponseBufferBytes` wait unsent for the
 * consumer (here and in the response's and socket's buffers), once it has grown past `maxResponseBytes`, or
 * when its consumer has taken nothing for `sendTimeoutMs`; the write that passed a limit is still
 * sent, so every byte accepted reaches a consumer that reads. On onCut the owner ends the response
 * (with an error event) or, after a send timeout, finds it already closed.
 */
export class BoundedWriter {
  private pending = "";
  private pendingBytes = 0;
  private total = 0;
  private flushScheduled = false;
  /** The last write returned false: wait for 'drain' before writing more. */
  private blocked = false;
  private ended = false;
  private readonly stall: StallWatch;

  constructor(
    private readonly res: HttpResponse,
    private readonly limits: ResponseLimits,
    private readonly onCut: (reason: CutReason) => void,
  ) {
    this.stall = new StallWatch(res, limits.sendTimeoutMs, () => {
      this.discard();
      cutOff(res);
      onCut("send_timeout");
    });
  }

  /** Bytes accepted so far. */
  get bytes(): number {
    return this.total;
  }

  write(s: string): void {
    if (this.ended) return;
    const bytes = Buffer.byteLength(s);
    this.total += bytes;
    this.pending += s;
    this.pendingBytes += bytes;
    if (!this.flushScheduled && !this.blocked) {
      this.flushScheduled = true;
      // After this turn's I/O callbacks: chunks that arrived together leave together.
      setImmediate(this.flush);
    }
    // What this turn produced is handed over at its end whatever the consumer does; only what waits
    // behind a full buffer, and that buffer, count as held for a slow consumer.
    const held = (this.blocked ? this.pendingBytes : 0) + unsent(this.res);
    if (this.total > this.limits.maxResponseBytes) this.onCut("response_bytes");
    else if (held > this.limits.maxResponseBufferBytes) this.onCut("response_buffer");
  }

  /** Writes what is pending and `s`, and ends the response; a consumer that then reads nothing is cut. */
  end(s = ""): void {
    if (this.ended) return;
    this.ended = true;
    this.res.off("drain", this.onDrain);
    const out = this.pending + s;
    this.pending = "";
    this.pendingBytes = 0;
    this.res.end(out);
    this.stall.untilFinished();
  }

  /**
   * The consumer is gone: drop what waits and stop the timers. After end() there is nothing to drop,
   * and the watch on the ended response stays (it stops by itself when the response closes).
   */
  discard(): void {
    if (this.ended) return;
    this.ended = true;
    this.pending = "";
    this.pendingBytes = 0;
    this.res.off("drain", this.onDrain);
    this.stall.stop();
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.ended || this.blocked || this.pending === "" || this.res.writableEnded) return;
    const out = this.pending;
    this.pending = "";
    this.pendingBytes = 0;
    if (!this.res.write(out)) {
      this.blocked = true;
      this.res.once("drain", this.onDrain);
      this.stall.start();
    }
  };

  private readonly onDrain = (): void => {
    this.blocked = false;
    this.stall.stop();
    this.flush();
  };
}

/**
 * Closes a response its consumer stopped reading: armed while the response's buffer is full (or after
 * its end, until it is handed to the kernel), it fires when `timeoutMs` passed with no byte taken. Any
 * progress restarts it, so a slow but steady reader is never cut by it (nginx's send_timeout).
 */
export class StallWatch {
  private timer: NodeJS.Timeout | undefined;
  private left = 0;
  private readonly onFinish = () => this.stop();

  constructor(
    private readonly res: HttpResponse,
    private readonly timeoutMs: number,
    private readonly onStall: () => void,
  ) {}

  start(): void {
    if (this.timer) return;
    this.left = unsent(this.res);
    this.timer = setTimeout(this.check, this.timeoutMs);
    this.timer.unref();
  }

  /** For an ended response: watches until it has been handed over in full. */
  untilFinished(): void {
    this.stop();
    if (this.res.writableFinished) return;
    this.res.once("finish", this.onFinish);
    this.res.once("close", this.onFinish);
    this.start();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.res.off("finish", this.onFinish);
    this.res.off("close", this.onFinish);
  }

  private readonly check = (): void => {
    this.timer = undefined;
    const left = unsent(this.res);
    if (left === 0) {
      this.stop(); // nothing held (delivered, or the response is gone)
      return;
    }
    if (left < this.left) {
      this.start(); // it moved: another full period
      return;
    }
    this.stop();
    this.onStall();
  };
}

/**
 * Closes a response written by someone else (the Connect adapter) whose consumer takes nothing of it
 * for `timeoutMs`: checked every `timeoutMs` until it has finished; bytes handed to the kernel since
 * the last check are progress. Returns a function that stops the watch.
 */
export function watchProgress(res: HttpResponse, timeoutMs: number, onStall: () => void): () => void {
  // The bytes written to the response, counted on their way in: what left it is that minus what it
  // holds. (Bytes given to end() are not counted: HTTP/2's end() passes them through write().)
  let given = 0;
  const write = res.write;
  res.write = function (this: HttpResponse, chunk: string | Uint8Array, ...rest: unknown[]) {
    given += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.byteLength;
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  };
  let sent = 0;
  const timer = setInterval(() => {
    const held = unsent(res);
    const now = given - held;
    if (held > 0 && now <= sent) {
      stop();
      onStall();
      return;
    }
    sent = now;
  }, timeoutMs);
  timer.unref();
  const stop = () => {
    clearInterval(timer);
    res.off("finish", stop);
    res.off("close", stop);
  };
  res.once("finish", stop);
  res.once("close", stop);
  return stop;
}
