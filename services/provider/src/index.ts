// The provider benchmark; tests/bench/provider-bench.ts also drives the engine and the synthesizer directly.

export {
  isModelShapeName,
  MODEL_SHAPES,
  type ModelShapeName,
  type SynthesizeOptions,
  type SynthesizeResult,
  synthesizeModel,
} from "@darkbloom/models";
export * as bench from "./bench/index.js";
export { createDefaultEngine } from "./cli/engine-factory.js";
export { type CliIo, ExitCode, processIo } from "./cli/io.js";
export { buildProgram, runCli } from "./cli/program.js";
export { readCheckpoint } from "./config/checkpoint-inventory.js";
export {
  ConfigError,
  type ConfigInputs,
  type ProviderConfig,
  type ResolvedConfig,
  resolveConfig,
  type SettingSource,
} from "./config/config.js";
export { modelPath, readModelFile, scanModels, selectModels } from "./config/model-inventory.js";
export { DataDirLayout, defaultConfigPath, defaultDataDir, pidFileOf } from "./config/paths.js";
export {
  defaultMaxContext,
  LOG_LEVELS,
  type LogLevel,
  SETTINGS,
  type SettingName,
  type Settings,
} from "./config/settings.js";
export {
  DAEMON_VERSION,
  type DaemonOptions,
  DaemonStartError,
  DEFAULT_DRAIN_DEADLINE_MS,
  type RunningDaemon,
  startDaemon,
} from "./daemon.js";
export * from "./engine/engine.js";
export { LlamaEngine, type LlamaEngineOptions, type LlamaEngineStats } from "./engine/llama/llama-engine.js";
export { MlxEngine, type MlxEngineOptions } from "./engine/mlx/mlx-engine.js";
export { NativeEngine, type NativeEngineOptions } from "./engine/native/native-engine.js";
export {
  chooseThreads,
  MIB_PER_THREAD,
  type ThreadChoice,
  type ThreadChoiceInput,
} from "./engine/threads.js";
export {
  type LinkCounters,
  type LinkDisconnect,
  type LinkObserver,
  ProviderLink,
  type ProviderLinkEvents,
  type ProviderLinkOptions,
  REQUEST_OUTCOMES,
  type RequestOutcome,
  type ServingKnobs,
} from "./link/link.js";
export { type EncryptionKeyPair, loadOrCreateIdentity, type ProviderIdentity } from "./machine/identity.js";
export { type CpuTopology, detectTopology } from "./machine/topology.js";
export * from "./metrics/index.js";
export {
  type CommandRunner,
  ServiceError,
  type ServiceManager,
  type ServiceSpec,
  type ServiceStatus,
  serviceManagerFor,
} from "./service/index.js";
export { AlreadyRunningError, acquirePidFile, processAlive, readPidFile } from "./service/pid-file.js";
export {
  type AttestationSigner,
  Attestor,
  isTpmSigner,
  openTpmSigner,
  TpmKeyChangedError,
  TpmSigner,
  treeSha256,
} from "./trust/index.js";
