import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  ATTESTATION_SIGNERS,
  challengeSigningInput,
  encodeAttestation,
  encodeChallengeStatus,
  TPM_QUOTE_PCRS,
  tpmQuoteQualifyingData,
} from "@darkbloom/protocol";
import type {
  AttestationChallenge,
  AttestationResponseSchema,
  SignedAttestationSchema,
  TpmEvidenceSchema,
} from "@darkbloom/protocol/provider/v1";
import type { Logger } from "pino";
import type { SecurityPosture } from "./platform-state.js";
import type { AttestationSigner } from "./signer.js";
import { isTpmSigner } from "./tpm-signer.js";

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
  /** Warnings while answering challenges. */
  logger?: Logger;
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
  /** Register.tpm, for a TPM signer. */
  readonly tpm: MessageInitShape<typeof TpmEvidenceSchema> | undefined;

  private constructor(
    private readonly options: AttestorOptions,
    readonly attestation: SignedAttestationInit,
    readonly blob: Uint8Array,
  ) {
    const signer = options.signer;
    this.tpm = isTpmSigner(signer) ? { ...signer.evidence } : undefined;
  }

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
        signer: ATTESTATION_SIGNERS[signer.kind],
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

  /**
   * Answers a challenge: echoes nonce and timestamp, and signs them with the status. A TPM signer
   * adds a quote over the boot-state PCRs bound to the same bytes, and activates the challenge's
   * credential when it carries one (a credential the TPM refuses is answered with no secret: the
   * coordinator decides what that means).
   */
  async respond(
    challenge: AttestationChallenge,
    models: readonly LoadedModel[],
  ): Promise<AttestationResponseInit> {
    const status = await this.status(models);
    const answer = await answerChallenge(this.options.signer, challenge, status);
    const signer = this.options.signer;
    if (!isTpmSigner(signer)) return answer;
    const quote = await signer.quote(
      tpmQuoteQualifyingData(challenge.nonce, challenge.timestampMs, status),
      TPM_QUOTE_PCRS,
    );
    let secret: Uint8Array = new Uint8Array();
    const credential = challenge.tpmCredential;
    if (credential) {
      secret = await signer
        .activateCredential(credential.credentialBlob, credential.encryptedSecret)
        .catch((error: Error) => {
          this.options.logger?.warn({ err: error.message }, "the TPM refused the coordinator's credential");
          return new Uint8Array();
        });
    }
    return {
      nonce: challenge.nonce,
      timestampMs: challenge.timestampMs,
      status,
      signature: answer.signature,
      tpmQuote: { attest: quote.attest, signature: quote.signature, pcrValues: quote.pcrValues },
      tpmCredentialSecret: secret,
    };
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
