import { describe, expect, it } from "vitest";
import { testProvider } from "../testing/test-providers.js";
import { ProviderRegistry } from "./provider-registry.js";

describe("ProviderRegistry", () => {
  it("knows the largest context each model is served with as providers come and go", () => {
    const registry = new ProviderRegistry();
    expect(registry.contextLimit("m")).toBe(0);
    const small = testProvider({ id: "small", contextLength: 2_048 });
    const large = testProvider({ id: "large", models: ["m", "n"], contextLength: 32_768 });
    registry.add(small);
    expect(registry.contextLimit("m")).toBe(2_048);
    registry.add(large);
    expect(registry.contextLimit("m")).toBe(32_768);
    expect(registry.contextLimit("n")).toBe(32_768);
    registry.remove("large", "test");
    expect(registry.contextLimit("m")).toBe(2_048);
    expect(registry.contextLimit("n")).toBe(0);
    registry.remove("small", "test");
    expect(registry.contextLimit("m")).toBe(0);
  });
});
