import { formatViolation, type StructuredFormat } from "@darkbloom/models/structured";

/**
 * Trust reason code of a provider whose complete output is not the structured output the request
 * asked for. Part of the API, as the metering codes are (usage-meter.ts): never renamed.
 */
export const STRUCTURED_OUTPUT_INVALID = "structured_output_invalid";

/**
 * Why a completed response breaks its `response_format`, or undefined when every choice that ended
 * by itself (finish reason "stop") is JSON the schema accepts. The provider decoded under the
 * format's grammar, which cannot produce anything else: a provider whose output does not hold
 * ignored the grammar (or claims a feature it lacks), and is cut like a provider whose counts the
 * text does not bear out. Choices cut by max_tokens or a stop string are incomplete by right.
 */
export function structuredOutputViolation(
  format: StructuredFormat | undefined,
  texts: readonly string[],
  finishReasons: ReadonlyMap<number, string>,
): string | undefined {
  if (format === undefined) return undefined;
  for (let i = 0; i < texts.length; i++) {
    if (finishReasons.get(i) !== "stop") continue;
    const why = formatViolation(format, texts[i] as string);
    if (why !== undefined) return `choice ${i}: ${why}`;
  }
  return undefined;
}
