import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** Every consumer API key starts with this. */
export const API_KEY_PREFIX = "dbk_";
/** How many leading characters of a key are stored and shown to recognise it. */
export const DISPLAY_PREFIX_LENGTH = 12;

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/** 62^43 > 2^256: 43 base62 digits hold 32 random bytes. */
const SECRET_DIGITS = 43;
const API_KEY_PATTERN = new RegExp(`^${API_KEY_PREFIX}[0-9A-Za-z]{${SECRET_DIGITS}}$`);

/** A new API key secret: "dbk_" and 32 random bytes in 43 base62 digits. */
export function generateApiKey(): string {
  return generateSecret(API_KEY_PREFIX);
}

/** A new bearer secret: `prefix` and 32 random bytes in 43 base62 digits. */
export function generateSecret(prefix: string): string {
  return `${prefix}${base62(randomBytes(32), SECRET_DIGITS)}`;
}

/** Whether `value` is `prefix` followed by a secret's 43 base62 digits. */
export function looksLikeSecret(value: string, prefix: string): boolean {
  return (
    value.length === prefix.length + SECRET_DIGITS &&
    value.startsWith(prefix) &&
    /^[0-9A-Za-z]+$/.test(value.slice(prefix.length))
  );
}

/** A random identifier such as "acct_…" or "key_…" (16 random bytes, base62). */
export function generateId(prefix: string): string {
  return `${prefix}${base62(randomBytes(16), 22)}`;
}

/** Whether `secret` has the shape of an API key (checked before touching the database). */
export function looksLikeApiKey(secret: string): boolean {
  return API_KEY_PATTERN.test(secret);
}

/** The SHA-256 of the secret: the only form in which a key is stored. */
export function hashApiKey(secret: string): Buffer {
  return createHash("sha256").update(secret, "utf8").digest();
}

/** The leading characters stored with the hash so people can tell their keys apart. */
export function displayPrefix(secret: string): string {
  return secret.slice(0, DISPLAY_PREFIX_LENGTH);
}

/** Compares two secrets in time that depends on neither their contents nor their lengths. */
export function constantTimeEqual(a: string, b: string): boolean {
  const digestA = createHash("sha256").update(a, "utf8").digest();
  const digestB = createHash("sha256").update(b, "utf8").digest();
  return timingSafeEqual(digestA, digestB);
}

function base62(bytes: Buffer, digits: number): string {
  let value = BigInt(`0x${bytes.toString("hex")}`);
  let out = "";
  for (let i = 0; i < digits; i++) {
    out = BASE62[Number(value % 62n)] + out;
    value /= 62n;
  }
  return out;
}
