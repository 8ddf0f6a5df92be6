// Test doubles for code that drives the daemon's parts. Exported as "@darkbloom/provider/testing",
// never from the package's main entry point, so production code cannot come to depend on them.

export {
  ExpositionError,
  type MetricFamily,
  parsePrometheusText,
  type Sample,
  sampleValue,
} from "./prometheus-text.js";
export { ScriptedEngine, type ScriptedEngineOptions, scriptedVector } from "./scripted-engine.js";
