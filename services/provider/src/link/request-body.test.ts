import { Endpoint } from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import { BodyError, choiceRequests, parseRequestBody } from "./request-body.js";

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

describe("request body", () => {
  it("reads a chat request with every sampling field; the InferenceRequest's max_tokens wins", () => {
    const parsed = parseRequestBody(
      Endpoint.CHAT_COMPLETIONS,
      json({
        model: "tiny",
        messages: [
          { role: "system", content: "be brief" },
          {
            role: "user",
            content: [
              { type: "text", text: "a" },
              { type: "text", text: "b" },
            ],
          },
          { role: "assistant", content: null },
        ],
        max_completion_tokens: 99,
        temperature: 0.5,
        top_p: 0.9,
        top_k: 40,
        seed: 3,
        stop: "END",
        n: 2,
        presence_penalty: 0.1,
        frequency_penalty: -0.2,
      }),
      64,
    );
    expect(parsed).toEqual({
      n: 2,
      input: {
        kind: "chat",
        messages: [
          { role: "system", content: "be brief" },
          { role: "user", content: "a\nb" },
          { role: "assistant", content: "" },
        ],
      },
      sampling: {
        temperature: 0.5,
        topP: 0.9,
        topK: 40,
        seed: 3,
        stop: ["END"],
        maxTokens: 64,
        presencePenalty: 0.1,
        frequencyPenalty: -0.2,
      },
    });
    const choices = choiceRequests("req_1", "tiny", parsed);
    expect(choices.map((c) => [c.id, c.model, c.sampling.seed])).toEqual([
      ["req_1/0", "tiny", 3],
      ["req_1/1", "tiny", 4],
    ]);
  });

  it("reads logit_bias (-100 bans) and response_format into the sampler's inputs", () => {
    const parsed = parseRequestBody(
      Endpoint.CHAT_COMPLETIONS,
      json({
        messages: [{ role: "user", content: "hi" }],
        logit_bias: { "42": -100, "7": 3.5 },
        response_format: { type: "json_object" },
      }),
      10,
    );
    expect(parsed.sampling.logitBias).toEqual([
      [7, 3.5],
      [42, Number.NEGATIVE_INFINITY],
    ]);
    expect(parsed.sampling.grammar).toMatch(/^root ::= object\n/);
    const plain = parseRequestBody(Endpoint.COMPLETIONS, json({ prompt: "x", logit_bias: {} }), 5);
    expect(plain.sampling.logitBias).toBeUndefined();
    expect(plain.sampling.grammar).toBeUndefined();
  });

  it("defaults: OpenAI's temperature 1 and top_p 1, no seed, the body's max_tokens as a fallback", () => {
    const parsed = parseRequestBody(
      Endpoint.COMPLETIONS,
      json({ model: "m", prompt: ["once"], max_tokens: 7 }),
      0,
    );
    expect(parsed).toEqual({
      n: 1,
      input: { kind: "text", prompt: "once" },
      sampling: {
        temperature: 1,
        topP: 1,
        topK: 0,
        seed: undefined,
        stop: [],
        maxTokens: 7,
        presencePenalty: undefined,
        frequencyPenalty: undefined,
      },
    });
    expect(choiceRequests("r", "m", parsed)[0]?.sampling.seed).toBeUndefined();
    // top_p 0 keeps only the top token: greedy.
    const greedy = parseRequestBody(Endpoint.COMPLETIONS, json({ prompt: "x", top_p: 0 }), 5);
    expect(greedy.sampling).toMatchObject({ topP: 1, temperature: 0 });
  });

  it("rejects what it cannot serve with the field named", () => {
    const cases: [Endpoint, unknown, string | null][] = [
      [Endpoint.CHAT_COMPLETIONS, "not json", null],
      [Endpoint.CHAT_COMPLETIONS, [], null],
      [Endpoint.CHAT_COMPLETIONS, { messages: [] }, "messages"],
      [Endpoint.CHAT_COMPLETIONS, { messages: [{ role: "robot", content: "x" }] }, "messages[0].role"],
      [
        Endpoint.CHAT_COMPLETIONS,
        { messages: [{ role: "user", content: [{ type: "image_url" }] }] },
        "messages[0].content[0]",
      ],
      [Endpoint.COMPLETIONS, { prompt: ["a", "b"] }, "prompt"],
      [Endpoint.COMPLETIONS, { prompt: "x", temperature: 3 }, "temperature"],
      [Endpoint.COMPLETIONS, { prompt: "x", n: 0 }, "n"],
      [Endpoint.COMPLETIONS, { prompt: "x", seed: 1.5 }, "seed"],
      [Endpoint.COMPLETIONS, { prompt: "x", stop: [1] }, "stop"],
    ];
    for (const [endpoint, body, param] of cases) {
      const bytes = typeof body === "string" ? new TextEncoder().encode(body) : json(body);
      const error = (() => {
        try {
          parseRequestBody(endpoint, bytes, 10);
        } catch (e) {
          return e;
        }
      })();
      expect(error, JSON.stringify(body)).toBeInstanceOf(BodyError);
      expect((error as BodyError).param).toBe(param);
    }
  });
});
