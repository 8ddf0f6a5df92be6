import { describe, expect, it } from "vitest";
import { type Detokenizer, IncrementalDetokenizer, StopMatcher } from "./text.js";

/** Tokens are raw bytes; decoding replaces incomplete UTF-8 with U+FFFD, as llama.cpp's does. */
const bytes: Detokenizer = {
  detokenize: (tokens) => new TextDecoder().decode(Uint8Array.from(tokens)),
};

describe("IncrementalDetokenizer", () => {
  it("never splits a multi-byte character across events", () => {
    const text = "héllo 🌸 wörld — ok";
    const d = new IncrementalDetokenizer(bytes);
    const pieces: string[] = [];
    for (const b of Buffer.from(text, "utf8")) {
      const piece = d.push(b);
      if (piece) pieces.push(piece);
    }
    pieces.push(d.flush());
    expect(pieces.join("")).toBe(text);
    for (const p of pieces) expect(p).not.toContain("\uFFFD");
    expect(pieces.length).toBeGreaterThan(10);
  });

  it("flushes an incomplete trailing character as U+FFFD", () => {
    const d = new IncrementalDetokenizer(bytes);
    expect(d.push(0x61)).toBe("a");
    expect(d.push(0xf0)).toBe("");
    expect(d.push(0x9f)).toBe("");
    expect(d.flush()).toBe("\uFFFD");
  });

  it("loses nothing when the detokenizer rewrites text already emitted (llama.cpp's space clean-up)", () => {
    // Bytes, with llama.cpp's clean_spaces pass for vocabularies that set it: " ," becomes ",".
    const cleaning: Detokenizer = {
      detokenize: (tokens) => bytes.detokenize(tokens).replace(/ ([,.?!])/g, "$1"),
    };
    const d = new IncrementalDetokenizer(cleaning);
    const text = '[1] ,\n "a" . b';
    const pieces = [...Buffer.from(text, "utf8")].map((b) => d.push(b));
    pieces.push(d.flush());
    // Every token's own text, as a grammar matched them: the comma and the period are there.
    expect(pieces.join("")).toBe(text);
  });
});

describe("StopMatcher", () => {
  it("passes text through without stops", () => {
    const m = new StopMatcher([]);
    expect(m.push("abc")).toEqual({ emit: "abc", stopped: false });
  });

  it("holds back a possible stop prefix and releases it when it is not one", () => {
    const m = new StopMatcher(["STOP"]);
    expect(m.push("hello S")).toEqual({ emit: "hello ", stopped: false });
    expect(m.push("T")).toEqual({ emit: "", stopped: false });
    expect(m.push("x")).toEqual({ emit: "STx", stopped: false });
    expect(m.push(" ST")).toEqual({ emit: " ", stopped: false });
    expect(m.flush()).toBe("ST");
  });

  it("stops on a stop string split over several pieces, dropping it and anything after", () => {
    const m = new StopMatcher(["\n\n", "END"]);
    expect(m.push("one E")).toEqual({ emit: "one ", stopped: false });
    expect(m.push("N")).toEqual({ emit: "", stopped: false });
    expect(m.push("D and more")).toEqual({ emit: "", stopped: true });
  });

  it("stops at the earliest of several stops", () => {
    const m = new StopMatcher(["b", "abc"]);
    expect(m.push("xxabcd")).toEqual({ emit: "xx", stopped: true });
  });
});
