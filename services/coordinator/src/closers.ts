import type { Logger } from "./log.js";

interface Closer {
  name: string;
  close: () => void | Promise<void>;
}

/**
 * What a running coordinator must shut down, in one ordered list: each resource registers its closer
 * as soon as it has started, and closing runs them in reverse, so that whatever was started later
 * (and may use what came before) stops first. The same list serves a start that fails halfway
 * (only what had started is closed) and a normal close().
 */
export class Closers {
  private readonly closers: Closer[] = [];
  private closing: Promise<void> | undefined;

  constructor(private readonly log: Logger) {}

  /** Registers the closer of a resource that has just started. */
  add(name: string, close: () => void | Promise<void>): void {
    if (this.closing) throw new Error(`${name} started while the coordinator was closing`);
    this.closers.push({ name, close });
  }

  /**
   * Runs every closer once, last registered first, each after the previous one finished. One that
   * fails does not stop the others (a database that cannot be closed must not leave the port open);
   * the first failure is thrown once all have run. Calling it again returns the same promise.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      let first: unknown;
      let failed = false;
      for (const { name, close } of [...this.closers].reverse()) {
        try {
          await close();
        } catch (e) {
          this.log.error({ err: e instanceof Error ? e.message : String(e), closing: name }, "close failed");
          if (!failed) first = e;
          failed = true;
        }
      }
      if (failed) throw first;
    })();
    return this.closing;
  }
}
