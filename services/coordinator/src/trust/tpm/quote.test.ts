import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type SoftwareTpm, softwareTpmTestable, startSoftwareTpm } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TPM_ALG } from "./constants.js";
import { TpmFormatError } from "./errors.js";
import { parseQuote, type QuoteInput, verifyQuote } from "./quote.js";
import { ecPublicPoint, parseTpmtPublic } from "./tpm-public.js";

/** Quotes by an AK of a real TPM (swtpm), made by tpm2_quote, over the SHA-256 PCRs 0-7. */

const PCRS = [0, 1, 2, 3, 4, 5, 6, 7];

interface Quoted {
  attest: Buffer;
  signature: Buffer;
  pcrValues: Buffer[];
  extraData: Buffer;
}

describe.skipIf(!softwareTpmTestable())("verifyQuote", () => {
  let tpm: SoftwareTpm;
  let ak: Uint8Array;
  let akQualifiedName: Buffer;
  let counter = 0;
  const file = (name: string) => readFile(join(tpm.workDir, name));

  /** Creates the EK and two AKs under it (contexts saved in the work directory); reads the first AK's point. */
  async function createKeys(): Promise<void> {
    const tool = (...args: string[]) => tpm.tool(args, { flushObjects: true });
    await tool("tpm2_createek", "-c", "ek.ctx", "-G", "rsa");
    for (const name of ["ak", "other-ak"]) {
      await tool(
        ...`tpm2_createak -C ek.ctx -c ${name}.ctx -G ecc256 -g sha256 -s ecdsa -u ${name}.pub -q ${name}.qname`.split(
          " ",
        ),
      );
    }
    ak = ecPublicPoint(parseTpmtPublic((await file("ak.pub")).subarray(2)));
    akQualifiedName = await file("ak.qname");
  }

  /** tpm2_quote; -f plain writes the ECDSA signature as DER, -F values the PCR values back to back. */
  async function quote(options: { key?: string; pcrs?: string } = {}): Promise<Quoted> {
    const n = counter++;
    const extraData = randomBytes(32);
    const key = `${options.key ?? "ak"}.ctx`;
    const pcrs = options.pcrs ?? "sha256:0,1,2,3,4,5,6,7";
    const outputs = `-m attest-${n} -s signature-${n} -f plain -o pcrs-${n} -F values`;
    const line = `tpm2_quote -c ${key} -l ${pcrs} -q ${extraData.toString("hex")} -g sha256 ${outputs}`;
    await tpm.tool(line.split(" "), { flushObjects: true });
    const values = await file(`pcrs-${n}`);
    const pcrValues = Array.from({ length: values.length / 32 }, (_, i) =>
      values.subarray(i * 32, i * 32 + 32),
    );
    return {
      attest: await file(`attest-${n}`),
      signature: await file(`signature-${n}`),
      pcrValues,
      extraData,
    };
  }

  function input(quoted: Quoted, overrides: Partial<QuoteInput> = {}): QuoteInput {
    return {
      attest: quoted.attest,
      signature: quoted.signature,
      akPublicKey: ak,
      expectedExtraData: quoted.extraData,
      expectedPcrs: PCRS,
      pcrValues: quoted.pcrValues,
      ...overrides,
    };
  }

  beforeAll(async () => {
    tpm = await startSoftwareTpm();
    await createKeys();
  });

  afterAll(async () => {
    await tpm?.stop();
  });

  it("accepts a fresh quote and reads what the TPM put in it", async () => {
    const quoted = await quote();
    const verdict = verifyQuote(input(quoted));
    if (!verdict.ok) throw new Error(verdict.message);
    const { quote: q } = verdict;
    expect(Buffer.from(q.extraData)).toEqual(quoted.extraData);
    expect(Buffer.from(q.qualifiedSigner)).toEqual(akQualifiedName);
    expect(q.pcrSelection).toEqual([{ hash: TPM_ALG.SHA256, pcrs: PCRS }]);
    expect(verdict.pcrComposite).toBe(Buffer.from(q.pcrDigest).toString("hex"));
    // The AK is in the endorsement hierarchy: the TPM reports its counters in clear.
    const { stdout } = await tpm.tool(["tpm2_readclock"]);
    expect(q.resetCount).toBe(Number(/reset_count:\s*(\d+)/.exec(stdout)?.[1]));
    expect(q.restartCount).toBe(Number(/restart_count:\s*(\d+)/.exec(stdout)?.[1]));
    expect(q.safe).toBe(true);
    expect(q.clock).toBeGreaterThan(0n);
  });

  it("refuses a quote for another challenge (tpm_quote_replay)", async () => {
    const quoted = await quote();
    const verdict = verifyQuote(input(quoted, { expectedExtraData: randomBytes(32) }));
    expect(verdict).toMatchObject({
      ok: false,
      code: "tpm_quote_replay",
      message: expect.stringMatching(/extraData/),
    });
  });

  it("refuses a quote whose clock did not advance since the previous one (tpm_quote_replay)", async () => {
    const first = await quote();
    const firstQuote = parseQuote(first.attest);
    const previous = { clock: firstQuote.clock, resetCount: firstQuote.resetCount, restartCount: 0 };
    expect(verifyQuote(input(first, { previous }))).toMatchObject({
      ok: false,
      code: "tpm_quote_replay",
      message: expect.stringMatching(/clock did not advance/),
    });
    const second = await quote();
    expect(verifyQuote(input(second, { previous })).ok).toBe(true);
    expect(
      verifyQuote(input(second, { previous: { ...previous, resetCount: previous.resetCount + 1 } })),
    ).toMatchObject({
      ok: false,
      code: "tpm_quote_replay",
      message: expect.stringMatching(/resetCount went back/),
    });
    expect(verifyQuote(input(second, { previous: { ...previous, restartCount: 1 } }))).toMatchObject({
      ok: false,
      code: "tpm_quote_replay",
      message: expect.stringMatching(/restartCount went back/),
    });
  });

  it("refuses a quote by another AK (tpm_wrong_key), and a signature over other bytes", async () => {
    const other = await quote({ key: "other-ak" });
    expect(verifyQuote(input(other))).toMatchObject({ ok: false, code: "tpm_wrong_key" });
    const quoted = await quote();
    expect(verifyQuote(input(quoted, { signature: other.signature }))).toMatchObject({
      code: "tpm_wrong_key",
    });
    expect(verifyQuote(input(quoted, { signature: Buffer.from("garbage") }))).toMatchObject({
      code: "tpm_wrong_key",
    });
    const altered = Buffer.from(quoted.attest);
    altered[altered.length - 1]! ^= 1;
    expect(verifyQuote(input(quoted, { attest: altered }))).toMatchObject({ code: "tpm_wrong_key" });
  });

  it("refuses PCR values that are not the quoted ones (tpm_bad_quote)", async () => {
    const before = await quote();
    await tpm.tool(["tpm2_pcrextend", `0:sha256=${randomBytes(32).toString("hex")}`]);
    const after = await quote();
    expect(after.pcrValues[0]).not.toEqual(before.pcrValues[0]);
    expect(verifyQuote(input(after)).ok).toBe(true);
    expect(verifyQuote(input(after, { pcrValues: before.pcrValues }))).toMatchObject({
      ok: false,
      code: "tpm_bad_quote",
      message: expect.stringMatching(/pcrDigest/),
    });
    expect(verifyQuote(input(after, { pcrValues: after.pcrValues.slice(1) }))).toMatchObject({
      code: "tpm_bad_quote",
    });
    const short = after.pcrValues.map((value, i) => (i === 3 ? value.subarray(0, 20) : value));
    expect(verifyQuote(input(after, { pcrValues: short }))).toMatchObject({ code: "tpm_bad_quote" });
    // The caller may list the PCRs in any order, each value beside its PCR.
    const reversed = { expectedPcrs: [...PCRS].reverse(), pcrValues: [...after.pcrValues].reverse() };
    expect(verifyQuote(input(after, reversed)).ok).toBe(true);
  });

  it("refuses a quote over other PCRs (tpm_bad_quote)", async () => {
    const more = await quote({ pcrs: "sha256:0,1,2,3,4,5,6,7,8" });
    expect(verifyQuote(input(more, { pcrValues: more.pcrValues.slice(0, 8) }))).toMatchObject({
      ok: false,
      code: "tpm_bad_quote",
      message: expect.stringMatching(/covers PCRs \[0,1,2,3,4,5,6,7,8\]/),
    });
    const fewer = await quote({ pcrs: "sha256:0,1,2" });
    expect(verifyQuote(input(fewer))).toMatchObject({ ok: false, code: "tpm_bad_quote" });
    expect(() => verifyQuote(input(fewer, { expectedPcrs: [0, 0, 1] }))).toThrow(RangeError);
    expect(() => verifyQuote(input(fewer, { expectedPcrs: [24] }))).toThrow(RangeError);
  });

  it("refuses malformed attestation data (tpm_bad_quote) before it looks at the signature", async () => {
    const quoted = await quote();
    const truncated = quoted.attest.subarray(0, quoted.attest.length - 1);
    expect(verifyQuote(input(quoted, { attest: truncated }))).toMatchObject({
      ok: false,
      code: "tpm_bad_quote",
    });
    const trailing = Buffer.concat([quoted.attest, Buffer.of(0)]);
    expect(verifyQuote(input(quoted, { attest: trailing }))).toMatchObject({ code: "tpm_bad_quote" });
    const certify = Buffer.from(quoted.attest);
    certify.writeUInt16BE(0x8017, 4);
    expect(verifyQuote(input(quoted, { attest: certify }))).toMatchObject({
      code: "tpm_bad_quote",
      message: expect.stringMatching(/not a quote/),
    });
    const magic = Buffer.from(quoted.attest);
    magic[0] = 0;
    expect(verifyQuote(input(quoted, { attest: magic }))).toMatchObject({ code: "tpm_bad_quote" });
    // clockInfo.safe is a TPMI_YES_NO: after magic, type, the signer's name and extraData, clock,
    // resetCount and restartCount.
    const signerSize = quoted.attest.readUInt16BE(6);
    const safeAt = 8 + signerSize + 2 + quoted.extraData.length + 8 + 4 + 4;
    expect(parseQuote(quoted.attest).safe).toBe(true);
    const unsafe = Buffer.from(quoted.attest);
    unsafe[safeAt] = 0;
    expect(parseQuote(unsafe).safe).toBe(false);
    unsafe[safeAt] = 2;
    expect(() => parseQuote(unsafe)).toThrow(/safe is 2/);
    for (let length = 0; length < quoted.attest.length; length++) {
      expect(() => parseQuote(quoted.attest.subarray(0, length)), `length ${length}`).toThrow(TpmFormatError);
    }
  });

  it("accepts the first quote after a reboot although the clock may be behind the last one", async () => {
    const last = parseQuote((await quote()).attest);
    await tpm.restart({ orderly: false });
    // Saved contexts of transient objects do not survive a TPM Reset: the keys are made again (the EK
    // and a primary would come back the same; this AK is a child, so it is a new key).
    await createKeys();
    const fresh = await quote();
    const previous = {
      clock: last.clock + 60_000n,
      resetCount: last.resetCount,
      restartCount: last.restartCount,
    };
    const verdict = verifyQuote(input(fresh, { previous }));
    if (!verdict.ok) throw new Error(verdict.message);
    expect(verdict.quote.resetCount).toBe(last.resetCount + 1);
  });

  it("refuses a quote over another bank, or over SHA-256 and another (tpm_bad_quote)", async () => {
    // swtpm_setup activated only SHA-256; the SHA-1 bank comes with the next TPM Reset.
    await tpm.tool(["tpm2_pcrallocate", "sha1:all+sha256:all"]);
    await tpm.restart();
    await createKeys();
    const sha1 = await quote({ pcrs: "sha1:0,1,2,3,4,5,6,7" });
    expect(verifyQuote(input(sha1))).toMatchObject({
      ok: false,
      code: "tpm_bad_quote",
      message: "the quote selects the banks [0x4], not exactly SHA-256",
    });
    const both = await quote({ pcrs: "sha256:0,1,2,3,4,5,6,7+sha1:0" });
    expect(verifyQuote(input(both, { pcrValues: both.pcrValues.slice(0, 8) }))).toMatchObject({
      ok: false,
      code: "tpm_bad_quote",
      message: "the quote selects the banks [0xb, 0x4], not exactly SHA-256",
    });
  });
});
