import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import {
  challengeSigningInput,
  encodeAttestation,
  encodeChallengeStatus,
  rawP256PublicKey,
} from "@darkbloom/protocol";
import { SignerKind } from "@darkbloom/protocol/provider/v1";
import type { ScriptedAttestor } from "./scripted-options.js";

/** A P-256 key a scripted provider attests and signs responses with, as a software signer's would be. */
export interface TestSigningKey {
  privateKey: KeyObject;
  /** SEC1 uncompressed public key. */
  publicKey: Uint8Array;
  hex: string;
}

export function newSigningKey(): TestSigningKey {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const publicKey = rawP256PublicKey(privateKey);
  return { privateKey, publicKey, hex: Buffer.from(publicKey).toString("hex") };
}

/**
 * Attests as a daemon with a software key running the binary `binarySha256` on a healthy Linux
 * machine, and answers every challenge honestly with the same key: what trust and release-policy
 * tests need of a well-behaved provider. `persistent` false reports an ephemeral key.
 */
export function softwareAttestor(
  key: TestSigningKey,
  options: { binarySha256: string; persistent?: boolean },
): ScriptedAttestor {
  const der = (data: Uint8Array) => sign("sha256", data, { key: key.privateKey, dsaEncoding: "der" });
  return {
    async attestation(init) {
      const blob = encodeAttestation({
        binary_sha256: options.binarySha256,
        chip: "scripted",
        daemon_version: init.daemonVersion,
        encryption_public_key: Buffer.from(init.encryptionPublicKey).toString("base64"),
        key_persistent: options.persistent ?? true,
        machine_id: init.machineId,
        machine_model: "scripted",
        os: "linux",
        os_version: "6.1",
        secure_boot: "enabled",
        serial_sha256: "",
        signer: "software",
        sip: "not_applicable",
        timestamp_ms: Date.now(),
      });
      return { blob, signature: der(blob), publicKey: key.publicKey, signer: SignerKind.SOFTWARE };
    },
    async answer(challenge, models) {
      const status = encodeChallengeStatus({
        binary_sha256: options.binarySha256,
        models: [...models]
          .sort((a, b) => (a.id < b.id ? -1 : 1))
          .map((m) => ({ id: m.id, weight_sha256: m.weightSha256 })),
        secure_boot: "enabled",
        sip: "not_applicable",
      });
      const input = challengeSigningInput(challenge.nonce, challenge.timestampMs, status);
      return { nonce: challenge.nonce, timestampMs: challenge.timestampMs, status, signature: der(input) };
    },
  };
}
