import { InvalidArgumentError } from "./errors.js";

/**
 * Opaque keyset-pagination cursors: the last row's timestamp (microseconds since the epoch) and id,
 * so pages stay stable while rows are added.
 */
export function encodePageToken(micros: string, id: string): string {
  return Buffer.from(`${micros}.${id}`, "utf8").toString("base64url");
}

/** Decodes a page token whose id must match `idPattern` (anchored, no flags); throws InvalidArgumentError. */
export function decodePageToken(
  token: string,
  idPattern: RegExp,
  field = "page_token",
): { micros: string; id: string } {
  const match = new RegExp(`^(\\d{1,18})\\.(${idPattern.source})$`).exec(
    Buffer.from(token, "base64url").toString("utf8"),
  );
  if (!match) throw new InvalidArgumentError(field, `${field} is malformed`);
  return { micros: match[1]!, id: match[2]! };
}

/** SQL for a timestamp column as the microseconds a page token carries. */
export function cursorMicros(column: string): string {
  return `(extract(epoch FROM ${column}) * 1000000)::bigint::text`;
}

/** SQL turning a page token's microseconds parameter back into a timestamp. */
export function cursorTimestamp(parameter: string): string {
  return `(timestamptz 'epoch' + ${parameter}::bigint * interval '1 microsecond')`;
}
