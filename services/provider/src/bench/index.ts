export { type DirectTarget, type DirectTargetOptions, openDirectTarget } from "./direct-target.js";
export { BenchFlagError, batchesFlag, integerFlag, MAX_BENCH_BATCH } from "./flags.js";
export {
  alignColumns,
  formatComparison,
  formatWorkload,
  METRIC_NOTES,
  type RatioColumn,
  type RoundSummary,
  TABLE_METRICS,
  WALL_METRIC_NOTE,
  WALL_METRICS,
} from "./format.js";
export { type HttpTargetOptions, httpTarget, SseParser } from "./http-target.js";
export {
  type JoinMeasurement,
  type JoinOptions,
  JoinTooShortError,
  measureJoin,
  medianJoin,
} from "./join.js";
export { type BenchTokenizer, type BuiltPrompt, buildPrompt, fillerText, PromptSet } from "./prompts.js";
export {
  type BatchResult,
  type BenchRunOptions,
  type BenchShape,
  benchContextSize,
  benchmarkDirect,
  benchmarkEngine,
  DEFAULT_SHAPE,
  runBenchmark,
  type TargetResult,
} from "./run.js";
export {
  type AggregateByBatch,
  type BatchMeasurement,
  bestMeasurement,
  formatRatio,
  median,
  medianMeasurement,
  overheadCheck,
  percentile,
  type RowTiming,
  rate,
  ratio,
  scalingCheck,
  summarizeBatch,
  type TargetCheck,
} from "./stats.js";
export { type BenchRow, type BenchTarget, engineTarget, runBatch } from "./target.js";
