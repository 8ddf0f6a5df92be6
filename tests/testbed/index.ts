export { ManagedProcess } from "./managed-process.js";
export { TestbedPostgres } from "./postgres.js";
export { TcpTap } from "./tcp-tap.js";
export {
  expectedCharge,
  startTestbed,
  TESTBED_PRICES,
  Testbed,
  type TestbedAccount,
  TestbedCoordinator,
  type TestbedOptions,
  type TestbedProviderSpec,
  waitUntil,
} from "./testbed.js";
export { TestbedProvider } from "./testbed-provider.js";
