import sodium from "sodium-native";

/**
 * NaCl box (X25519-XSalsa20-Poly1305, libsodium through sodium-native) for the request path: the
 * coordinator seals each request to the provider's registered key with a fresh ephemeral key pair,
 * the provider seals every response chunk back to that ephemeral key.
 *
 * Both sides of a request share one precomputed key (`BoxKey.between`, libsodium's
 * crypto_box_beforenm: HSalsa20 of the X25519 shared secret), so a request costs one X25519 operation
 * per side and each chunk only an XSalsa20-Poly1305 pass. What goes on the wire is byte for byte what
 * crypto_box_easy produces for the same nonce (tested against it). Every box gets a fresh random
 * 24-byte nonce.
 *
 * Secret keys and precomputed keys live in sodium secure memory (mlocked where the OS allows, guard
 * pages around the slab) and are zeroed when released. Plaintext that JavaScript turns into strings
 * (JSON, chunk text) cannot be wiped from the heap; the byte buffers around it are, with wipe().
 */

export const BOX_PUBLIC_KEY_BYTES = 32;
export const BOX_SECRET_KEY_BYTES = 32;
export const BOX_NONCE_BYTES = 24;
/** The Poly1305 authenticator each box adds to its message. */
export const BOX_MAC_BYTES = 16;

export type SealedBoxErrorCode = "bad_public_key" | "bad_secret_key" | "malformed_box" | "box_open_failed";

/** A box or key that cannot be used; `code` says why. */
export class SealedBoxError extends Error {
  override readonly name: string = "SealedBoxError";

  constructor(
    readonly code: SealedBoxErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The box did not authenticate: sealed to another key, by another sender, or tampered with. */
export class BoxOpenError extends SealedBoxError {
  override readonly name = "BoxOpenError";

  constructor(message = "the box did not authenticate (wrong key or tampered ciphertext)") {
    super("box_open_failed", message);
  }
}

/** The parts of a box as the wire carries them (the SealedBox message, without the sender key). */
export interface Box {
  nonce: Uint8Array;
  ciphertext: Uint8Array;
}

/** Zeroes a buffer (sodium_memzero: not optimized away). */
export function wipe(buffer: Uint8Array | undefined): void {
  if (buffer && buffer.byteLength > 0) sodium.sodium_memzero(asBuffer(buffer));
}

/** Fresh random bytes from libsodium's CSPRNG. */
export function randomBytes(length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  sodium.randombytes_buf(out);
  return out;
}

/**
 * 32-byte cells in sodium secure memory, handed out and zeroed on release. One slab serves many
 * requests: sodium_malloc maps pages with guard pages around them and is too costly per request.
 */
class SecureCells {
  private static readonly CELL = 32;
  private static readonly PER_SLAB = 256;
  private readonly free: Buffer[] = [];

  take(): Buffer {
    if (this.free.length === 0) this.grow();
    return this.free.pop() as Buffer;
  }

  give(cell: Buffer): void {
    sodium.sodium_memzero(cell);
    this.free.push(cell);
  }

  private grow(): void {
    const slab = sodium.sodium_malloc(SecureCells.CELL * SecureCells.PER_SLAB);
    sodium.sodium_memzero(slab);
    for (let i = 0; i < SecureCells.PER_SLAB; i++) {
      this.free.push(slab.subarray(i * SecureCells.CELL, (i + 1) * SecureCells.CELL));
    }
  }
}

const cells = new SecureCells();

/** An X25519 key pair whose secret half lives in secure memory until wipe(). */
export class BoxKeyPair {
  readonly publicKey: Uint8Array;
  private secret: Buffer | undefined;

  private constructor(publicKey: Uint8Array, secret: Buffer) {
    this.publicKey = publicKey;
    this.secret = secret;
  }

  /** A fresh random key pair (crypto_box_keypair). */
  static generate(): BoxKeyPair {
    const publicKey = Buffer.alloc(BOX_PUBLIC_KEY_BYTES);
    const secret = cells.take();
    sodium.crypto_box_keypair(publicKey, secret);
    return BoxKeyPair.adopt(publicKey, secret);
  }

  /**
   * The key pair of a stored 32-byte X25519 secret (e.g. the raw `d` of a PKCS#8 X25519 key). The
   * secret is copied into secure memory; the caller should wipe its own copy.
   */
  static fromSecretKey(secretKey: Uint8Array): BoxKeyPair {
    if (secretKey.byteLength !== BOX_SECRET_KEY_BYTES) {
      throw new SealedBoxError(
        "bad_secret_key",
        `an X25519 secret key has ${BOX_SECRET_KEY_BYTES} bytes, not ${secretKey.byteLength}`,
      );
    }
    const secret = cells.take();
    secret.set(secretKey);
    const publicKey = Buffer.alloc(BOX_PUBLIC_KEY_BYTES);
    sodium.crypto_scalarmult_base(publicKey, secret);
    return BoxKeyPair.adopt(publicKey, secret);
  }

  private static adopt(publicKey: Uint8Array, secret: Buffer): BoxKeyPair {
    const pair = new BoxKeyPair(new Uint8Array(publicKey), secret);
    registerCell(pair, secret);
    return pair;
  }

  get wiped(): boolean {
    return this.secret === undefined;
  }

  /** The secret key (secure memory); throws after wipe(). Do not keep or copy it. */
  get secretKey(): Buffer {
    if (!this.secret) throw new SealedBoxError("bad_secret_key", "the key pair was wiped");
    return this.secret;
  }

  /** The precomputed key for boxes between this key pair and `theirPublicKey`. */
  keyFor(theirPublicKey: Uint8Array): BoxKey {
    return BoxKey.between(theirPublicKey, this.secretKey);
  }

  /** Zeroes the secret key and gives its memory back. Idempotent. */
  wipe(): void {
    const secret = this.secret;
    if (!secret) return;
    this.secret = undefined;
    releaseCell(this, secret);
  }
}

/**
 * The precomputed key of one sender/recipient pair (crypto_box_beforenm). Boxes sealed with it are
 * NaCl boxes: either side opens them with its own secret key and the other's public key.
 */
export class BoxKey {
  private key: Buffer | undefined;

  private constructor(key: Buffer) {
    this.key = key;
  }

  /** crypto_box_beforenm(theirPublicKey, mySecretKey). Throws SealedBoxError for a bad public key. */
  static between(theirPublicKey: Uint8Array, mySecretKey: Uint8Array): BoxKey {
    checkPublicKey(theirPublicKey);
    if (mySecretKey.byteLength !== BOX_SECRET_KEY_BYTES) {
      throw new SealedBoxError("bad_secret_key", `an X25519 secret key has ${BOX_SECRET_KEY_BYTES} bytes`);
    }
    const shared = cells.take();
    try {
      sodium.crypto_scalarmult(shared, asBuffer(mySecretKey), asBuffer(theirPublicKey));
    } catch {
      cells.give(shared);
      // libsodium refuses low-order points (an all-zero shared secret).
      throw new SealedBoxError("bad_public_key", "the X25519 public key is a low-order point");
    }
    const key = cells.take();
    hsalsa20(key, ZERO_16, shared);
    cells.give(shared); // zeroes the raw shared secret
    const boxKey = new BoxKey(key);
    registerCell(boxKey, key);
    return boxKey;
  }

  get wiped(): boolean {
    return this.key === undefined;
  }

  /** Seals `plaintext` with a fresh random nonce (crypto_box_easy_afternm). */
  seal(plaintext: Uint8Array): Box {
    const nonce = randomBytes(BOX_NONCE_BYTES);
    const ciphertext = Buffer.allocUnsafe(plaintext.byteLength + BOX_MAC_BYTES);
    sodium.crypto_secretbox_easy(ciphertext, asBuffer(plaintext), nonce, this.live());
    return { nonce, ciphertext };
  }

  /**
   * Opens a box (crypto_box_open_easy_afternm) into a fresh buffer the caller should wipe() once it
   * has read it. Throws MalformedBox (SealedBoxError "malformed_box") for bad lengths and BoxOpenError
   * when it does not authenticate.
   */
  open(box: Box): Buffer {
    checkBox(box);
    const plaintext = Buffer.allocUnsafe(box.ciphertext.byteLength - BOX_MAC_BYTES);
    if (
      !sodium.crypto_secretbox_open_easy(
        plaintext,
        asBuffer(box.ciphertext),
        asBuffer(box.nonce),
        this.live(),
      )
    ) {
      sodium.sodium_memzero(plaintext);
      throw new BoxOpenError();
    }
    return plaintext;
  }

  /** Zeroes the key and gives its memory back. Idempotent. */
  wipe(): void {
    const key = this.key;
    if (!key) return;
    this.key = undefined;
    releaseCell(this, key);
  }

  private live(): Buffer {
    if (!this.key) throw new SealedBoxError("bad_secret_key", "the box key was wiped");
    return this.key;
  }
}

/** One-shot crypto_box_easy: seals `message` from `senderSecretKey` to `recipientPublicKey`. */
export function sealBox(
  message: Uint8Array,
  recipientPublicKey: Uint8Array,
  senderSecretKey: Uint8Array,
): Box {
  checkPublicKey(recipientPublicKey);
  const nonce = randomBytes(BOX_NONCE_BYTES);
  const ciphertext = Buffer.allocUnsafe(message.byteLength + BOX_MAC_BYTES);
  sodium.crypto_box_easy(
    ciphertext,
    asBuffer(message),
    nonce,
    asBuffer(recipientPublicKey),
    asBuffer(senderSecretKey),
  );
  return { nonce, ciphertext };
}

/** One-shot crypto_box_open_easy; the caller wipes the returned plaintext after use. */
export function openBox(box: Box, senderPublicKey: Uint8Array, recipientSecretKey: Uint8Array): Buffer {
  checkPublicKey(senderPublicKey);
  checkBox(box);
  const plaintext = Buffer.allocUnsafe(box.ciphertext.byteLength - BOX_MAC_BYTES);
  const ok = sodium.crypto_box_open_easy(
    plaintext,
    asBuffer(box.ciphertext),
    asBuffer(box.nonce),
    asBuffer(senderPublicKey),
    asBuffer(recipientSecretKey),
  );
  if (!ok) {
    sodium.sodium_memzero(plaintext);
    throw new BoxOpenError();
  }
  return plaintext;
}

/** Whether `key` has the shape of an X25519 public key (32 bytes). */
export function isBoxPublicKey(key: Uint8Array | undefined): key is Uint8Array {
  return key !== undefined && key.byteLength === BOX_PUBLIC_KEY_BYTES;
}

function checkPublicKey(key: Uint8Array): void {
  if (key.byteLength !== BOX_PUBLIC_KEY_BYTES) {
    throw new SealedBoxError(
      "bad_public_key",
      `an X25519 public key has ${BOX_PUBLIC_KEY_BYTES} bytes, not ${key.byteLength}`,
    );
  }
}

function checkBox(box: Box): void {
  if (box.nonce.byteLength !== BOX_NONCE_BYTES) {
    throw new SealedBoxError(
      "malformed_box",
      `the nonce has ${box.nonce.byteLength} bytes, not ${BOX_NONCE_BYTES}`,
    );
  }
  if (box.ciphertext.byteLength < BOX_MAC_BYTES) {
    throw new SealedBoxError(
      "malformed_box",
      `the ciphertext is shorter than its ${BOX_MAC_BYTES}-byte authenticator`,
    );
  }
}

// Owners of secure cells: a key pair or box key that is collected without wipe() still returns
// (and zeroes) its cell.
const owners = new FinalizationRegistry<Buffer>((cell) => cells.give(cell));

function registerCell(owner: object, cell: Buffer): void {
  owners.register(owner, cell, owner);
}

function releaseCell(owner: object, cell: Buffer): void {
  owners.unregister(owner);
  cells.give(cell);
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const ZERO_16 = new Uint8Array(16);
/** "expand 32-byte k" as four little-endian words. */
const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574] as const;

/**
 * HSalsa20 (the key derivation of XSalsa20 and of crypto_box_beforenm): out = HSalsa20(key, input).
 * sodium-native does not bind crypto_box_beforenm or crypto_core_hsalsa20; this is the reference
 * algorithm, checked against crypto_box_easy and the NaCl test vectors.
 */
export function hsalsa20(out: Uint8Array, input: Uint8Array, key: Uint8Array): void {
  const k = (i: number) =>
    (key[i] as number) |
    ((key[i + 1] as number) << 8) |
    ((key[i + 2] as number) << 16) |
    ((key[i + 3] as number) << 24);
  const n = (i: number) =>
    (input[i] as number) |
    ((input[i + 1] as number) << 8) |
    ((input[i + 2] as number) << 16) |
    ((input[i + 3] as number) << 24);
  let x0 = SIGMA[0];
  let x1 = k(0);
  let x2 = k(4);
  let x3 = k(8);
  let x4 = k(12);
  let x5 = SIGMA[1];
  let x6 = n(0);
  let x7 = n(4);
  let x8 = n(8);
  let x9 = n(12);
  let x10 = SIGMA[2];
  let x11 = k(16);
  let x12 = k(20);
  let x13 = k(24);
  let x14 = k(28);
  let x15 = SIGMA[3];
  let u: number;
  for (let i = 0; i < 20; i += 2) {
    // Column round.
    u = (x0 + x12) | 0;
    x4 ^= (u << 7) | (u >>> 25);
    u = (x4 + x0) | 0;
    x8 ^= (u << 9) | (u >>> 23);
    u = (x8 + x4) | 0;
    x12 ^= (u << 13) | (u >>> 19);
    u = (x12 + x8) | 0;
    x0 ^= (u << 18) | (u >>> 14);

    u = (x5 + x1) | 0;
    x9 ^= (u << 7) | (u >>> 25);
    u = (x9 + x5) | 0;
    x13 ^= (u << 9) | (u >>> 23);
    u = (x13 + x9) | 0;
    x1 ^= (u << 13) | (u >>> 19);
    u = (x1 + x13) | 0;
    x5 ^= (u << 18) | (u >>> 14);

    u = (x10 + x6) | 0;
    x14 ^= (u << 7) | (u >>> 25);
    u = (x14 + x10) | 0;
    x2 ^= (u << 9) | (u >>> 23);
    u = (x2 + x14) | 0;
    x6 ^= (u << 13) | (u >>> 19);
    u = (x6 + x2) | 0;
    x10 ^= (u << 18) | (u >>> 14);

    u = (x15 + x11) | 0;
    x3 ^= (u << 7) | (u >>> 25);
    u = (x3 + x15) | 0;
    x7 ^= (u << 9) | (u >>> 23);
    u = (x7 + x3) | 0;
    x11 ^= (u << 13) | (u >>> 19);
    u = (x11 + x7) | 0;
    x15 ^= (u << 18) | (u >>> 14);

    // Row round.
    u = (x0 + x3) | 0;
    x1 ^= (u << 7) | (u >>> 25);
    u = (x1 + x0) | 0;
    x2 ^= (u << 9) | (u >>> 23);
    u = (x2 + x1) | 0;
    x3 ^= (u << 13) | (u >>> 19);
    u = (x3 + x2) | 0;
    x0 ^= (u << 18) | (u >>> 14);

    u = (x5 + x4) | 0;
    x6 ^= (u << 7) | (u >>> 25);
    u = (x6 + x5) | 0;
    x7 ^= (u << 9) | (u >>> 23);
    u = (x7 + x6) | 0;
    x4 ^= (u << 13) | (u >>> 19);
    u = (x4 + x7) | 0;
    x5 ^= (u << 18) | (u >>> 14);

    u = (x10 + x9) | 0;
    x11 ^= (u << 7) | (u >>> 25);
    u = (x11 + x10) | 0;
    x8 ^= (u << 9) | (u >>> 23);
    u = (x8 + x11) | 0;
    x9 ^= (u << 13) | (u >>> 19);
    u = (x9 + x8) | 0;
    x10 ^= (u << 18) | (u >>> 14);

    u = (x15 + x14) | 0;
    x12 ^= (u << 7) | (u >>> 25);
    u = (x12 + x15) | 0;
    x13 ^= (u << 9) | (u >>> 23);
    u = (x13 + x12) | 0;
    x14 ^= (u << 13) | (u >>> 19);
    u = (x14 + x13) | 0;
    x15 ^= (u << 18) | (u >>> 14);
  }
  const words = [x0, x5, x10, x15, x6, x7, x8, x9];
  for (let i = 0; i < 8; i++) {
    const w = words[i] as number;
    out[4 * i] = w & 0xff;
    out[4 * i + 1] = (w >>> 8) & 0xff;
    out[4 * i + 2] = (w >>> 16) & 0xff;
    out[4 * i + 3] = (w >>> 24) & 0xff;
  }
  words.fill(0);
}
