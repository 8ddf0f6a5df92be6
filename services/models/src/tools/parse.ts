/**
 * Splits a tool-using choice's text, as the model wrote it, into its content and its calls, in the
 * syntax the grammar (grammar.ts) made it follow: the content is the text before the first
 * appearance of the trigger, each call is a name, the JSON text of its arguments and the suffix.
 * The provider splits its output with it to sign what the consumer will be shown; the coordinator
 * splits the text it receives with it, as it arrives, to stream `delta.tool_calls` and to check
 * the calls: one function, so both show the same calls.
 *
 * Incremental: push() takes the text as it comes and returns what can be shown so far; text that
 * may be the beginning of the trigger is held back until it is known not to be. Any prefix of text
 * the grammar allows splits without error (a stream cut by max_tokens or a stop string is partial,
 * not malformed); text the grammar cannot produce is "malformed".
 */
import { callsTrigger, paramsPrefixOf, type ToolCallSyntax } from "./syntax.js";

/** A call as split so far: its arguments may still be growing. */
export interface SplitCall {
  name: string;
  arguments: string;
}

/** What one push() (or finish()) adds to what is shown. */
export interface SplitDelta {
  content: string;
  /** New calls (with `name`) and argument text of calls (by index in the choice's calls). */
  calls: { index: number; name?: string; arguments: string }[];
}

/**
 * text: no calls began; partial: calls began and the last is not finished (or the turn could go on);
 * complete: every call finished and nothing follows; malformed: text the grammar cannot produce.
 */
export type SplitState = "text" | "partial" | "complete" | "malformed";

export interface SplitOutput {
  content: string;
  calls: SplitCall[];
  state: SplitState;
  /** Why the text is malformed. */
  error?: string;
}

type Phase = "content" | "name" | "args" | "suffix" | "between" | "malformed";

export class ToolCallSplitter {
  private text = "";
  /** Where the unread text starts. */
  private pos = 0;
  private phase: Phase = "content";
  private content = "";
  /** How much of the content has been shown. */
  private shownContent = 0;
  readonly calls: SplitCall[] = [];
  /** The arguments' JSON: nesting depth, inside a string, after a backslash. */
  private depth = 0;
  private inString = false;
  private escaped = false;
  private error: string | undefined;
  private readonly trigger: string;

  constructor(
    private readonly syntax: ToolCallSyntax,
    private readonly names: readonly string[],
  ) {
    this.trigger = callsTrigger(syntax);
  }

  /** Takes more text; returns what it lets be shown. */
  push(text: string): SplitDelta {
    const delta: SplitDelta = { content: "", calls: [] };
    if (text === "" || this.phase === "malformed") return delta;
    this.text += text;
    this.advance(delta, false);
    return delta;
  }

  /** The text ended: releases held-back content and says how it split. */
  finish(): { delta: SplitDelta; output: SplitOutput } {
    const delta: SplitDelta = { content: "", calls: [] };
    if (this.phase !== "malformed") this.advance(delta, true);
    const state: SplitState =
      this.phase === "malformed"
        ? "malformed"
        : this.phase === "content"
          ? "text"
          : this.phase === "between" && this.pos === this.text.length
            ? "complete"
            : "partial";
    const output: SplitOutput = { content: this.content, calls: this.calls.map((c) => ({ ...c })), state };
    if (this.error !== undefined) output.error = this.error;
    return { delta, output };
  }

  private advance(delta: SplitDelta, ended: boolean): void {
    for (;;) {
      const before = this.pos;
      const phase = this.phase;
      this.step(delta, ended);
      if (this.phase === "malformed" || (this.pos === before && this.phase === phase)) break;
    }
    if (this.shownContent < this.content.length) {
      delta.content += this.content.slice(this.shownContent);
      this.shownContent = this.content.length;
    }
  }

  private malformed(why: string): void {
    this.phase = "malformed";
    this.error = why;
  }

  /** One step of the current phase; leaves pos and phase as they are when it needs more text. */
  private step(delta: SplitDelta, ended: boolean): void {
    const rest = this.text.length - this.pos;
    switch (this.phase) {
      case "content": {
        const at = this.text.indexOf(this.trigger, this.pos);
        if (at >= 0) {
          this.content += this.text.slice(this.pos, at);
          this.pos = at + this.trigger.length;
          this.phase = "name";
          return;
        }
        // Hold back the longest tail that could begin the trigger (none once the text ended).
        const hold = ended ? 0 : heldBack(this.text, this.pos, this.trigger);
        this.content += this.text.slice(this.pos, this.text.length - hold);
        this.pos = this.text.length - hold;
        return;
      }
      case "name": {
        let waiting = false;
        for (const name of this.names) {
          const head = name + paramsPrefixOf(this.syntax, name);
          if (this.text.startsWith(head, this.pos)) {
            this.pos += head.length;
            this.calls.push({ name, arguments: "" });
            delta.calls.push({ index: this.calls.length - 1, name, arguments: "" });
            this.phase = "args";
            this.depth = 0;
            this.inString = false;
            this.escaped = false;
            return;
          }
          if (head.startsWith(this.text.slice(this.pos))) waiting = true;
        }
        if (!waiting) this.malformed("a call names no offered function");
        return;
      }
      case "args": {
        if (rest === 0) return;
        const call = this.calls.at(-1) as SplitCall;
        const start = this.pos;
        let end = this.text.length;
        for (let i = this.pos; i < this.text.length; i++) {
          const ch = this.text[i] as string;
          if (i === start && call.arguments === "" && ch !== "{") {
            this.malformed("a call's arguments are not a JSON object");
            return;
          }
          if (this.inString) {
            if (this.escaped) this.escaped = false;
            else if (ch === "\\") this.escaped = true;
            else if (ch === '"') this.inString = false;
          } else if (ch === '"') this.inString = true;
          else if (ch === "{" || ch === "[") this.depth++;
          else if (ch === "}" || ch === "]") {
            this.depth--;
            if (this.depth === 0) {
              end = i + 1;
              this.phase = "suffix";
              break;
            }
          }
        }
        const piece = this.text.slice(start, end);
        call.arguments += piece;
        this.pos = end;
        const last = delta.calls.at(-1);
        if (last !== undefined && last.index === this.calls.length - 1) last.arguments += piece;
        else delta.calls.push({ index: this.calls.length - 1, arguments: piece });
        return;
      }
      case "suffix": {
        // The arguments' trailing whitespace (the grammar's), then the suffix (which may itself
        // begin with whitespace).
        const suffix = this.syntax.suffix;
        let waiting = false;
        for (let i = this.pos; i <= this.text.length; i++) {
          const tail = this.text.slice(i);
          if (tail.startsWith(suffix)) {
            this.pos = i + suffix.length;
            this.phase = "between";
            return;
          }
          if (suffix.startsWith(tail)) waiting = true;
          if (i === this.text.length || !" \t\n".includes(this.text[i] as string)) break;
        }
        if (!waiting) this.malformed("a call's arguments are not followed by the call's end");
        return;
      }
      case "between": {
        if (rest === 0) return;
        const next = (this.syntax.between ?? "") + this.syntax.prefix;
        const tail = this.text.slice(this.pos);
        if (this.syntax.between !== undefined && tail.startsWith(next)) {
          this.pos += next.length;
          this.phase = "name";
        } else if (this.syntax.between === undefined || !next.startsWith(tail)) {
          this.malformed("text follows the calls");
        }
        return;
      }
      case "malformed":
        return;
    }
  }
}

/** How many characters at the end of text[from..] could be the start of `trigger`. */
function heldBack(text: string, from: number, trigger: string): number {
  const max = Math.min(trigger.length - 1, text.length - from);
  for (let n = max; n > 0; n--) if (trigger.startsWith(text.slice(text.length - n))) return n;
  return 0;
}

/** The whole text of a choice, split. */
export function splitToolOutput(text: string, syntax: ToolCallSyntax, names: readonly string[]): SplitOutput {
  const splitter = new ToolCallSplitter(syntax, names);
  splitter.push(text);
  return splitter.finish().output;
}
