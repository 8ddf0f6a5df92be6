/** Bytes that are not the TPM structure (or the DER) they claim to be: truncated, trailing, or out of range. */
export class TpmFormatError extends Error {
  override readonly name = "TpmFormatError";
}
