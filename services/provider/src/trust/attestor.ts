import type { MessageInitShape } from "@bufbuild/protobuf";
import { challengeSigningInput, encodeAttestation, encodeChallengeStatus } from "@darkbloom/protocol";
import {
  type AttestationChallenge,
  type AttestationResponseSchema,
  type SignedAttestationSchema,
  SignerKind,
} from "@darkbloom/protocol/provider/v1";
import type { SecurityPosture } from "./platform-state.js";
import type { AttestationSigner } from "./signer.js";

export type SignedAttestationInit = MessageInitShape<typeof SignedAttestationSchema>;
export type AttestationResponseInit = MessageInitShape<typeof AttestationResponseSchema>;

/** A model loaded now, with the weight hash it was registered with. */
export interface LoadedModel {
  id: string;
  sha256: string;
}

/** What the attestation blob says about this machine and daemon. */
export interface AttestationFacts {
  machineId: string;
  daemonVersion: string;
  chip: string;
  machineModel: string;
  os: string;
  osVersion: string;
  /** The X25519 key requests are sealed to (32 bytes); it must be the Register's. */
  encryptionPublicKey: Uint8Array;
  /** The daemon's binary hash (see binary-hash.ts). */
  binarySha256: string;
  /** Hashed hardware serial, "" when unknown. */
  serialSha256: string;
  posture: SecurityPosture;
}

export interface AttestorOptions extends AttestationFacts {
  signer: AttestationSigner;
  /** Re-reads SIP and Secure Boot for each challenge (default: the posture given at start). */
  probePosture?: () => Promise<SecurityPosture>;
  now?: () => number;
}

/**
 * Proves the machine's state to the coordinator: the attestation blob signed once at start (sent in
 * every Register) and the answers to challenges (signature over nonce ‖ timestamp ‖ canonical status,
 * layout in @darkbloom/protocol attestation.ts).
 */
export class Attestor {
  private constructor(
    private readonly options: AttestorOptions,
    readonly attestation: SignedAttestationInit,
    readonly blob: Uint8Array,
  ) {}

  /** Builds and signs the attestation blob. */
  static async create(options: AttestorOptions): Promise<Attestor> {
    const { signer } = options;
    const now = options.now ?? Date.now;
    const blob = encodeAttestation({
      binary_sha256: options.binarySha256,
      chip: options.chip,
      daemon_version: options.daemonVersion,
      encryption_public_key: Buffer.from(options.encryptionPublicKey).toString("base64"),
      key_persistent: signer.persistent,
      machine_id: options.machineId,
      machine_model: options.machineModel,
      os: options.os,
      os_version: options.osVersion,
      secure_boot: options.posture.secureBoot,
      serial_sha256: options.serialSha256,
      signer: signer.kind,
      sip: options.posture.sip,
      timestamp_ms: now(),
    });
    const signature = await signer.sign(blob);
    return new Attestor(
      options,
      {
        blob,
        signature,
        publicKey: signer.publicKey(),
        signer: signer.kind === "secure_enclave" ? SignerKind.SECURE_ENCLAVE : SignerKind.SOFTWARE,
      },
      blob,
    );
  }

  get signer(): AttestationSigner {
    return this.options.signer;
  }

  /** The canonical status document a challenge answer signs. */
  async status(models: readonly LoadedModel[]): Promise<Uint8Array> {
    const posture = this.options.probePosture
      ? await this.options
          .probePosture()
          .catch(() => ({ sip: "unknown" as const, secureBoot: "unknown" as const }))
      : this.options.posture;
    return encodeChallengeStatus({
      binary_sha256: this.options.binarySha256,
      models: models.map((m) => ({ id: m.id, weight_sha256: m.sha256 })),
      secure_boot: posture.secureBoot,
      sip: posture.sip,
    });
  }

  /** Answers a challenge: echoes nonce and timestamp, and signs them with the status. */
  async respond(
    challenge: AttestationChallenge,
    models: readonly LoadedModel[],
  ): Promise<AttestationResponseInit> {
    const status = await this.status(models);
    return answerChallenge(this.options.signer, challenge, status);
  }
}

/** Signs `status` for a challenge (the exact bytes are challengeSigningInput's). */
export async function answerChallenge(
  signer: AttestationSigner,
  challenge: Pick<AttestationChallenge, "nonce" | "timestampMs">,
  status: Uint8Array,
): Promise<AttestationResponseInit> {
  const signature = await signer.sign(challengeSigningInput(challenge.nonce, challenge.timestampMs, status));
  return { nonce: challenge.nonce, timestampMs: challenge.timestampMs, status, signature };
}
