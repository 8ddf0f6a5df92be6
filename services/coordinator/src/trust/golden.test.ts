import { create } from "@bufbuild/protobuf";
import { challengeSigningInput } from "@darkbloom/protocol";
import {
  AttestationResponseSchema,
  RegisterSchema,
  SignerKind,
  TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import { verifyRegistration } from "./attestation.js";
import { checkChallengeResponse } from "./challenge.js";

/**
 * Golden vectors, produced once with a fixed P-256 key by the provider's signer (the provider's
 * golden test holds the private key and checks it produces these exact bytes). The coordinator must
 * accept them byte for byte, and nothing else.
 */
const PUBLIC_KEY = hex(
  "04b87bf266d6414dddd0b7376873fc00296d6d031dd0d55ac23fd4fe633f074ff286117ece1ca169093a29dc4f2eccf13b6e4f04a3c806b8f4303cb67f2e973367",
);
const BLOB =
  '{"binary_sha256":"abababababababababababababababababababababababababababababababab","chip":"Apple M3 Max",' +
  '"daemon_version":"1.2.3","encryption_public_key":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",' +
  '"format":"darkbloom.attestation.v1","key_persistent":true,"machine_id":"dbp-00000000-0000-4000-8000-000000000000",' +
  '"machine_model":"Mac15,9","os":"darwin","os_version":"15.2","secure_boot":"enabled",' +
  '"serial_sha256":"bf0d1d5abb4122293dd623bd7cf79a696b43c344565cbbf9b7a17312fdac1239","signer":"software",' +
  '"sip":"enabled","timestamp_ms":1700000000000}';
const BLOB_SIGNATURE = hex(
  "3046022100bb76b4b79574aada519ffa6191156b33f77d78152780b5c59393bcb736b853d4022100f06c0d042b09d55af662daf611a79e34e69e01ef2bb4db1095aae31c0fa0f214",
);
const STATUS =
  '{"binary_sha256":"abababababababababababababababababababababababababababababababab",' +
  '"format":"darkbloom.challenge-status.v1","models":[{"id":"qwen3-0.6b",' +
  '"weight_sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"}],' +
  '"secure_boot":"enabled","sip":"enabled"}';
const NONCE = Uint8Array.from({ length: 32 }, (_, i) => i);
const TIMESTAMP_MS = 1_700_000_000_123n;
const CHALLENGE_SIGNATURE = hex(
  "304502201cbd577f45637dde74e65f44e56ac3f094e814cc458e3e9e312ddae3eaab0f4e022100b86163531830399f87f3fd76970f13cd4453a6b73768618574569bcd25c4105c",
);
const ENCRYPTION_KEY = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
const MODELS = new Map([["qwen3-0.6b", "cd".repeat(32)]]);

function hex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, "hex"));
}

function register(blob: Uint8Array = new TextEncoder().encode(BLOB), signature = BLOB_SIGNATURE) {
  return create(RegisterSchema, {
    protocolVersion: 1,
    daemonVersion: "1.2.3",
    machineId: "dbp-00000000-0000-4000-8000-000000000000",
    encryptionPublicKey: ENCRYPTION_KEY,
    attestation: { blob, signature, publicKey: PUBLIC_KEY, signer: SignerKind.SOFTWARE },
  });
}

describe("golden bytes (coordinator side)", () => {
  it("accepts the golden attestation blob with its signature, and reads its fields", () => {
    const v = verifyRegistration(register(), { hardwareKeys: new Set() });
    expect(v.violations).toEqual([]);
    expect(v.level).toBe(TrustLevel.SELF_SIGNED);
    expect(v.attestation?.document).toMatchObject({
      chip: "Apple M3 Max",
      machine_model: "Mac15,9",
      sip: "enabled",
      secure_boot: "enabled",
      signer: "software",
      key_persistent: true,
      timestamp_ms: 1_700_000_000_000,
    });
  });

  it("refuses the golden blob with one byte changed (the signature covers the exact bytes)", () => {
    const tampered = new TextEncoder().encode(BLOB.replace('"Mac15,9"', '"Mac15,8"'));
    expect(verifyRegistration(register(tampered), { hardwareKeys: new Set() }).violations[0]?.code).toBe(
      "bad_signature",
    );
    // Same content, other key order: a different byte string, refused even with a valid signature over it.
    const reordered = new TextEncoder().encode(BLOB.replace('{"binary_sha256"', '{ "binary_sha256"'));
    expect(verifyRegistration(register(reordered), { hardwareKeys: new Set() }).violations[0]?.code).toBe(
      "bad_signature",
    );
  });

  it("rebuilds the golden challenge signing input and accepts the golden answer", () => {
    const status = new TextEncoder().encode(STATUS);
    expect(Buffer.from(challengeSigningInput(NONCE, TIMESTAMP_MS, status)).toString("hex")).toBe(
      "6461726b626c6f6f6d2d6368616c6c656e67652d763100" +
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" +
        "0000018bcfe5687b" +
        "00000117" + // 279 status bytes
        Buffer.from(STATUS).toString("hex"),
    );
    const answer = create(AttestationResponseSchema, {
      nonce: NONCE,
      timestampMs: TIMESTAMP_MS,
      status,
      signature: CHALLENGE_SIGNATURE,
    });
    const check = checkChallengeResponse(
      { nonce: NONCE, timestampMs: TIMESTAMP_MS },
      answer,
      PUBLIC_KEY,
      MODELS,
    );
    expect(check.findings).toEqual([]);
    expect(check.status?.binary_sha256).toBe("ab".repeat(32));
  });

  it("refuses the golden answer under another nonce or timestamp, or with its status changed", () => {
    const status = new TextEncoder().encode(STATUS);
    const answer = (over: Partial<{ timestampMs: bigint; status: Uint8Array }> = {}) =>
      create(AttestationResponseSchema, {
        nonce: NONCE,
        timestampMs: over.timestampMs ?? TIMESTAMP_MS,
        status: over.status ?? status,
        signature: CHALLENGE_SIGNATURE,
      });
    const otherNonce = NONCE.map((b) => b ^ 0xff);
    expect(
      checkChallengeResponse({ nonce: otherNonce, timestampMs: TIMESTAMP_MS }, answer(), PUBLIC_KEY, MODELS)
        .findings[0]?.code,
    ).toBe("bad_signature");
    expect(
      checkChallengeResponse(
        { nonce: NONCE, timestampMs: TIMESTAMP_MS + 1n },
        answer({ timestampMs: TIMESTAMP_MS + 1n }),
        PUBLIC_KEY,
        MODELS,
      ).findings[0]?.code,
    ).toBe("bad_signature");
    expect(
      checkChallengeResponse(
        { nonce: NONCE, timestampMs: TIMESTAMP_MS },
        answer({ timestampMs: 5n }),
        PUBLIC_KEY,
        MODELS,
      ).findings[0]?.code,
    ).toBe("challenge_failed");
    const sipOff = new TextEncoder().encode(STATUS.replace('"sip":"enabled"', '"sip":"disabled"'));
    expect(
      checkChallengeResponse(
        { nonce: NONCE, timestampMs: TIMESTAMP_MS },
        answer({ status: sipOff }),
        PUBLIC_KEY,
        MODELS,
      ).findings[0]?.code,
    ).toBe("bad_signature");
  });
});
