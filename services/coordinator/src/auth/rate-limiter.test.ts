import { describe, expect, it } from "vitest";
import { ApiError } from "../errors/index.js";
import { RateLimiter } from "./rate-limiter.js";

describe("RateLimiter", () => {
  it("allows a burst, then refuses with 429 and Retry-After, then refills at the sustained rate", () => {
    let now = 0;
    const rl = new RateLimiter({ perSecond: 2, burst: 3 }, () => now);
    expect(rl.take("a")["X-RateLimit-Remaining"]).toBe("2");
    rl.take("a");
    expect(rl.take("a")["X-RateLimit-Remaining"]).toBe("0");
    let error: unknown;
    try {
      rl.take("a");
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ApiError);
    const e = error as ApiError;
    expect(e.status).toBe(429);
    expect(e.toJSON().error).toMatchObject({ type: "rate_limit_exceeded", code: "rate_limit_exceeded" });
    expect(e.headers["Retry-After"]).toBe("1");
    expect(e.headers["X-RateLimit-Remaining"]).toBe("0");
    // Other accounts have their own bucket.
    expect(() => rl.take("b")).not.toThrow();
    now += 500; // one token back
    expect(() => rl.take("a")).not.toThrow();
    expect(() => rl.take("a")).toThrow(ApiError);
    rl.close();
  });

  it("is off when the rate is 0", () => {
    const rl = new RateLimiter({ perSecond: 0, burst: 0 });
    for (let i = 0; i < 1000; i++) expect(rl.take("a")).toEqual({});
  });
});
