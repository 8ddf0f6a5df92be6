export { AccountStore } from "./accounts/account-store.js";
export { Billing } from "./billing/billing.js";
export { uploadVocabulary, vocabularyOf } from "./catalog/vocabulary-upload.js";
export { type CoordinatorConfig, type CoordinatorConfigInput, resolveConfig } from "./config.js";
export { type RunningCoordinator, startCoordinator } from "./coordinator.js";
export { ApiError } from "./errors/index.js";
export { TIMING_PHASES, type TimingPhase } from "./inference/timing.js";
export { createLogger, type Logger } from "./log.js";
export { CoordinatorMetrics } from "./metrics.js";
export {
  type EmbeddedPostgresOptions,
  type EmbeddedPostgresServer,
  startEmbeddedPostgres,
} from "./store/embedded-postgres.js";
export { attestationView } from "./trust/attestation-view.js";
export { TrustCode } from "./trust/reasons.js";
export { EkTrustStore } from "./trust/tpm/index.js";
export { TrustManager, type TrustManagerOptions } from "./trust/trust-manager.js";
