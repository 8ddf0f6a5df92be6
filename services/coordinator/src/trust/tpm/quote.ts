import { createHash } from "node:crypto";
import { verifyP256 } from "@darkbloom/protocol";
import { TPM_ALG, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE } from "./constants.js";
import { TpmFormatError } from "./errors.js";
import { sameBytes, TpmReader } from "./marshal.js";

/** A TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE (TPM 2.0 Part 2 §10.12.12, §10.12.8). */
export interface TpmQuote {
  /** The signing key's qualified name (TPM2B_NAME contents). */
  qualifiedSigner: Uint8Array;
  /** The caller's qualifyingData: the coordinator's challenge digest. */
  extraData: Uint8Array;
  /** Milliseconds the TPM has been powered since its last TPM2_Clear; advances while it runs. */
  clock: bigint;
  /** TPM Resets (reboots) since the last TPM2_Clear. */
  resetCount: number;
  /** TPM Restarts (resume from hibernation) since the last TPM Reset. */
  restartCount: number;
  /** False when the clock may have been rolled back (an unorderly shutdown). */
  safe: boolean;
  firmwareVersion: bigint;
  pcrSelection: { hash: number; pcrs: number[] }[];
  /** The digest (with the signing scheme's hash) of the selected PCRs' values, in selection order. */
  pcrDigest: Uint8Array;
}

/** TPM2B_NAME holds a hash id and a digest of at most 64 bytes; TPM2B_DATA at most a digest and its id. */
const MAX_NAME = 2 + 64;
const MAX_DATA = 2 + 64;
const MAX_DIGEST = 64;
/** The TPM's selections: one per bank, each a bitmap of at most 256 PCRs (real TPMs: 3 bytes, 24 PCRs). */
const MAX_BANKS = 16;
const MAX_SELECT_BYTES = 32;
const SHA256_BYTES = 32;
const MAX_PCR = 23;

/** Parses a quote's TPMS_ATTEST; throws TpmFormatError when it is malformed, of another type, or followed by bytes. */
export function parseQuote(attest: Uint8Array): TpmQuote {
  const reader = new TpmReader(attest, "TPMS_ATTEST");
  const magic = reader.u32("magic");
  if (magic !== TPM_GENERATED_VALUE) throw new TpmFormatError(`TPMS_ATTEST: magic 0x${magic.toString(16)}`);
  const type = reader.u16("type");
  if (type !== TPM_ST_ATTEST_QUOTE)
    throw new TpmFormatError(`TPMS_ATTEST: type 0x${type.toString(16)}, not a quote`);
  const qualifiedSigner = reader.tpm2b("qualifiedSigner", MAX_NAME);
  const extraData = reader.tpm2b("extraData", MAX_DATA);
  const clock = reader.u64("clockInfo.clock");
  const resetCount = reader.u32("clockInfo.resetCount");
  const restartCount = reader.u32("clockInfo.restartCount");
  const safe = reader.u8("clockInfo.safe");
  if (safe > 1) throw new TpmFormatError(`TPMS_ATTEST: clockInfo.safe is ${safe}`);
  const firmwareVersion = reader.u64("firmwareVersion");
  const banks = reader.u32("pcrSelect.count");
  if (banks > MAX_BANKS) throw new TpmFormatError(`TPMS_ATTEST: ${banks} PCR banks`);
  const pcrSelection: TpmQuote["pcrSelection"] = [];
  for (let bank = 0; bank < banks; bank++) {
    const hash = reader.u16("pcrSelect.hash");
    const size = reader.u8("pcrSelect.sizeofSelect");
    if (size > MAX_SELECT_BYTES) throw new TpmFormatError(`TPMS_ATTEST: a PCR bitmap of ${size} bytes`);
    const bitmap = reader.bytesOf(size, "pcrSelect.pcrSelect");
    const pcrs: number[] = [];
    bitmap.forEach((byte, i) => {
      for (let bit = 0; bit < 8; bit++) if (byte & (1 << bit)) pcrs.push(i * 8 + bit);
    });
    pcrSelection.push({ hash, pcrs });
  }
  const pcrDigest = reader.tpm2b("pcrDigest", MAX_DIGEST);
  reader.done();
  return {
    qualifiedSigner,
    extraData,
    clock,
    resetCount,
    restartCount,
    safe: safe === 1,
    firmwareVersion,
    pcrSelection,
    pcrDigest,
  };
}

export type QuoteVerdict =
  | {
      ok: true;
      quote: TpmQuote;
      /** Hex SHA-256 over the PCR values concatenated in PCR order (equal to the quote's pcrDigest). */
      pcrComposite: string;
    }
  | { ok: false; code: "tpm_wrong_key" | "tpm_quote_replay" | "tpm_bad_quote"; message: string };

export interface QuoteInput {
  /** The TPMS_ATTEST bytes the TPM signed. */
  attest: Uint8Array;
  /** DER ECDSA over SHA-256(attest). */
  signature: Uint8Array;
  /** The AK's SEC1 uncompressed P-256 point (65 bytes). */
  akPublicKey: Uint8Array;
  /** The qualifyingData the coordinator asked for. */
  expectedExtraData: Uint8Array;
  /** The PCRs of the SHA-256 bank the quote must cover (0-23, no repeats). */
  expectedPcrs: readonly number[];
  /** The provider's claimed value of each of expectedPcrs, in the same order. */
  pcrValues: readonly Uint8Array[];
  /** The clock of this AK's last accepted quote. */
  previous?: { clock: bigint; resetCount: number; restartCount: number };
}

function fail(code: "tpm_wrong_key" | "tpm_quote_replay" | "tpm_bad_quote", message: string): QuoteVerdict {
  return { ok: false, code, message };
}

/** Whether the TPM's clock went back (or stood still) since the previous quote, as a reason. */
function clockProblem(quote: TpmQuote, previous: NonNullable<QuoteInput["previous"]>): string | undefined {
  const was = `resetCount ${previous.resetCount}, restartCount ${previous.restartCount}, clock ${previous.clock}`;
  const is = `resetCount ${quote.resetCount}, restartCount ${quote.restartCount}, clock ${quote.clock}`;
  if (quote.resetCount < previous.resetCount) return `the TPM's resetCount went back (${is}; was ${was})`;
  // A TPM Reset (reboot) sets restartCount to 0 and may roll the clock back to its last saved value.
  if (quote.resetCount > previous.resetCount) return undefined;
  if (quote.restartCount < previous.restartCount)
    return `the TPM's restartCount went back (${is}; was ${was})`;
  if (quote.restartCount === previous.restartCount && quote.clock <= previous.clock) {
    return `the TPM's clock did not advance since the last quote (${is}; was ${was})`;
  }
  return undefined;
}

/**
 * Checks a quote by the AK over the SHA-256 PCRs `expectedPcrs`:
 * tpm_wrong_key: the signature does not verify under the AK;
 * tpm_quote_replay: extraData is not the expected one, or the TPM's clock did not advance since `previous`
 * (same resetCount and restartCount), or resetCount/restartCount went back;
 * tpm_bad_quote: malformed, not a quote, a selection other than exactly expectedPcrs of the SHA-256
 * bank, PCR values of the wrong number or size, or values whose digest is not the quote's pcrDigest.
 * Throws RangeError when expectedPcrs itself is invalid (the caller's configuration, not the provider's).
 */
export function verifyQuote(input: QuoteInput): QuoteVerdict {
  const expected = [...input.expectedPcrs].sort((a, b) => a - b);
  if (
    expected.some((pcr, i) => !Number.isInteger(pcr) || pcr < 0 || pcr > MAX_PCR || pcr === expected[i - 1])
  ) {
    throw new RangeError(
      `expectedPcrs must be distinct PCR indexes 0-${MAX_PCR}: ${input.expectedPcrs.join(",")}`,
    );
  }
  let quote: TpmQuote;
  try {
    quote = parseQuote(input.attest);
  } catch (error) {
    if (error instanceof TpmFormatError) return fail("tpm_bad_quote", error.message);
    throw error;
  }
  // The AK is restricted: it signs data starting with TPM_GENERATED_VALUE only when the TPM made it, so
  // a verified signature means this TPM produced these bytes.
  if (!verifyP256(input.akPublicKey, input.attest, input.signature)) {
    return fail("tpm_wrong_key", "the quote's signature does not verify under the attestation key");
  }
  if (!sameBytes(quote.extraData, input.expectedExtraData)) {
    return fail("tpm_quote_replay", "the quote's extraData is not the challenge's");
  }
  const clock = input.previous && clockProblem(quote, input.previous);
  if (clock) return fail("tpm_quote_replay", clock);

  const [bank, ...others] = quote.pcrSelection;
  if (!bank || others.length > 0 || bank.hash !== TPM_ALG.SHA256) {
    const banks = quote.pcrSelection.map((selection) => `0x${selection.hash.toString(16)}`).join(", ");
    return fail("tpm_bad_quote", `the quote selects the banks [${banks}], not exactly SHA-256`);
  }
  if (bank.pcrs.length !== expected.length || bank.pcrs.some((pcr, i) => pcr !== expected[i])) {
    return fail(
      "tpm_bad_quote",
      `the quote covers PCRs [${bank.pcrs.join(",")}], not [${expected.join(",")}]`,
    );
  }
  if (input.pcrValues.length !== input.expectedPcrs.length) {
    return fail(
      "tpm_bad_quote",
      `${input.pcrValues.length} PCR values for ${input.expectedPcrs.length} PCRs`,
    );
  }
  if (input.pcrValues.some((value) => value.length !== SHA256_BYTES)) {
    return fail("tpm_bad_quote", "a PCR value is not a SHA-256 digest");
  }
  // The TPM hashes the values in selection (ascending) order, whatever order the caller listed them in.
  const byPcr = new Map(input.expectedPcrs.map((pcr, i) => [pcr, input.pcrValues[i]!]));
  const composite = createHash("sha256");
  for (const pcr of expected) composite.update(byPcr.get(pcr)!);
  const digest = composite.digest();
  if (!sameBytes(digest, quote.pcrDigest)) {
    return fail("tpm_bad_quote", "the PCR values do not hash to the quote's pcrDigest");
  }
  return { ok: true, quote, pcrComposite: digest.toString("hex") };
}
