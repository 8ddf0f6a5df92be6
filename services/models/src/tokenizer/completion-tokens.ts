/**
 * A choice's completion tokens, as provider and coordinator both count them: what the model's
 * tokenizer makes of the text delivered, and never more than the max_tokens the choice was allowed
 * to sample. A text can re-tokenize into more tokens than were sampled: the replacement characters
 * of a byte sequence cut mid-character (three bytes, often two or three tokens, for one sampled
 * byte token), or padding a lying provider packs into its chunks (up to MAX_TOKEN_BYTES of text a
 * claimed token). Neither is billed, shown or paid past what the consumer allowed.
 */
export function choiceCompletionTokens(counted: number, maxTokens: number): number {
  return Math.min(counted, maxTokens);
}
