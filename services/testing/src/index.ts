export { type BackoffPolicy, backoffDelay, backoffPolicy } from "@darkbloom/protocol";
export { SharedConnection, type TransportKind } from "./dial.js";
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
export {
  type Disconnect,
  type DisconnectReason,
  type LoadModelCommand,
  type Misbehaviour,
  modelWeightSha256,
  type ScriptedAttestor,
  type ScriptedModel,
  ScriptedProvider,
  type ScriptedProviderEvents,
  type ScriptedProviderOptions,
  startScriptedProviders,
  stopAll,
} from "./scripted-provider.js";
export { parseSse, readSse, type SseBody, type SseEvent, SseFormatError } from "./sse.js";
