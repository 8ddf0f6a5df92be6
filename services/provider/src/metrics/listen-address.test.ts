import { describe, expect, it } from "vitest";
import { formatListenAddress, ListenAddressError, parseListenAddress } from "./listen-address.js";

describe("metrics listen addresses", () => {
  it("reads off and HOST:PORT, and writes them back canonically", () => {
    expect(parseListenAddress("off")).toBeUndefined();
    expect(parseListenAddress(" OFF ")).toBeUndefined();
    expect(parseListenAddress("127.0.0.1:9464")).toEqual({ host: "127.0.0.1", port: 9464 });
    expect(parseListenAddress("0.0.0.0:0")).toEqual({ host: "0.0.0.0", port: 0 });
    expect(parseListenAddress("LOCALHOST:1")).toEqual({ host: "localhost", port: 1 });
    expect(parseListenAddress("[::1]:65535")).toEqual({ host: "::1", port: 65535 });
    expect(formatListenAddress({ host: "::1", port: 9464 })).toBe("[::1]:9464");
    expect(formatListenAddress({ host: "127.0.0.1", port: 9464 })).toBe("127.0.0.1:9464");
    expect(formatListenAddress(undefined)).toBe("off");
  });

  it.each([
    "",
    "9464",
    ":9464",
    "127.0.0.1",
    "127.0.0.1:",
    "127.0.0.1:-1",
    "127.0.0.1:65536",
    "127.0.0.1:123456",
    "::1:9464",
    "[127.0.0.1]:9464",
    "[::1]",
    "example.com:9464",
    "256.0.0.1:9464",
    "127.0.0.1:9464 extra",
  ])("refuses %j", (text) => {
    expect(() => parseListenAddress(text)).toThrow(ListenAddressError);
  });
});
