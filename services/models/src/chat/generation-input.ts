/**
 * What a consumer asks a model to continue, read from an OpenAI request body. The provider renders it
 * into prompt tokens, and the coordinator counts those tokens itself to check what the provider
 * reports, so both read the body with this one function: any difference in how a message's content
 * is read would be a difference in the count.
 */

/** One chat message as the OpenAI API carries it (text content only). */
export interface ChatMessage {
  role: "system" | "user" | "assistant" | "developer" | "tool" | "function";
  content: string;
}

/** What to generate from: a conversation (rendered with the model's chat template) or raw text. */
export type GenerationInput = { kind: "chat"; messages: ChatMessage[] } | { kind: "text"; prompt: string };

/** A body field that cannot be served: answered with a 400 that names the field. */
export class BodyError extends Error {
  override readonly name = "BodyError";

  constructor(
    message: string,
    readonly param: string | null,
  ) {
    super(message);
  }
}

const ROLES = new Set<ChatMessage["role"]>(["system", "user", "assistant", "developer", "tool", "function"]);

type Json = Record<string, unknown>;

/**
 * The input of a chat-completions body (`messages`) or a completions body (`prompt`), from its parsed
 * JSON object. Content parts are joined with newlines; only text parts are accepted.
 */
export function readGenerationInput(kind: GenerationInput["kind"], body: Json): GenerationInput {
  return kind === "chat"
    ? { kind, messages: messages(body.messages) }
    : { kind, prompt: prompt(body.prompt) };
}

function messages(value: unknown): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new BodyError("'messages' must be a non-empty array.", "messages");
  }
  return value.map((m: unknown, i) => {
    const at = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m))
      throw new BodyError(`'${at}' must be an object.`, at);
    const { role, content } = m as Json;
    if (typeof role !== "string" || !ROLES.has(role as ChatMessage["role"])) {
      throw new BodyError(`'${at}.role' is not a supported role.`, `${at}.role`);
    }
    return { role: role as ChatMessage["role"], content: messageContent(content, at) };
  });
}

function messageContent(content: unknown, at: string): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (!Array.isArray(content)) {
    throw new BodyError(`'${at}.content' must be a string or an array of text parts.`, `${at}.content`);
  }
  return content
    .map((part: unknown, j) => {
      const p = part as Json | null;
      if (typeof p !== "object" || p === null || p.type !== "text" || typeof p.text !== "string") {
        throw new BodyError(`'${at}.content[${j}]' must be a text part.`, `${at}.content[${j}]`);
      }
      return p.text;
    })
    .join("\n");
}

function prompt(value: unknown): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value) && value.length === 1 && typeof value[0] === "string") return value[0];
  throw new BodyError("'prompt' must be a string.", "prompt");
}

/** The most entries a logit_bias may have (a bound on the work one request asks of a sampler). */
export const LOGIT_BIAS_MAX_ENTRIES = 1024;

/**
 * `logit_bias` as [token, bias] pairs (undefined when absent or empty): OpenAI's map from token ids
 * (as strings) to a bias from -100 to 100 added to the token's logit. -100 bans the token (-Infinity
 * here: a finite -100 can lose to a grammar or a penalty); whether a token is in the model's
 * vocabulary only the provider knows, and its engine refuses one that is not.
 */
export function readLogitBias(body: Json): Array<[number, number]> | undefined {
  const value = body.logit_bias;
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new BodyError("'logit_bias' must be an object mapping token ids to biases.", "logit_bias");
  }
  const entries = Object.entries(value as Json);
  if (entries.length > LOGIT_BIAS_MAX_ENTRIES) {
    throw new BodyError(`'logit_bias' may hold at most ${LOGIT_BIAS_MAX_ENTRIES} tokens.`, "logit_bias");
  }
  const pairs: Array<[number, number]> = [];
  for (const [key, bias] of entries) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(key) || Number(key) > 2 ** 31 - 1) {
      throw new BodyError(
        `'logit_bias' keys must be token ids; ${JSON.stringify(key)} is not.`,
        "logit_bias",
      );
    }
    if (typeof bias !== "number" || !Number.isFinite(bias) || bias < -100 || bias > 100) {
      throw new BodyError(
        `'logit_bias' values must be numbers from -100 to 100 (token ${key}).`,
        "logit_bias",
      );
    }
    pairs.push([Number(key), bias <= -100 ? Number.NEGATIVE_INFINITY : bias]);
  }
  return pairs.length === 0 ? undefined : pairs;
}
