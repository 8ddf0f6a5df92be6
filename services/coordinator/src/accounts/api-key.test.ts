import { describe, expect, it } from "vitest";
import {
  constantTimeEqual,
  displayPrefix,
  generateApiKey,
  generateId,
  hashApiKey,
  looksLikeApiKey,
} from "./api-key.js";

describe("API keys", () => {
  it("are dbk_ and 43 base62 characters, all different", () => {
    const keys = new Set(Array.from({ length: 200 }, generateApiKey));
    expect(keys.size).toBe(200);
    for (const key of keys) {
      expect(key).toMatch(/^dbk_[0-9A-Za-z]{43}$/);
      expect(looksLikeApiKey(key)).toBe(true);
    }
  });

  it("hash to 32 bytes and show a 12-character prefix", () => {
    const key = generateApiKey();
    expect(hashApiKey(key)).toHaveLength(32);
    expect(hashApiKey(key).equals(hashApiKey(key))).toBe(true);
    expect(displayPrefix(key)).toBe(key.slice(0, 12));
    expect(displayPrefix(key)).toMatch(/^dbk_.{8}$/);
  });

  it("reject malformed secrets before any lookup", () => {
    const key = generateApiKey();
    for (const bad of [
      "",
      "dbk_",
      `${key}x`,
      key.slice(0, -1),
      `sk_${key.slice(4)}`,
      `${key.slice(0, -1)}-`,
    ]) {
      expect(looksLikeApiKey(bad)).toBe(false);
    }
  });

  it("compare in constant time, whatever the lengths", () => {
    expect(constantTimeEqual("admin-key", "admin-key")).toBe(true);
    expect(constantTimeEqual("admin-key", "admin-kez")).toBe(false);
    expect(constantTimeEqual("admin-key", "admin-key-longer")).toBe(false);
    expect(constantTimeEqual("", "x")).toBe(false);
  });

  it("ids carry their prefix", () => {
    expect(generateId("acct_")).toMatch(/^acct_[0-9A-Za-z]{22}$/);
  });
});
