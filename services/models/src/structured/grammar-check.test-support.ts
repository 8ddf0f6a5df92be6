/**
 * Whether llama.cpp's grammar sampler lets a model write a text and then end, token by token: the
 * check node-llama-cpp's own internals make (LlamaSampler's canBeNext/accept), on the model's
 * vocabulary. Tests hold grammars to what they mean with it. Not a test file itself.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  getLlama,
  type Llama,
  LlamaGrammar,
  LlamaGrammarEvaluationState,
  LlamaLogLevel,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import { writeGgufFile } from "../gguf/writer.js";
import type { MODEL_SHAPES } from "../synth/shapes.js";
import { planModel } from "../synth/synthesize.js";
import { ModelTokenizer } from "../tokenizer/model-tokenizer.js";

type ShapeName = keyof typeof MODEL_SHAPES;

interface GrammarChecks {
  canBeNextTokenForGrammarEvaluationState(state: unknown, token: Token): boolean;
  acceptGrammarEvaluationStateToken(state: unknown, token: Token): void;
}

export function grammarAccepts(llama: Llama, model: LlamaModel, grammar: string, text: string): boolean {
  const state = new LlamaGrammarEvaluationState({ model, grammar: new LlamaGrammar(llama, { grammar }) });
  const sampler = (llama as unknown as { _bindings: { AddonSampler: GrammarChecks } })._bindings.AddonSampler;
  const handle = (state as unknown as { _state: unknown })._state;
  for (const token of model.tokenize(text, false)) {
    if (!sampler.canBeNextTokenForGrammarEvaluationState(handle, token)) return false;
    sampler.acceptGrammarEvaluationStateToken(handle, token);
  }
  return sampler.canBeNextTokenForGrammarEvaluationState(handle, model.tokens.eos as Token);
}

/**
 * The synthesized models' vocabularies (vocabulary-only GGUFs, no weights) loaded in llama.cpp, for
 * checking grammars and prompts against their tokens. `close` frees them and their directory.
 */
export async function openVocabularies(shapes: readonly ShapeName[] = ["tiny"]): Promise<{
  llama: Llama;
  get(shape: ShapeName): ModelTokenizer;
  close(): Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-vocabulary-"));
  // A vocabulary-only file is first sized as a full load, which node-llama-cpp reports as failing.
  const llama = await getLlama({
    gpu: false,
    build: "never",
    logLevel: LlamaLogLevel.error,
    maxThreads: 1,
    logger: () => {},
  });
  const tokenizers = new Map<ShapeName, ModelTokenizer>();
  for (const shape of shapes) {
    const path = join(dir, `${shape}.vocab.gguf`);
    await writeGgufFile(path, { kv: planModel(shape).kv, tensors: [] });
    tokenizers.set(shape, await ModelTokenizer.open(llama, path));
  }
  return {
    llama,
    get(shape) {
      const t = tokenizers.get(shape);
      if (!t) throw new Error(`the vocabulary of ${shape} was not opened`);
      return t;
    },
    async close() {
      for (const t of tokenizers.values()) await t.dispose();
      await llama.dispose();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
