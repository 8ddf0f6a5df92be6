/**
 * Addon errors carry a stable `code` and are classified by it, never by class: an Error thrown by
 * an addon is a plain Error, not an instance of any TypeScript class.
 */
export interface ErrorCodes<C extends string> {
  /** The code of any thrown value when it is one of these, else undefined. */
  codeOf(error: unknown): C | undefined;
  /** An Error with one of these codes. */
  coded(code: C, message: string): Error;
}

export function errorCodes<C extends string>(codes: readonly C[]): ErrorCodes<C> {
  const known: ReadonlySet<string> = new Set(codes);
  return {
    codeOf: (error) => {
      const code = (error as { code?: unknown } | null)?.code;
      return typeof code === "string" && known.has(code) ? (code as C) : undefined;
    },
    coded: (code, message) => Object.assign(new Error(message), { code }),
  };
}
