// The in-memory io of the CLI kit: captured output and a shutdown signal the test sends.
export { type TestIo, testIo } from "@darkbloom/cli-kit/testing";
