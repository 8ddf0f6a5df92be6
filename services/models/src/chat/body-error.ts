/** A body field that cannot be served: answered with a 400 that names the field. */
export class BodyError extends Error {
  override readonly name = "BodyError";

  constructor(
    message: string,
    readonly param: string | null,
  ) {
    super(message);
  }
}
