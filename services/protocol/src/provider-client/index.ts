// The provider's side of ProviderService.Connect: what the daemon and the scripted provider of
// @darkbloom/testing send, how chunks are sealed, and how the stream is dialed and kept alive.
// A subpath of its own so that the coordinator, which only receives, does not load the client.
export {
  type Dialed,
  type DialOptions,
  dial,
  KEEPALIVE,
  openSocket,
  providerClient,
  type SocketOptions,
  type TransportKind,
} from "./dial.js";
export {
  acceptedMessage,
  attestationResponseMessage,
  type ChoiceOutcome,
  chunkMessage,
  completeMessage,
  embeddingChunkMessage,
  errorMessage,
  type HeartbeatInit,
  heartbeatMessage,
  type InferenceFailure,
  loadStatusMessage,
  logprobsChunkMessage,
  type RegisterInit,
  type ResponseSignatureInit,
  registerMessage,
  sealedChunkMessage,
} from "./messages.js";
export { ChunkDraft, Outbound } from "./outbound.js";
export { GuardedSessionManager } from "./session-manager.js";
