// What each request sends: a chat body with a prompt of about N words, different for every request,
// and the API key of the next user in rotation.
import { randomBytes } from "node:crypto";

/** Common short English words: each is about one token in the usual BPE vocabularies. */
const WORDS = (
  "the of and to in is it you that he was for on are with as his they be at one have this from or " +
  "had by hot word but what some we can out other were all there when up use your how said an each " +
  "she which do their time if will way about many then them write would like so these her long make " +
  "thing see him two has look more day could go come did number sound no most people my over know " +
  "water than call first who may down side been now find any new work part take get place made live " +
  "where after back little only round man year came show every good me give our under name very " +
  "through just form sentence great think say help low line differ turn cause much mean before move " +
  "right boy old too same tell does set three want air well also play small end put home read hand " +
  "port large spell add even land here must big high such follow act why ask men change went light"
).split(" ");

export interface WorkloadOptions {
  model: string;
  stream: boolean;
  /** Approximate prompt size: the user message has this many words. */
  promptTokens: number;
  maxTokens: number;
  /** API keys to rotate over, one per user. */
  apiKeys: readonly string[];
}

export interface PlannedRequest {
  /** 0-based, in the order requests were planned. */
  index: number;
  body: Buffer;
  apiKey: string;
  /** Index of the key in `apiKeys`. */
  user: number;
}

/** A small deterministic PRNG (mulberry32): the same seed gives the same prompt. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/**
 * A prompt of exactly `words` words. It opens with the run's tag and the request's number and the
 * rest is drawn from the request's own seed, so no two requests (of this run or another) share a
 * prefix beyond the first word, and a prefix cache cannot serve one from another.
 */
export function buildPrompt(words: number, runTag: string, index: number): string {
  const random = mulberry32(Number.parseInt(runTag.slice(0, 8), 16) ^ Math.imul(index + 1, 0x9e3779b1));
  const out = [`[${runTag}-${index}]`];
  for (let i = 1; i < words; i++) out.push(WORDS[Math.floor(random() * WORDS.length)] as string);
  return out.join(" ");
}

/** Plans requests one after another: bodies with fresh prompts, keys in round-robin order. */
export class Workload {
  private next = 0;
  /** Eight hex digits that make this run's prompts unlike any other run's. */
  readonly runTag = randomBytes(4).toString("hex");

  constructor(private readonly options: WorkloadOptions) {
    if (options.apiKeys.length === 0) throw new Error("a workload needs at least one API key");
  }

  /** Requests planned so far. */
  get planned(): number {
    return this.next;
  }

  plan(): PlannedRequest {
    const index = this.next++;
    const user = index % this.options.apiKeys.length;
    const o = this.options;
    const body: Record<string, unknown> = {
      model: o.model,
      messages: [{ role: "user", content: buildPrompt(o.promptTokens, this.runTag, index) }],
      max_tokens: o.maxTokens,
      stream: o.stream,
    };
    if (o.stream) body.stream_options = { include_usage: true };
    return { index, body: Buffer.from(JSON.stringify(body)), apiKey: o.apiKeys[user] as string, user };
  }
}
