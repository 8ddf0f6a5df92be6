import sodium from "sodium-native";
import { describe, expect, it } from "vitest";
import {
  BOX_MAC_BYTES,
  BOX_NONCE_BYTES,
  BoxKey,
  BoxKeyPair,
  BoxOpenError,
  hsalsa20,
  openBox,
  SealedBoxError,
  sealBox,
  wipe,
} from "./sealed-box.js";

const hex = (s: string) => Buffer.from(s, "hex");

// The key pairs of NaCl's tests/box.c (Bernstein, "Cryptography in NaCl").
const ALICE_SK = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
const ALICE_PK = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
const BOB_SK = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
const BOB_PK = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");

describe("sealed box", () => {
  it("derives NaCl's crypto_box_beforenm key (known answer)", () => {
    const shared = Buffer.alloc(32);
    sodium.crypto_scalarmult(shared, ALICE_SK, BOB_PK);
    expect(shared.toString("hex")).toBe("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    const k = new Uint8Array(32);
    hsalsa20(k, new Uint8Array(16), shared);
    expect(Buffer.from(k).toString("hex")).toBe(
      "1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389",
    );
  });

  it("key pairs from a stored secret reproduce the public key; both sides derive one box key", () => {
    expect(Buffer.from(BoxKeyPair.fromSecretKey(BOB_SK).publicKey).equals(BOB_PK)).toBe(true);
    const box = BoxKey.between(BOB_PK, ALICE_SK).seal(Buffer.from("from alice"));
    expect(BoxKey.between(ALICE_PK, BOB_SK).open(box).toString()).toBe("from alice");
    const pair = BoxKeyPair.fromSecretKey(ALICE_SK);
    expect(Buffer.from(pair.publicKey).equals(ALICE_PK)).toBe(true);
    pair.wipe();
    expect(pair.wiped).toBe(true);
    expect(() => pair.secretKey).toThrow(SealedBoxError);
  });

  it("precomputed boxes are crypto_box_easy boxes, both ways", () => {
    for (let i = 0; i < 50; i++) {
      const a = BoxKeyPair.generate();
      const b = BoxKeyPair.generate();
      const message = Buffer.from(`message ${i} ${"x".repeat(i * 37)}`);
      // Sealed with the precomputed key, opened by libsodium's crypto_box_open_easy.
      const box = a.keyFor(b.publicKey).seal(message);
      expect(box.nonce.byteLength).toBe(BOX_NONCE_BYTES);
      expect(box.ciphertext.byteLength).toBe(message.byteLength + BOX_MAC_BYTES);
      expect(openBox(box, a.publicKey, b.secretKey).equals(message)).toBe(true);
      // Sealed by crypto_box_easy, opened with the other side's precomputed key.
      const back = sealBox(message, a.publicKey, b.secretKey);
      expect(b.keyFor(a.publicKey).open(back).equals(message)).toBe(true);
      // Same nonce, same bytes.
      const reference = Buffer.alloc(message.byteLength + BOX_MAC_BYTES);
      sodium.crypto_box_easy(
        reference,
        message,
        Buffer.from(box.nonce),
        Buffer.from(b.publicKey),
        a.secretKey,
      );
      expect(Buffer.from(box.ciphertext).equals(reference)).toBe(true);
      a.wipe();
      b.wipe();
    }
  });

  it("uses a fresh nonce for every box", () => {
    const key = BoxKeyPair.generate().keyFor(BoxKeyPair.generate().publicKey);
    const nonces = new Set<string>();
    for (let i = 0; i < 1000; i++) nonces.add(Buffer.from(key.seal(new Uint8Array(1)).nonce).toString("hex"));
    expect(nonces.size).toBe(1000);
  });

  it("refuses boxes sealed to another key, from another sender, or tampered with", () => {
    const provider = BoxKeyPair.generate();
    const coordinator = BoxKeyPair.generate();
    const stranger = BoxKeyPair.generate();
    const box = coordinator.keyFor(provider.publicKey).seal(Buffer.from("secret prompt"));
    expect(() => stranger.keyFor(coordinator.publicKey).open(box)).toThrow(BoxOpenError);
    expect(() => provider.keyFor(stranger.publicKey).open(box)).toThrow(BoxOpenError);
    const flipped = Buffer.from(box.ciphertext);
    flipped[3] = (flipped[3] as number) ^ 1;
    expect(() => provider.keyFor(coordinator.publicKey).open({ ...box, ciphertext: flipped })).toThrow(
      BoxOpenError,
    );
    const nonce = Buffer.from(box.nonce);
    nonce[0] = (nonce[0] as number) ^ 1;
    expect(() => provider.keyFor(coordinator.publicKey).open({ ...box, nonce })).toThrow(BoxOpenError);
    try {
      provider.keyFor(stranger.publicKey).open(box);
    } catch (e) {
      expect((e as SealedBoxError).code).toBe("box_open_failed");
    }
  });

  it("refuses malformed boxes and keys with typed errors", () => {
    const key = BoxKeyPair.generate().keyFor(BoxKeyPair.generate().publicKey);
    const codeOf = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e instanceof SealedBoxError ? e.code : "other";
      }
      return "none";
    };
    expect(codeOf(() => key.open({ nonce: new Uint8Array(23), ciphertext: new Uint8Array(32) }))).toBe(
      "malformed_box",
    );
    expect(codeOf(() => key.open({ nonce: new Uint8Array(24), ciphertext: new Uint8Array(15) }))).toBe(
      "malformed_box",
    );
    expect(codeOf(() => BoxKey.between(new Uint8Array(31), new Uint8Array(32)))).toBe("bad_public_key");
    // A low-order point gives an all-zero shared secret, which libsodium refuses.
    expect(codeOf(() => BoxKey.between(new Uint8Array(32), BoxKeyPair.generate().secretKey))).toBe(
      "bad_public_key",
    );
    expect(codeOf(() => BoxKeyPair.fromSecretKey(new Uint8Array(31)))).toBe("bad_secret_key");
    key.wipe();
    expect(codeOf(() => key.seal(new Uint8Array(1)))).toBe("bad_secret_key");
  });

  it("wipes buffers", () => {
    const b = Buffer.from("plaintext");
    wipe(b);
    expect(b.every((x) => x === 0)).toBe(true);
    const u = new Uint8Array([1, 2, 3]).subarray(1);
    wipe(u);
    expect([...u]).toEqual([0, 0]);
  });
});
