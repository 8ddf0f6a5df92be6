import { describe, expect, it } from "vitest";
import {
  AssertionSyntaxError,
  DEFAULT_ASSERTIONS,
  evaluateAssertions,
  ORIGINAL_ASSERTIONS,
  parseAssertion,
} from "./assertions.js";
import type { RequestSample } from "./request.js";
import { summarizeRun } from "./stats.js";

const timing = {
  parse: 40,
  auth: 10,
  reserve: 900,
  route: 20,
  queue: 0,
  encrypt: 45,
  forward: 0,
  dispatch: 300,
  provider_first_token: 5_000,
  total: 6_500,
};

function sample(over: Partial<RequestSample> = {}): RequestSample {
  return {
    user: 0,
    stream: true,
    status: 200,
    e2eUs: 20_000,
    gapsUs: [],
    timing,
    completionTokens: 16,
    ...over,
  };
}

describe("assertion parsing", () => {
  it("reads segment assertions with every unit and comparison", () => {
    expect(parseAssertion("parse.p95<=2ms")).toEqual({
      kind: "segment",
      text: "parse.p95<=2ms",
      segment: "parse",
      metric: "p95",
      op: "<=",
      threshold: 2_000,
    });
    expect(parseAssertion(" total_e2e.p99 <= 2s ").threshold).toBe(2_000_000);
    expect(parseAssertion("encrypt.mean<500us").threshold).toBe(500);
    expect(parseAssertion("encrypt.mean<500µs")).toMatchObject({ op: "<", threshold: 500 });
    expect(parseAssertion("ttft.p50>=0.5ms")).toMatchObject({ op: ">=", threshold: 500 });
    expect(parseAssertion("dispatch.max>1s")).toMatchObject({ op: ">", metric: "max" });
    // X-Timing's name for the queue phase is accepted too.
    expect(parseAssertion("queue.p99<=1ms")).toMatchObject({ segment: "queue_wait" });
  });

  it("reads whole-run figures", () => {
    expect(parseAssertion("errors<=0")).toEqual({
      kind: "scalar",
      text: "errors<=0",
      scalar: "errors",
      op: "<=",
      threshold: 0,
    });
    expect(parseAssertion("throughput>=50")).toMatchObject({ scalar: "throughput", op: ">=", threshold: 50 });
    expect(parseAssertion("error_rate<=1.5%")).toMatchObject({ scalar: "error_rate", threshold: 1.5 });
  });

  it("names what is wrong with a bad expression", () => {
    const bad = (text: string) => () => parseAssertion(text);
    expect(bad("parse")).toThrow(AssertionSyntaxError);
    expect(bad("parse.p95<=2")).toThrow(/must be a duration with a unit/);
    expect(bad("parse.p95<=2 minutes")).toThrow(/must be a duration with a unit/);
    expect(bad("parse.p90<=2ms")).toThrow(/unknown metric "p90".*mean, p50, p95, p99, max/);
    expect(bad("pars.p95<=2ms")).toThrow(/unknown segment "pars"/);
    expect(bad("parse<=2ms")).toThrow(/latencies need a metric, e.g. parse.p95<=2ms/);
    expect(bad("errors<=none")).toThrow(/must be a number/);
    expect(bad("errors=0")).toThrow(/cannot read assertion/);
  });

  it("parses every built-in assertion, each tighter than the original's", () => {
    const ours = DEFAULT_ASSERTIONS.map(parseAssertion);
    const original = ORIGINAL_ASSERTIONS.map(parseAssertion);
    for (const o of original) {
      const mine = ours.find(
        (a) =>
          a.kind === "segment" && o.kind === "segment" && a.text.split(/<=/)[0] === o.text.split(/<=/)[0],
      );
      expect(mine, o.text).toBeDefined();
      expect(mine?.threshold).toBeLessThan(o.threshold);
    }
    expect(ours.some((a) => a.kind === "scalar" && a.scalar === "errors" && a.threshold === 0)).toBe(true);
  });
});

describe("assertion evaluation", () => {
  const run = summarizeRun(
    [
      sample(),
      sample({ timing: { ...timing, parse: 400 } }),
      sample({ status: 429, error: { key: "429 rate_limit_exceeded", message: "slow down" } }),
    ],
    2_000_000,
    1,
  );

  it("passes and fails on the measured figure, with the original's detail format", () => {
    const [mean, p95, errors, rate, tput] = evaluateAssertions(
      ["parse.mean<=0.5ms", "parse.p95<=300us", "errors<=0", "error_rate<=50%", "throughput>=1"].map(
        parseAssertion,
      ),
      run,
    );
    expect(mean).toEqual({
      assertion: "parse.mean<=0.5ms",
      pass: true,
      actual: 220,
      threshold: 500,
      unit: "us",
      detail: "mean=220µs (threshold=500µs)",
    });
    expect(p95).toMatchObject({ pass: false, actual: 400, detail: "p95=400µs (threshold=300µs)" });
    expect(errors).toMatchObject({ pass: false, actual: 1, detail: "errors=1 (threshold=0)" });
    expect(rate).toMatchObject({ pass: true, unit: "%" });
    expect(rate?.actual).toBeCloseTo(33.33, 1);
    expect(tput).toMatchObject({ pass: true, actual: 1, unit: "req/s" });
  });

  it("fails a latency assertion that has no samples", () => {
    const [ttft] = evaluateAssertions([parseAssertion("ttft.p95<=1s")], summarizeRun([], 1_000, 1));
    expect(ttft).toMatchObject({ pass: false, actual: null, detail: "no ttft samples (threshold=1s)" });
  });
});
