/**
 * Prompt length estimate used for routing, the context gate and (later) reservations before the
 * provider has tokenized anything: about four characters a token plus per-message framing, rounded
 * up so that the estimate errs on the long side for English text.
 */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

/** Tokens a chat template adds per message (role markers and separators). */
export const MESSAGE_OVERHEAD_TOKENS = 4;
/** Tokens the template adds to prime the assistant's reply. */
export const REPLY_PRIMER_TOKENS = 3;
