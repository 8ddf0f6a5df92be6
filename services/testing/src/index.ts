export { type BackoffPolicy, backoffDelay, backoffPolicy } from "@darkbloom/protocol";
export type { TransportKind } from "@darkbloom/protocol/provider-client";
export type { ForgedSignature } from "./response-signing.js";
export {
  DEFAULT_TOKENS,
  defaultScript,
  type FailureMode,
  type FailurePoint,
  type ReceivedRequest,
  type Script,
  type ScriptError,
  type ScriptFailure,
  type ScriptFn,
} from "./script.js";
export { type ScriptedEmbeddings, unitVector } from "./scripted-embeddings.js";
export type {
  Disconnect,
  DisconnectReason,
  LoadModelCommand,
  Misbehaviour,
  ScriptedAttestor,
  ScriptedModel,
  ScriptedProviderEvents,
  ScriptedProviderOptions,
} from "./scripted-options.js";
export { modelWeightSha256, ScriptedProvider, startScriptedProviders, stopAll } from "./scripted-provider.js";
export { SharedConnection } from "./shared-connection.js";
export { newSigningKey, softwareAttestor, type TestSigningKey } from "./software-attestor.js";
export { parseSse, readSse, type SseBody, type SseEvent, SseFormatError } from "./sse.js";
export {
  createSoftwareTpmCa,
  type SoftwareTpm,
  type SoftwareTpmCa,
  SoftwareTpmToolError,
  softwareTpmSupport,
  softwareTpmTestable,
  startSoftwareTpm,
  type ToolOptions,
} from "./swtpm.js";
