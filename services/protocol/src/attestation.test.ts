import { generateKeyPairSync, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  canonicalJson,
  challengeSigningInput,
  encodeAttestation,
  encodeChallengeStatus,
  parseCanonicalJson,
} from "./attestation.js";
import { p256PublicKeyFromRaw, rawP256PublicKey, verifyP256 } from "./p256.js";
import { compareSemver, isSemver } from "./semver.js";

const text = (s: string) => new TextEncoder().encode(s);

describe("canonical JSON", () => {
  it("sorts keys at every level, writes no whitespace and accepts integers only", () => {
    expect(canonicalJson({ b: 1, a: [true, null, { d: "x", c: "é\n" }] })).toBe(
      '{"a":[true,null,{"c":"é\\n","d":"x"}],"b":1}',
    );
    expect(() => canonicalJson({ a: 1.5 })).toThrow(/safe integers/);
    expect(() => canonicalJson({ a: undefined })).toThrow(/undefined/);
    expect(() => canonicalJson({ a: new Date(0) })).toThrow(/cannot encode/);
  });

  it("parses only canonical bytes: reordered keys, whitespace and duplicate keys are refused", () => {
    expect(parseCanonicalJson(text('{"a":1,"b":[2]}'))).toEqual({ a: 1, b: [2] });
    expect(() => parseCanonicalJson(text('{"b":1,"a":2}'))).toThrow(/canonical/);
    expect(() => parseCanonicalJson(text('{"a": 1}'))).toThrow(/canonical/);
    expect(() => parseCanonicalJson(text('{"a":1,"a":2}'))).toThrow(/canonical/);
    expect(() => parseCanonicalJson(text('{"a":1.0}'))).toThrow(/canonical/);
    expect(() => parseCanonicalJson(new Uint8Array([0x22, 0xff, 0x22]))).toThrow();
  });
});

describe("challenge signing input", () => {
  it("is domain ‖ 0x00 ‖ nonce ‖ u64be timestamp ‖ u32be length ‖ status (golden bytes)", () => {
    const nonce = Uint8Array.from({ length: 32 }, (_, i) => i);
    const status = text('{"x":1}');
    const bytes = challengeSigningInput(nonce, 1_700_000_000_123n, status);
    expect(Buffer.from(bytes).toString("hex")).toBe(
      // "darkbloom-challenge-v1" 0x00
      "6461726b626c6f6f6d2d6368616c6c656e67652d763100" +
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" +
        "0000018bcfe5687b" + // 1700000000123
        "00000007" + // 7 status bytes
        "7b2278223a317d",
    );
    expect(() => challengeSigningInput(nonce.subarray(1), 0n, status)).toThrow(/32 bytes/);
    expect(() => challengeSigningInput(nonce, -1n, status)).toThrow(/unsigned/);
  });

  it("encodes status and attestation documents canonically, models sorted by id", () => {
    const status = encodeChallengeStatus({
      binary_sha256: "ab".repeat(32),
      models: [
        { id: "b", weight_sha256: "02".repeat(32) },
        { id: "a", weight_sha256: "01".repeat(32) },
      ],
      secure_boot: "unknown",
      sip: "not_applicable",
    });
    const parsed = parseCanonicalJson(status) as { models: Array<{ id: string }>; format: string };
    expect(parsed.models.map((m) => m.id)).toEqual(["a", "b"]);
    expect(parsed.format).toBe("darkbloom.challenge-status.v1");
    const blob = encodeAttestation({
      binary_sha256: "ab".repeat(32),
      chip: "c",
      daemon_version: "1.0.0",
      encryption_public_key: Buffer.alloc(32).toString("base64"),
      key_persistent: false,
      machine_id: "m",
      machine_model: "mm",
      os: "linux",
      os_version: "6",
      secure_boot: "unknown",
      serial_sha256: "",
      signer: "software",
      sip: "not_applicable",
      timestamp_ms: 1,
    });
    expect((parseCanonicalJson(blob) as { format: string }).format).toBe("darkbloom.attestation.v1");
  });
});

describe("P-256 keys", () => {
  it("round-trips SEC1 points and verifies DER signatures; malformed input is false, not a throw", () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const raw = rawP256PublicKey(privateKey);
    expect(raw).toHaveLength(65);
    expect(raw[0]).toBe(4);
    expect(rawP256PublicKey(p256PublicKeyFromRaw(raw))).toEqual(raw);
    const data = text("hello");
    const sig = sign("sha256", data, { key: privateKey, dsaEncoding: "der" });
    expect(verifyP256(raw, data, sig)).toBe(true);
    expect(verifyP256(raw, text("hellp"), sig)).toBe(false);
    expect(verifyP256(raw.subarray(1), data, sig)).toBe(false);
    const offCurve = new Uint8Array(raw);
    offCurve[64] = (offCurve[64] ?? 0) ^ 1;
    expect(verifyP256(offCurve, data, sig)).toBe(false);
    expect(verifyP256(raw, data, new Uint8Array([1, 2, 3]))).toBe(false);
  });
});

describe("semantic versions", () => {
  it("orders by precedence, prereleases below releases, build metadata ignored", () => {
    const ordered = [
      "0.9.9",
      "1.0.0-alpha",
      "1.0.0-alpha.1",
      "1.0.0-alpha.beta",
      "1.0.0-beta.2",
      "1.0.0-beta.11",
      "1.0.0-rc.1",
      "1.0.0",
      "1.0.1",
      "1.10.0",
    ];
    for (let i = 1; i < ordered.length; i++) {
      expect(compareSemver(ordered[i - 1] as string, ordered[i] as string)).toBeLessThan(0);
      expect(compareSemver(ordered[i] as string, ordered[i - 1] as string)).toBeGreaterThan(0);
    }
    expect(compareSemver("1.2.3+build.1", "1.2.3")).toBe(0);
    expect(isSemver("v1.2.3")).toBe(false);
    expect(() => compareSemver("dev", "1.0.0")).toThrow(/not a semantic version/);
  });
});
