import { createHash, randomInt } from "node:crypto";

/**
 * Short codes people type: user codes of the device-code login, invite codes and referral codes.
 * They use alphabets without look-alikes (no 0/O, 1/I/L) or vowels (no accidental words), are read
 * case-insensitively, and ignore dashes and spaces, so "bcdf-ghjk" and "BCDFGHJK" are one code.
 */

/** RFC 8628 section 6.1's user-code alphabet: 20 consonants, 8 of them give 34.5 bits. */
export const USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ";
export const USER_CODE_LENGTH = 8;

/** Digits and consonants without look-alikes, for invite and referral codes. */
export const CODE_ALPHABET = "23456789BCDFGHJKLMNPQRSTVWXZ";
/** Generated invite codes: 16 characters, about 77 bits. */
export const INVITE_CODE_LENGTH = 16;
/** Generated referral codes: 8 characters (public, so they need to be unique, not unguessable). */
export const REFERRAL_CODE_LENGTH = 8;

/** What a code may look like once normalised (custom invite codes included). */
export const NORMALISED_CODE = /^[0-9A-Z]{4,64}$/;
/** Longest code accepted as typed, dashes and spaces included. */
export const MAX_TYPED_CODE_LENGTH = 100;

/** `length` characters drawn uniformly from `alphabet`. */
export function randomCode(alphabet: string, length: number): string {
  let out = "";
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

/** A new device-login user code, normalised (8 characters, no dash). */
export function generateUserCode(): string {
  return randomCode(USER_CODE_ALPHABET, USER_CODE_LENGTH);
}

/** Groups a normalised code in fours for display: "BCDFGHJK" → "BCDF-GHJK". */
export function groupCode(code: string): string {
  return code.match(/.{1,4}/g)?.join("-") ?? code;
}

/**
 * A typed code in its canonical form (upper case, no dashes or spaces), or undefined when it cannot
 * be a code at all.
 */
export function normaliseCode(typed: string): string | undefined {
  if (typed.length > MAX_TYPED_CODE_LENGTH) return undefined;
  const code = typed.replace(/[\s-]/g, "").toUpperCase();
  return NORMALISED_CODE.test(code) ? code : undefined;
}

/** Whether a normalised code is a well-formed device-login user code. */
export function isUserCode(code: string): boolean {
  if (code.length !== USER_CODE_LENGTH) return false;
  for (const c of code) if (!USER_CODE_ALPHABET.includes(c)) return false;
  return true;
}

/** SHA-256 of a secret or code: the only form in which one is stored. */
export function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
