import type { ChatWrapper, Llama, LlamaModel } from "node-llama-cpp";
import type { GenerationInput } from "../chat/generation-input.js";
import {
  type PromptVocabulary,
  promptVocabularyOf,
  type RenderedPrompt,
  renderPrompt,
  renderPromptTokens,
  resolveModelChatWrapper,
} from "../chat/prompt.js";
import { toolSyntaxOf } from "../chat/tool-syntax.js";
import type { ToolCallSyntax } from "../tools/syntax.js";

/**
 * A model's tokenizer and chat template: how many tokens a prompt and a completion are. The provider
 * makes one from the model it serves, the coordinator from a vocabulary-only copy of the same GGUF
 * (see vocabulary-file.ts); both count with this class, so an honest provider's usage is exactly
 * what the coordinator counts, and any other figure is a claim the text does not bear out.
 */
export class ModelTokenizer {
  private readonly vocabulary: PromptVocabulary;
  private syntax: ToolCallSyntax | null | undefined;

  private constructor(
    readonly model: LlamaModel,
    readonly wrapper: ChatWrapper,
  ) {
    this.vocabulary = promptVocabularyOf(model);
  }

  /** The tokenizer of a model already loaded (weights and all). */
  static of(model: LlamaModel, llama: Llama): ModelTokenizer {
    return new ModelTokenizer(model, resolveModelChatWrapper(model, llama));
  }

  /**
   * Loads only the vocabulary and metadata of a GGUF (a vocabulary-only file is a few MB even for a
   * 150k-token vocabulary). The file must be trusted: llama.cpp aborts the process on some malformed
   * files, so files from elsewhere are vetted first (vetVocabularyFile).
   */
  static async open(llama: Llama, path: string): Promise<ModelTokenizer> {
    const model = await llama.loadModel({ modelPath: path, vocabOnly: true, gpuLayers: 0 });
    return ModelTokenizer.of(model, llama);
  }

  /** The prompt's tokens as the engine evaluates them, and the template's stop triggers. */
  render(input: GenerationInput): RenderedPrompt {
    return renderPrompt(this.vocabulary, this.wrapper, input);
  }

  /**
   * How the model writes a function call (its chat template's syntax); undefined where the template
   * has none the output can show, and the model then serves no `tools`.
   */
  get toolSyntax(): ToolCallSyntax | undefined {
    if (this.syntax === undefined) this.syntax = toolSyntaxOf(this.wrapper, this.model) ?? null;
    return this.syntax ?? undefined;
  }

  /** Prompt tokens: what `usage.prompt_tokens` must say. */
  countPrompt(input: GenerationInput): number {
    return renderPromptTokens(this.vocabulary, this.wrapper, input).length;
  }

  /**
   * Completion tokens of a choice's text: what the tokenizer makes of the whole text as delivered,
   * with no BOS and special-token markup read as plain text (a model's control tokens never reach
   * the text, and a consumer's "<|im_end|>" is four ordinary tokens or so, not one).
   */
  countText(text: string): number {
    return text === "" ? 0 : this.model.tokenize(text, false).length;
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}
