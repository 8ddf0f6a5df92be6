import { RECONNECT_BACKOFF } from "./constants.js";

/** Exponential backoff with symmetric jitter: initialMs × multiplier^attempt, ±jitter, capped at maxMs. */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  multiplier: number;
  /** Fraction of the delay added or removed at random, 0 to 1. */
  jitter: number;
}

/** The protocol's reconnect policy (1 s doubling to 30 s, ±20%) with any fields the caller overrides. */
export function backoffPolicy(overrides: Partial<BackoffPolicy> = {}): BackoffPolicy {
  return { ...RECONNECT_BACKOFF, ...overrides };
}

/** Delay before reconnect attempt number `attempt` (0 for the first after a disconnect). */
export function backoffDelay(
  policy: BackoffPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(policy.maxMs, policy.initialMs * policy.multiplier ** attempt);
  const jittered = base * (1 + policy.jitter * (2 * random() - 1));
  return Math.max(0, Math.min(policy.maxMs, Math.round(jittered)));
}
