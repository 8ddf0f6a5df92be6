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

/**
 * Tokens a chat template may add per message (role markers, separators, the role's name) in the
 * most generous template served; with PROMPT_TEMPLATE_TOKENS (a default system preamble such as
 * Llama 3's dates, BOS, the reply primer) they bound what a template adds around the text.
 */
export const TEMPLATE_TOKENS_PER_MESSAGE = 16;
export const PROMPT_TEMPLATE_TOKENS = 64;

/**
 * The most tokens a prompt can tokenize to, for any tokenizer the network serves: a byte-level BPE
 * or byte-fallback tokenizer never makes more than one token of a UTF-8 byte, so the text's bytes
 * plus what the template adds is a hard ceiling (unlike the estimate, which can be several times too
 * low for text outside English: three-byte characters are often three tokens). A provider that
 * claims more than this for a prompt is not telling the truth; the reservation holds this many.
 */
export function promptTokenBound(textBytes: number, messages: number): number {
  return textBytes + TEMPLATE_TOKENS_PER_MESSAGE * messages + PROMPT_TEMPLATE_TOKENS;
}

const utf8 = new TextEncoder();

/** UTF-8 length of a string without keeping the encoding. */
export function utf8Bytes(text: string): number {
  return utf8.encode(text).byteLength;
}
