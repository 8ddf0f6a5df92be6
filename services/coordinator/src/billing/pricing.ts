/** Price of a model per million tokens, in micro-USD. */
export interface ModelPrice {
  inputMicroUsdPerMillion: bigint;
  outputMicroUsdPerMillion: bigint;
}

/** The least a completed request costs (SPEC section 5). */
export const MIN_CHARGE_MICRO_USD = 100n;

export const FREE: ModelPrice = { inputMicroUsdPerMillion: 0n, outputMicroUsdPerMillion: 0n };

const MILLION = 1_000_000n;

function ceilDiv(a: bigint, b: bigint): bigint {
  return (a + b - 1n) / b;
}

/** Tokens × price, rounded up to the next micro-USD. */
export function cost(price: ModelPrice, promptTokens: number, completionTokens: number): bigint {
  return ceilDiv(
    BigInt(promptTokens) * price.inputMicroUsdPerMillion +
      BigInt(completionTokens) * price.outputMicroUsdPerMillion,
    MILLION,
  );
}

/**
 * What a request can cost at most: the most prompt tokens it can be billed for (the prompt's token
 * bound, inference/token-estimate.ts) and every completion token it may produce. Holding this means
 * a completed request's accepted usage is always covered by its reservation.
 */
export function worstCase(
  price: ModelPrice,
  promptTokenBound: number,
  maxTokens: number,
  choices: number,
): bigint {
  const c = cost(price, promptTokenBound, maxTokens * choices);
  return c > MIN_CHARGE_MICRO_USD ? c : MIN_CHARGE_MICRO_USD;
}

/** What a completed request is charged (at least the minimum), before clamping to its reservation. */
export function completedCharge(price: ModelPrice, promptTokens: number, completionTokens: number): bigint {
  const c = cost(price, promptTokens, completionTokens);
  return c > MIN_CHARGE_MICRO_USD ? c : MIN_CHARGE_MICRO_USD;
}

/** Formats micro-USD as dollars, e.g. 1234567n → "$1.234567". */
export function dollars(microUsd: bigint): string {
  const sign = microUsd < 0n ? "-" : "";
  const abs = microUsd < 0n ? -microUsd : microUsd;
  return `${sign}$${abs / MILLION}.${(abs % MILLION).toString().padStart(6, "0")}`;
}
