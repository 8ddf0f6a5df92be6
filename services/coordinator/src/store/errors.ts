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
