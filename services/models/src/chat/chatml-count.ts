/**
 * A chat prompt's token count under node-llama-cpp's ChatMLChatWrapper (the wrapper llama.cpp's
 * Qwen templates resolve to), computed without building the prompt. The generic path
 * (renderPromptTokens) asks the wrapper for a LlamaText and tokenizes it: about 15 KB of short-lived
 * objects and most of a count's time, on every request the coordinator meters. This walks the same
 * rendering (the wrapper's grouping of messages, LlamaText's merging of adjacent values, and
 * LlamaText.tokenize's choice of options per segment) and counts each segment as it is produced.
 *
 * It reproduces node-llama-cpp's code statement by statement; chatml-count.test.ts compares it with
 * the generic path on random conversations, so a node-llama-cpp upgrade that renders ChatML
 * differently fails CI rather than miscounting.
 */
import { ChatMLChatWrapper, type ChatWrapper } from "node-llama-cpp";
import type { ChatMessage } from "./generation-input.js";

/** How a vocabulary counts the segments of a rendered prompt (its node-llama-cpp Tokenizer's counts). */
export interface SegmentCounter {
  /** Tokens of `text`, special-token markup parsed or not, with LlamaModel.tokenize's trimLeadingSpace. */
  segment(text: string, special: boolean, trimLeadingSpace: boolean): number;
  /** Tokens of the builtin BOS token: 1, or 0 where the vocabulary has none. */
  bos(): number;
}

/** Whether the wrapper renders exactly as ChatMLChatWrapper (and not a subclass that may not). */
export function isChatMl(wrapper: ChatWrapper): boolean {
  return wrapper.constructor === ChatMLChatWrapper;
}

/**
 * LlamaText.tokenize over values as LlamaText holds them (adjacent texts and adjacent special texts
 * merged, empty ones dropped), counted instead of collected.
 */
class CountedText {
  count = 0;
  /** LlamaText.tokenize's textToTokenize. */
  private text = "";
  /** The special text being merged, not yet tokenized. */
  private special = "";

  constructor(private readonly counter: SegmentCounter) {}

  /** A plain-text value. */
  addText(value: string): void {
    if (value === "") return;
    this.flushSpecial();
    this.text += value;
  }

  /** A SpecialTokensText value. */
  addSpecial(value: string): void {
    this.special += value;
  }

  /** The builtin BOS (a SpecialToken, never merged). */
  addBos(): void {
    this.flushSpecial();
    this.flushText();
    this.count += this.counter.bos();
    this.text = "";
  }

  end(): number {
    this.flushSpecial();
    this.flushText();
    return this.count;
  }

  /**
   * The text before a special value, or at the end. tokenize() resolves its options while the text
   * is still pending (hasContent() is then true for any text), and resets it only after the special
   * value that follows: the callers reset it.
   */
  private flushText(): void {
    const hasContent = this.count > 0 || this.text.length > 0;
    if (this.text !== "") this.count += this.counter.segment(this.text, false, hasContent);
  }

  private flushSpecial(): void {
    if (this.special === "") return;
    this.flushText();
    // hasContent() is read after the text's tokens are pushed and before the text is reset.
    const trim = this.count > 0 || this.text.length > 0;
    this.count += this.counter.segment(this.special, true, trim);
    this.text = "";
    this.special = "";
  }
}

/** One result item of ChatMLChatWrapper.generateContextState: a run of system texts, then a user and a model text. */
interface Group {
  system: string[];
  user: string | undefined;
  model: string | undefined;
}

/** The prompt tokens of `messages` as renderPromptTokens gives them under ChatMLChatWrapper. */
export function countChatMlPrompt(messages: readonly ChatMessage[], counter: SegmentCounter): number {
  const out = new CountedText(counter);
  out.addBos();
  let group: Group = { system: [], user: undefined, model: undefined };
  // A flushed group is rendered when the next one is flushed: only the last renders differently.
  let previous: Group | undefined;
  let focus: "system" | undefined;
  const flush = () => {
    if (group.system.length === 0 && group.user === undefined && group.model === undefined) return;
    if (previous) renderGroup(out, previous, false);
    previous = group;
    group = { system: [], user: undefined, model: undefined };
  };
  for (const m of messages) {
    switch (m.role) {
      case "system":
      case "developer":
        if (focus !== "system") flush();
        focus = "system";
        group.system.push(m.content);
        break;
      case "assistant":
        flush();
        focus = undefined;
        group.model = m.content;
        break;
      default:
        flush();
        focus = undefined;
        group.user = m.content;
    }
  }
  // The open model turn the prompt ends with (render() appends it unless the last message is the model's).
  if (messages.at(-1)?.role !== "assistant") {
    flush();
    group.model = "";
  }
  flush();
  if (previous) renderGroup(out, previous, true);
  return out.end();
}

function renderGroup(out: CountedText, g: Group, last: boolean): void {
  // LlamaText.joinValues("\n\n", texts): empty only when there is one empty text (or none).
  const system = g.system.join("\n\n");
  if (system !== "") {
    out.addSpecial("<|im_start|>system\n");
    out.addText(system);
    out.addSpecial("<|im_end|>\n");
  }
  const user = g.user ?? "";
  if (user !== "") {
    out.addSpecial("<|im_start|>user\n");
    out.addText(user);
    out.addSpecial("<|im_end|>\n");
  }
  const model = g.model ?? "";
  if (model !== "" || last) {
    out.addSpecial("<|im_start|>assistant\n");
    out.addText(model);
    if (!last) out.addSpecial("<|im_end|>\n");
  }
}
