import { MAX_EMBEDDING_INPUT_TOKENS } from "@darkbloom/models/embeddings";
import { PROTOCOL_VERSION, USAGE_VERSION } from "@darkbloom/protocol";
import { ModelFeature } from "@darkbloom/protocol/provider/v1";
import type { RegisterInit } from "@darkbloom/protocol/provider-client";
import { RESPONSE_SIGNATURE_VERSION } from "@darkbloom/protocol/verifiable-response";
import type { ProviderLinkOptions } from "./options.js";

/**
 * The Register that opens every stream: who this provider is (machine id, keys, attestation, account),
 * what it serves (each model's context capped at the configured maximum) and how (capacity, knobs).
 */
export function registration(options: ProviderLinkOptions): RegisterInit {
  const { knobs } = options;
  return {
    protocolVersion: PROTOCOL_VERSION,
    daemonVersion: options.daemonVersion,
    machineId: options.machineId,
    hardware: options.hardware,
    models: options.models.map((m) => ({
      id: m.id,
      sizeBytes: BigInt(m.sizeBytes),
      quantization: m.quantization,
      weightSha256: m.sha256,
      contextLength: Math.min(
        m.contextLength > 0 ? Math.min(m.contextLength, knobs.maxContext) : knobs.maxContext,
        // An embedding model serves inputs up to the embedding context (not yet loaded: lazy loading).
        m.embedding ? MAX_EMBEDDING_INPUT_TOKENS : Number.POSITIVE_INFINITY,
      ),
      architecture: m.architecture,
      // Said only where they hold: the coordinator routes structured outputs and embeddings by them.
      features: [
        ...(options.engine.constrains(m) ? [ModelFeature.GRAMMAR] : []),
        ...(options.engine.logprobs?.(m) ? [ModelFeature.LOGPROBS] : []),
        ...(options.engine.embeds(m) ? [ModelFeature.EMBEDDINGS] : []),
      ],
    })),
    engineBackend: options.engine.backend,
    encryptionPublicKey: options.encryptionKey.publicKey,
    ...(options.attestor ? { attestation: options.attestor.attestation } : {}),
    ...(options.attestor?.tpm ? { tpm: options.attestor.tpm } : {}),
    accountToken: options.accountToken ?? "",
    capacity: { maxBatch: knobs.maxBatch, maxContext: knobs.maxContext },
    responseSignatureVersion: RESPONSE_SIGNATURE_VERSION,
    usageVersion: USAGE_VERSION,
    knobs: {
      kvBits: knobs.kvBits,
      maxContext: knobs.maxContext,
      maxBatch: knobs.maxBatch,
      idleTimeoutMinutes: knobs.idleTimeoutMinutes,
      threads: knobs.threads,
    },
  };
}
