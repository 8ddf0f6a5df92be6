/**
 * Whether llama.cpp's grammar sampler lets a model write a text and then end, token by token: the
 * check node-llama-cpp's own internals make (LlamaSampler's canBeNext/accept), on the model's
 * vocabulary. Tests hold grammars to what they mean with it. Not a test file itself.
 */
import {
  type Llama,
  LlamaGrammar,
  LlamaGrammarEvaluationState,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";

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
