import { TpmFormatError } from "./errors.js";

/**
 * Just enough DER to read what Node's X509Certificate leaves out or renders as text: a certificate's
 * validity as dates and the TPM attributes in its subjectAltName. Node (OpenSSL) has parsed and
 * verified the certificate before this runs; this only walks it, bounds-checked.
 */
export interface Der {
  tag: number;
  contents: Uint8Array;
}

export const DER_TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  OCTET_STRING: 0x04,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** The TLV at `offset` and where the next one starts. */
export function readDer(bytes: Uint8Array, offset = 0): { node: Der; next: number } {
  const tag = bytes[offset];
  let length = bytes[offset + 1];
  if (tag === undefined || length === undefined) throw new TpmFormatError("DER: truncated header");
  if ((tag & 0x1f) === 0x1f) throw new TpmFormatError("DER: multi-byte tags are not used here");
  let start = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new TpmFormatError("DER: indefinite or oversized length");
    length = 0;
    for (let i = 0; i < count; i++) {
      const byte = bytes[start + i];
      if (byte === undefined) throw new TpmFormatError("DER: truncated length");
      length = length * 256 + byte;
    }
    start += count;
  }
  const end = start + length;
  if (end > bytes.length) throw new TpmFormatError("DER: contents run past the end");
  return { node: { tag, contents: bytes.subarray(start, end) }, next: end };
}

/** The TLVs inside a constructed value (SEQUENCE, SET, or a context-specific wrapper). */
export function derChildren(node: Der): Der[] {
  const children: Der[] = [];
  for (let offset = 0; offset < node.contents.length; ) {
    const { node: child, next } = readDer(node.contents, offset);
    children.push(child);
    offset = next;
  }
  return children;
}

export function expectTag(node: Der | undefined, tag: number, what: string): Der {
  if (!node || node.tag !== tag) throw new TpmFormatError(`DER: expected ${what}`);
  return node;
}

/** UTCTime (YYMMDDHHMMSSZ; 50-99 are 19xx, RFC 5280) or GeneralizedTime (YYYYMMDDHHMMSS[.f]Z). */
export function derTime(node: Der): Date {
  const text = Buffer.from(node.contents).toString("latin1");
  const match =
    node.tag === DER_TAG.UTC_TIME
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text)
      : node.tag === DER_TAG.GENERALIZED_TIME
        ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?Z$/.exec(text)
        : null;
  if (!match) throw new TpmFormatError(`DER: not a certificate time: ${JSON.stringify(text)}`);
  const [year, month, day, hour, minute, second] = match.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const fullYear = node.tag === DER_TAG.UTC_TIME ? (year < 50 ? 2000 + year : 1900 + year) : year;
  const date = new Date(Date.UTC(fullYear, month - 1, day, hour, minute, second));
  // Date.UTC maps years 0-99 to 1900-1999; setUTCFullYear puts them back.
  date.setUTCFullYear(fullYear);
  return date;
}

/** A directory string (UTF8String, PrintableString or IA5String) as text. */
export function derString(node: Der): string {
  if (node.tag === DER_TAG.UTF8_STRING) return Buffer.from(node.contents).toString("utf8");
  if (node.tag === DER_TAG.PRINTABLE_STRING || node.tag === DER_TAG.IA5_STRING) {
    return Buffer.from(node.contents).toString("latin1");
  }
  throw new TpmFormatError(`DER: tag 0x${node.tag.toString(16)} is not a string`);
}
