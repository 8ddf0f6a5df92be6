import { describe, expect, it } from "vitest";
import { parseOptions, UsageError } from "./options.js";

describe("npm start's options", () => {
  it("serves tiny with the tiny-embed embedding model by default", () => {
    expect(parseOptions([])).toMatchObject({
      port: 8080,
      dataDir: ".darkbloom",
      providers: "auto",
      model: "tiny",
      embeddingModel: "tiny-embed",
    });
    expect(parseOptions(["--embedding-model", "none"]).embeddingModel).toBeUndefined();
    expect(parseOptions(["--model", "qwen3-0.6b", "--providers", "2"])).toMatchObject({
      model: "qwen3-0.6b",
      providers: 2,
    });
  });

  it("refuses bad values with one line", () => {
    for (const argv of [
      ["--embedding-model", "a b"],
      ["--model", "tiny-embed", "--embedding-model", "tiny-embed"],
      ["--port", "70000"],
      ["--providers", "0"],
      ["--nope"],
    ]) {
      expect(() => parseOptions(argv), argv.join(" ")).toThrow(UsageError);
    }
  });
});
