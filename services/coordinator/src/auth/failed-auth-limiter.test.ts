import { describe, expect, it } from "vitest";
import { ApiError } from "../errors/index.js";
import { addressKey } from "../http/client-address.js";
import { FailedAuthLimiter } from "./failed-auth-limiter.js";

function limiter(limit: { perSecond?: number; burst?: number; maxAddresses?: number } = {}) {
  let now = 0;
  const l = new FailedAuthLimiter(
    { perSecond: limit.perSecond ?? 1, burst: limit.burst ?? 3, maxAddresses: limit.maxAddresses ?? 100 },
    () => now,
  );
  return { l, advance: (ms: number) => (now += ms) };
}

function refused(take: () => void): ApiError | undefined {
  try {
    take();
    return undefined;
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
}

describe("FailedAuthLimiter", () => {
  it("allows a burst, then 429 with Retry-After until a token comes back", () => {
    const { l, advance } = limiter({ perSecond: 0.5, burst: 3 });
    for (let i = 0; i < 3; i++) expect(refused(() => l.take("10.0.0.1"))).toBeUndefined();
    const error = refused(() => l.take("10.0.0.1"));
    expect(error?.status).toBe(429);
    expect(error?.code).toBe("rate_limit_exceeded");
    expect(error?.headers["Retry-After"]).toBe("2");
    advance(2_000);
    expect(refused(() => l.take("10.0.0.1"))).toBeUndefined();
  });

  it("refund() gives back what a successful check took, and forgets a full bucket", () => {
    const { l } = limiter({ burst: 2 });
    for (let i = 0; i < 10; i++) {
      l.take("10.0.0.1");
      l.refund("10.0.0.1");
    }
    expect(l.size).toBe(0);
  });

  it("remembers at most maxAddresses, forgetting the least recently failing", () => {
    const { l } = limiter({ burst: 1, maxAddresses: 3 });
    for (const a of ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]) l.take(a);
    expect(l.size).toBe(3);
    expect(refused(() => l.take("10.0.0.1"))).toBeUndefined(); // forgotten: a full bucket again
    expect(refused(() => l.take("10.0.0.4"))?.status).toBe(429);
  });

  it("0 per second disables it", () => {
    const { l } = limiter({ perSecond: 0, burst: 1 });
    for (let i = 0; i < 10; i++) l.take("10.0.0.1");
    expect(l.size).toBe(0);
  });

  it("counts IPv6 per /64 and IPv4-mapped addresses as IPv4", () => {
    expect(addressKey("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:0db8:0001:0002:ffff:ffff:ffff:ffff")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(addressKey("::1")).toBe("0:0:0:0::/64");
    expect(addressKey("fe80::1%eth0")).toBe("fe80:0:0:0::/64");
    expect(addressKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(addressKey("192.0.2.7")).toBe("192.0.2.7");
    const { l } = limiter({ burst: 2 });
    l.take("2001:db8:1:2::1");
    l.take("2001:db8:1:2::2");
    expect(refused(() => l.take("2001:db8:1:2:ffff::3"))?.status).toBe(429);
    expect(refused(() => l.take("2001:db8:1:3::1"))).toBeUndefined();
  });
});
