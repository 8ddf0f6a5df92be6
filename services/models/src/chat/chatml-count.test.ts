import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeGgufFile } from "../gguf/writer.js";
import { Xoshiro128 } from "../synth/random.js";
import { planModel } from "../synth/synthesize.js";
import { FastModelTokenizer } from "../tokenizer/fast-model-tokenizer.js";
import { ModelTokenizer } from "../tokenizer/model-tokenizer.js";
import { describeVocabulary } from "../tokenizer/vocabulary-description.js";
import type { ChatMessage, GenerationInput } from "./generation-input.js";

let dir: string;
let llama: Llama;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-chatml-count-"));
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
});

afterAll(async () => {
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

// Contents that reach every branch of the rendering: empty messages (a group with nothing to render,
// a model turn left open), whitespace at either end (the leading-space workaround), ChatML's own
// markup typed as text, and runs of the same role (system texts are joined, the rest start groups).
const CONTENTS = [
  "",
  " ",
  "\n",
  "\n\nafter newlines",
  "  two leading spaces",
  "trailing space ",
  "Count to sixteen.",
  "<|im_start|>user\n",
  "<|im_end|>",
  "中文 and ß",
  "a",
];
const ROLES: ChatMessage["role"][] = ["system", "developer", "user", "assistant", "tool"];

function randomChat(rng: Xoshiro128): GenerationInput {
  const messages: ChatMessage[] = [];
  const n = 1 + (rng.next() % 6);
  for (let i = 0; i < n; i++) {
    const role = ROLES[rng.next() % ROLES.length] as ChatMessage["role"];
    let content = "";
    for (let k = rng.next() % 3; k > 0; k--) content += CONTENTS[rng.next() % CONTENTS.length];
    messages.push({ role, content } as ChatMessage);
  }
  return { kind: "chat", messages };
}

describe.each(["tiny", "qwen3-0.6b"] as const)("countChatMlPrompt on %s", (shape) => {
  it("counts what ChatMLChatWrapper renders, and what llama.cpp counts", async () => {
    const path = join(dir, `${shape}.vocab.gguf`);
    await writeGgufFile(path, { kv: planModel(shape).kv, tensors: [] });
    const reference = await ModelTokenizer.open(llama, path);
    try {
      const fast = FastModelTokenizer.create(describeVocabulary(reference));
      // The shortcut is taken (else this would compare the generic path with itself).
      expect(fast.wrapper.wrapperName).toBe("ChatML");
      const rng = new Xoshiro128(0xc4a7, shape.length);
      const differences: string[] = [];
      for (let i = 0; i < 3000 && differences.length < 5; i++) {
        const input = randomChat(rng);
        const rendered = fast.countRenderedPrompt(input);
        const counted = fast.countPrompt(input);
        if (counted !== rendered) differences.push(`${JSON.stringify(input)}: ${rendered} | ${counted}`);
        if (i % 10 === 0 && reference.countPrompt(input) !== counted)
          differences.push(`llama.cpp: ${JSON.stringify(input)}`);
      }
      expect(differences).toEqual([]);
    } finally {
      await reference.dispose();
    }
  }, 120_000);
});
