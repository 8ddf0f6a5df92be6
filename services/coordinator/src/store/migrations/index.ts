import { init } from "./0001_init.js";
import { billing } from "./0002_billing.js";
import { accountLinks } from "./0003_account_links.js";
import { releasePolicy } from "./0004_release_policy.js";
import { machineBindings } from "./0005_machine_bindings.js";
import { moneyRules } from "./0006_money_rules.js";
import { providerDirectory } from "./0007_provider_directory.js";
import { modelTokenizers } from "./0008_model_tokenizers.js";
import { keyQuarantine } from "./0009_key_quarantine.js";
import { directoryDispatch } from "./0010_directory_dispatch.js";
import { embeddingDimensions } from "./0011_embedding_dimensions.js";
import { requestTimings } from "./0012_request_timings.js";
import type { Migration } from "./migration.js";

export type { Migration } from "./migration.js";

/**
 * Every migration, in order. Migrations are TypeScript modules rather than .sql files so that they
 * compile into dist/ with the code and are found the same way from src/ and from a build.
 */
export const migrations: readonly Migration[] = [
  init,
  billing,
  accountLinks,
  releasePolicy,
  machineBindings,
  moneyRules,
  providerDirectory,
  modelTokenizers,
  keyQuarantine,
  directoryDispatch,
  embeddingDimensions,
  requestTimings,
];
