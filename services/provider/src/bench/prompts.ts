/**
 * Benchmark prompts: distinct texts of about N tokens of the model's own tokenizer, deterministic from an
 * index, so every row of every batch reads a different prompt (nothing can be shared or cached) and every
 * target of one run reads the same ones.
 */

/** The tokenizer a prompt is measured with (node-llama-cpp's model.tokenize / detokenize in practice). */
export interface BenchTokenizer {
  /** Tokens of the text itself (no BOS). */
  tokenize(text: string): readonly number[];
  detokenize(tokens: readonly number[]): string;
  /** Tokens the engine adds to a raw-text prompt (1 when the model wants a BOS first, else 0). */
  addedTokens: number;
}

export interface BuiltPrompt {
  text: string;
  /** Tokens of the prompt as the engine counts it, BOS included (may differ from the target by a few). */
  tokens: number;
}

const WORDS = (
  "river mountain engine garden window silver market winter letter orange planet signal " +
  "harbor castle pencil forest butter rocket shadow summer violin canyon marble dragon " +
  "island jacket lantern meadow needle oyster puzzle quarry ribbon saddle tunnel velvet " +
  "wagon yellow zephyr anchor bridge candle desert falcon glacier hammer ivory jungle " +
  "kettle ladder mirror napkin orchard pepper quilt rabbit spider thunder umbrella valley " +
  "walnut basket cotton donkey eagle feather ginger hollow"
).split(" ");

/** A small deterministic PRNG (mulberry32) for the filler words. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `words` filler words, a different sequence for every index. */
export function fillerText(index: number, words: number): string {
  const next = mulberry32(0x9e3779b9 ^ Math.imul(index + 1, 0x85ebca6b));
  const out: string[] = [];
  for (let i = 0; i < words; i++) {
    const word = WORDS[Math.floor(next() * WORDS.length)] as string;
    out.push(i % 12 === 11 ? `${word}.` : word);
  }
  return out.join(" ");
}

/**
 * A prompt of about `targetTokens` tokens, distinct for each `index`: filler text long enough, cut to
 * the target in tokens and turned back into text. Detokenize-then-tokenize may merge tokens at the cut,
 * so the cut is moved a few tokens until the real count matches (or is as close as it gets); the real
 * count is returned.
 */
export function buildPrompt(tokenizer: BenchTokenizer, targetTokens: number, index: number): BuiltPrompt {
  if (!Number.isInteger(targetTokens) || targetTokens < 1) throw new Error("targetTokens must be >= 1");
  const header = `Note ${index}: `;
  let words = Math.max(8, Math.ceil(targetTokens * 0.75));
  const count = (text: string) => tokenizer.tokenize(text).length + tokenizer.addedTokens;
  const want = Math.max(1, targetTokens - tokenizer.addedTokens);
  let full: readonly number[] = [];
  for (let tries = 0; tries < 8; tries++) {
    full = tokenizer.tokenize(header + fillerText(index, words));
    if (full.length > want + 8) break;
    words *= 2;
  }
  let best: BuiltPrompt | undefined;
  // Cutting to `want` tokens and back to text can merge or split tokens at the cut: try a few cuts.
  for (let cut = want; cut >= Math.max(1, want - 8); cut--) {
    const text = tokenizer.detokenize(full.slice(0, cut)).trimEnd();
    const tokens = count(text);
    if (!best || Math.abs(tokens - targetTokens) < Math.abs(best.tokens - targetTokens))
      best = { text, tokens };
    if (tokens === targetTokens) break;
  }
  const text = best?.text || header.trim();
  return best?.text ? best : { text, tokens: count(text) };
}

/** Prompts by index, built on first use and kept (every target of a run reads the same texts). */
export class PromptSet {
  private readonly built = new Map<number, BuiltPrompt>();

  constructor(
    private readonly tokenizer: BenchTokenizer,
    readonly targetTokens: number,
  ) {}

  get(index: number): BuiltPrompt {
    let prompt = this.built.get(index);
    if (!prompt) {
      prompt = buildPrompt(this.tokenizer, this.targetTokens, index);
      this.built.set(index, prompt);
    }
    return prompt;
  }
}
