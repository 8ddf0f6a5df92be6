import { createHash } from "node:crypto";

/**
 * The id of a choice's k-th tool call: derived from the request's hash, so the provider (which signs
 * the calls, ids included) and the coordinator (which shows them) give the same id without a word
 * between them, and ids differ from one request to the next (a conversation's next request carries
 * the previous calls, so its hash differs), as clients that match results to calls by id need.
 */
export function toolCallId(requestSha256Hex: string, choice: number, index: number): string {
  const digest = createHash("sha256").update(`darkbloom-tool-call\0${requestSha256Hex}\0${choice}\0${index}`);
  return `call_${digest.digest("base64url").slice(0, 24)}`;
}

/** A choice's calls as OpenAI shows them (and the response signature covers them), ids derived. */
export function shownToolCalls(
  requestSha256Hex: string,
  choice: number,
  calls: readonly { name: string; arguments: string }[],
): { id: string; type: "function"; name: string; arguments: string }[] {
  return calls.map((c, k) => ({
    id: toolCallId(requestSha256Hex, choice, k),
    type: "function",
    name: c.name,
    arguments: c.arguments,
  }));
}
