import { describe, expect, it } from "vitest";
import { addressKey } from "./connection-guard.js";

describe("the address a connection counts against", () => {
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

  it("is nothing for a connection already gone", () => {
    expect(addressKey(undefined)).toBeUndefined();
    expect(addressKey("")).toBeUndefined();
  });
});
