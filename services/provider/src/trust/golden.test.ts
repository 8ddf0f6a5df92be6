import { challengeSigningInput, verifyP256 } from "@darkbloom/protocol";
import { SignerKind } from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import { Attestor } from "./attestor.js";
import { hashSerial } from "./platform-state.js";
import { SoftwareSigner } from "./software-signer.js";

/**
 * Golden vectors (provider side): this fixed key and these fixed inputs must produce exactly these
 * bytes. The coordinator's golden test checks that it accepts the same bytes and signatures.
 */
const PEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/p+QQdtGSdbro1rx
cbHHVkWIf9Z/9Gmx/baSLSGTK+GhRANCAAS4e/Jm1kFN3dC3N2hz/AApbW0DHdDV
WsI/1P5jPwdP8oYRfs4coWkJOincTy7M8TtuTwSjyAa49DA8tn8ulzNn
-----END PRIVATE KEY-----
`;
const PUBLIC_KEY_HEX =
  "04b87bf266d6414dddd0b7376873fc00296d6d031dd0d55ac23fd4fe633f074ff286117ece1ca169093a29dc4f2eccf13b6e4f04a3c806b8f4303cb67f2e973367";
const BLOB =
  '{"binary_sha256":"abababababababababababababababababababababababababababababababab","chip":"Apple M3 Max",' +
  '"daemon_version":"1.2.3","encryption_public_key":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",' +
  '"format":"darkbloom.attestation.v1","key_persistent":true,"machine_id":"dbp-00000000-0000-4000-8000-000000000000",' +
  '"machine_model":"Mac15,9","os":"darwin","os_version":"15.2","secure_boot":"enabled",' +
  '"serial_sha256":"bf0d1d5abb4122293dd623bd7cf79a696b43c344565cbbf9b7a17312fdac1239","signer":"software",' +
  '"sip":"enabled","timestamp_ms":1700000000000}';
const STATUS =
  '{"binary_sha256":"abababababababababababababababababababababababababababababababab",' +
  '"format":"darkbloom.challenge-status.v1","models":[{"id":"qwen3-0.6b",' +
  '"weight_sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"}],' +
  '"secure_boot":"enabled","sip":"enabled"}';
const CHALLENGE = { nonce: Uint8Array.from({ length: 32 }, (_, i) => i), timestampMs: 1_700_000_000_123n };
const SIGNING_INPUT_HEX =
  "6461726b626c6f6f6d2d6368616c6c656e67652d763100" + // "darkbloom-challenge-v1" 0x00
  "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" + // nonce
  "0000018bcfe5687b" + // timestamp_ms 1700000000123, u64 big-endian
  "00000117" + // status length 279, u32 big-endian
  Buffer.from(STATUS).toString("hex");

async function goldenAttestor(): Promise<Attestor> {
  return Attestor.create({
    signer: SoftwareSigner.fromPem(PEM),
    machineId: "dbp-00000000-0000-4000-8000-000000000000",
    daemonVersion: "1.2.3",
    chip: "Apple M3 Max",
    machineModel: "Mac15,9",
    os: "darwin",
    osVersion: "15.2",
    encryptionPublicKey: Uint8Array.from({ length: 32 }, (_, i) => i + 1),
    binarySha256: "ab".repeat(32),
    serialSha256: hashSerial("C02XYZ"),
    posture: { sip: "enabled", secureBoot: "enabled" },
    now: () => 1_700_000_000_000,
  });
}

describe("golden bytes (provider side)", () => {
  it("signs exactly the golden attestation blob", async () => {
    const attestor = await goldenAttestor();
    const { attestation } = attestor;
    expect(Buffer.from(attestation.publicKey as Uint8Array).toString("hex")).toBe(PUBLIC_KEY_HEX);
    expect(new TextDecoder().decode(attestation.blob as Uint8Array)).toBe(BLOB);
    expect(attestation.signer).toBe(SignerKind.SOFTWARE);
    expect(
      verifyP256(
        Buffer.from(PUBLIC_KEY_HEX, "hex"),
        new TextEncoder().encode(BLOB),
        attestation.signature as Uint8Array,
      ),
    ).toBe(true);
  });

  it("answers the golden challenge with the golden status, signed over the golden input", async () => {
    const attestor = await goldenAttestor();
    const response = await attestor.respond(
      { ...CHALLENGE, $typeName: "darkbloom.provider.v1.AttestationChallenge" },
      [{ id: "qwen3-0.6b", sha256: "cd".repeat(32) }],
    );
    expect(response.nonce).toEqual(CHALLENGE.nonce);
    expect(response.timestampMs).toBe(CHALLENGE.timestampMs);
    expect(new TextDecoder().decode(response.status as Uint8Array)).toBe(STATUS);
    const input = challengeSigningInput(
      CHALLENGE.nonce,
      CHALLENGE.timestampMs,
      response.status as Uint8Array,
    );
    expect(Buffer.from(input).toString("hex")).toBe(SIGNING_INPUT_HEX);
    expect(
      verifyP256(
        Buffer.from(PUBLIC_KEY_HEX, "hex"),
        Buffer.from(SIGNING_INPUT_HEX, "hex"),
        response.signature as Uint8Array,
      ),
    ).toBe(true);
  });
});
