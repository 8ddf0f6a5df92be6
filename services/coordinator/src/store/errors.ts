/**
 * Errors the stores raise for bad input or missing rows. The admin service maps them to Connect codes;
 * anything else that escapes a store is an internal error.
 */

/** A caller passed a value that can never be valid (a malformed id, a negative price…). */
export class InvalidArgumentError extends Error {
  override readonly name = "InvalidArgumentError";

  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** The named row does not exist. */
export class NotFoundError extends Error {
  override readonly name: string = "NotFoundError";
}

/** The row to create exists already, or an idempotency key was reused for something else. */
export class AlreadyExistsError extends Error {
  override readonly name: string = "AlreadyExistsError";
}

/** Socket errors of a database connection that could not be made or was cut. */
const CONNECTION_ERRNOS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** SQLSTATEs of a server that is going away, starting, or out of connections. */
const UNAVAILABLE_SQLSTATES = new Set(["57P01", "57P02", "57P03", "53300"]);

/**
 * Whether an error means PostgreSQL cannot be reached right now (refused or cut connections, a server
 * shutting down or starting up, SQLSTATE class 08): a transient condition, not a bug.
 */
export function isDatabaseUnavailable(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: unknown }).code;
  if (typeof code === "string") {
    if (CONNECTION_ERRNOS.has(code) || UNAVAILABLE_SQLSTATES.has(code) || /^08[0-9A-Z]{3}$/.test(code)) {
      return true;
    }
  }
  // pg and pg-pool raise these without a code.
  return /^(Connection terminated|timeout exceeded when trying to connect)/.test(e.message);
}
