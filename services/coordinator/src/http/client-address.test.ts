import { describe, expect, it } from "vitest";
import { addressKey, clientAddress } from "./client-address.js";
import type { HttpRequest } from "./types.js";

function request(peer: string, forwardedFor?: string | string[]): HttpRequest {
  return {
    socket: { remoteAddress: peer },
    headers: forwardedFor === undefined ? {} : { "x-forwarded-for": forwardedFor },
  } as unknown as HttpRequest;
}

describe("clientAddress", () => {
  it("is the socket's peer, whatever X-Forwarded-For says, unless proxies are trusted", () => {
    expect(clientAddress(request("10.0.0.9", "203.0.113.5"), 0)).toBe("10.0.0.9");
  });

  it("with N trusted proxies, is the entry the farthest of them appended", () => {
    // A client-forged entry first, then what the two proxies appended.
    const chain = "198.51.100.66, 203.0.113.5, 10.0.0.2";
    expect(clientAddress(request("10.0.0.1", chain), 1)).toBe("10.0.0.2");
    expect(clientAddress(request("10.0.0.1", chain), 2)).toBe("203.0.113.5");
    expect(clientAddress(request("10.0.0.1", ["203.0.113.5", "10.0.0.2"]), 2)).toBe("203.0.113.5");
    // A chain shorter than the trusted hops: its first entry.
    expect(clientAddress(request("10.0.0.1", "203.0.113.5"), 3)).toBe("203.0.113.5");
  });

  it("falls back to the peer when the header is absent or its entry is not an address", () => {
    expect(clientAddress(request("10.0.0.1"), 1)).toBe("10.0.0.1");
    expect(clientAddress(request("10.0.0.1", "unknown"), 1)).toBe("10.0.0.1");
    expect(clientAddress(request("10.0.0.1", "2001:db8::1"), 1)).toBe("2001:db8::1");
  });
});

describe("the key an address is counted under (connections, failed credentials)", () => {
  it("is an IPv4 address as it is, also when mapped into IPv6", () => {
    expect(addressKey("203.0.113.7")).toBe("203.0.113.7");
    expect(addressKey("::ffff:203.0.113.7")).toBe("203.0.113.7");
    expect(addressKey("::FFFF:203.0.113.7")).toBe("203.0.113.7");
  });

  it("is an IPv6 address's /64, however the address is written", () => {
    const key = "2001:db8:1:2::/64";
    expect(addressKey("2001:db8:1:2::1")).toBe(key);
    expect(addressKey("2001:0db8:0001:0002:ffff:ffff:ffff:ffff")).toBe(key);
    expect(addressKey("2001:db8:1:2:0:0:1.2.3.4")).toBe(key);
    expect(addressKey("2001:db8:1:2::5%eth0")).toBe(key);
    expect(addressKey("2001:db8:1:3::1")).not.toBe(key);
    expect(addressKey("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(addressKey("::1")).toBe("0:0:0:0::/64");
  });
});
