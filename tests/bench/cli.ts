/**
 * The benchmark programs' command lines: strict flags parsed one way, and bad input refused one way
 * (one line that says what is wrong, the usage, exit 64), with the flags several programs share.
 */
import { type ParseArgsConfig, parseArgs } from "node:util";
import { bench, isModelShapeName, type ModelShapeName } from "@darkbloom/provider";

export type BenchValues = Record<string, string | boolean | undefined>;

export interface BenchCli {
  values: BenchValues;
  /** Prints `<program>: <message>` and the usage to stderr, exits 64. */
  usage(message: string): never;
  /** Runs `read`; a BenchFlagError it throws (a bad number or list) becomes usage(). */
  flags<T>(read: () => T): T;
  /** Prints `<program>: <line>` to stderr. */
  progress(line: string): void;
}

/** Parses argv (strict: unknown flags and positionals are refused). */
export function benchCli(
  program: string,
  usageText: string,
  options: NonNullable<ParseArgsConfig["options"]>,
): BenchCli {
  const usage = (message: string): never => {
    process.stderr.write(`${program}: ${message}\n${usageText}\n`);
    process.exit(64);
  };
  let values: BenchValues = {};
  try {
    // No benchmark flag is `multiple`: every value is a string or a boolean.
    values = parseArgs({ options, strict: true, allowPositionals: false }).values as BenchValues;
  } catch (error) {
    usage(error instanceof Error ? (error.message.split("\n")[0] ?? "bad arguments") : String(error));
  }
  return {
    values,
    usage,
    flags<T>(read: () => T): T {
      try {
        return read();
      } catch (error) {
        if (error instanceof bench.BenchFlagError) usage(error.message);
        throw error;
      }
    },
    progress: (line) => process.stderr.write(`${program}: ${line}\n`),
  };
}

/** --models: a comma-separated list of known model shapes (at least one). */
export function shapesFlag(cli: BenchCli, raw: unknown): ModelShapeName[] {
  const shapes: ModelShapeName[] = [];
  for (const name of String(raw).split(",")) {
    const shape = name.trim();
    if (shape === "") continue;
    if (!isModelShapeName(shape)) cli.usage(`--models: unknown shape ${JSON.stringify(shape)}`);
    shapes.push(shape);
  }
  if (shapes.length === 0) cli.usage("--models needs at least one shape");
  return shapes;
}

/** --summary: which summary over the rounds the tables show. */
export function summaryFlag(cli: BenchCli, raw: unknown): bench.RoundSummary {
  if (raw !== "median" && raw !== "best")
    cli.usage(`--summary must be median or best (got ${JSON.stringify(raw)})`);
  return raw;
}

/** What every benchmark measures with: batch sizes, prompt and completion lengths, rounds. */
export interface BenchShapeDefaults {
  batches: readonly number[];
  promptTokens: number;
  genTokens: number;
  rounds: number;
}

/** The flags of BenchShapeDefaults, plus --cache-dir (the synthesized models) and --json. */
export function shapeOptions(defaults: BenchShapeDefaults): NonNullable<ParseArgsConfig["options"]> {
  return {
    batches: { type: "string", default: defaults.batches.join(",") },
    "prompt-tokens": { type: "string", default: String(defaults.promptTokens) },
    "gen-tokens": { type: "string", default: String(defaults.genTokens) },
    rounds: { type: "string", default: String(defaults.rounds) },
    "cache-dir": { type: "string", default: ".darkbloom/bench-models" },
    json: { type: "boolean", default: false },
  };
}

/** Reads the shapeOptions flags (a bad one is refused with usage()). */
export function shapeFlags(
  cli: BenchCli,
  defaults: BenchShapeDefaults,
): bench.BenchShape & BenchShapeDefaults {
  const { values } = cli;
  return cli.flags(() => ({
    batches: bench.batchesFlag("--batches", values.batches, defaults.batches),
    promptTokens: bench.integerFlag(
      "--prompt-tokens",
      values["prompt-tokens"],
      defaults.promptTokens,
      1,
      100_000,
    ),
    genTokens: bench.integerFlag("--gen-tokens", values["gen-tokens"], defaults.genTokens, 2, 100_000),
    rounds: bench.integerFlag("--rounds", values.rounds, defaults.rounds, 1, 100),
  }));
}
