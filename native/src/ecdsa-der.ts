/**
 * An ECDSA signature's (r, s), as a TPM returns them, in the DER form (SEQUENCE of two INTEGERs)
 * that every AttestationSigner returns and node:crypto verifies by default.
 */
export function ecdsaDer(r: Uint8Array, s: Uint8Array): Uint8Array {
  const int = (v: Uint8Array): Buffer => {
    let i = 0;
    while (i < v.length - 1 && v[i] === 0) i++;
    const trimmed = Buffer.from(v.subarray(i));
    // A leading 1 bit would read as negative: INTEGER needs a 0x00 before it.
    const body = (trimmed[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed;
    return Buffer.concat([Buffer.from([0x02, body.length]), body]);
  };
  const content = Buffer.concat([int(r), int(s)]);
  // P-256 signatures are at most 72 bytes: the short length form always fits.
  return new Uint8Array(Buffer.concat([Buffer.from([0x30, content.length]), content]));
}
