/**
 * The native engine (@darkbloom/native/llama) on a synthesized tiny Qwen3 model: the conformance
 * suite every engine passes. Skipped only where the addon is not built and CI does not require it
 * (DARKBLOOM_NATIVE_REQUIRED=1 makes a missing addon a failure).
 */
import { nativeLlamaAvailable } from "@darkbloom/native/llama";
import { describe } from "vitest";
import { engineConformance } from "../conformance.test-support.js";
import { NativeEngine } from "./native-engine.js";

function addonTestable(): boolean {
  if (nativeLlamaAvailable()) return true;
  if (process.env.DARKBLOOM_NATIVE_REQUIRED === "1") throw new Error("the llama addon is not built");
  return false;
}

describe.skipIf(!addonTestable())("native engine", () => {
  engineConformance({
    name: "native engine",
    backend: "native-llama",
    create: (options) => new NativeEngine(options),
    sharedStepsObservable: false,
  });
});
