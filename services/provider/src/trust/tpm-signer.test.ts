import { verify } from "node:crypto";
import { loadTpmBinding } from "@darkbloom/native/tpm";
import { type SoftwareTpm, softwareTpmTestable, startSoftwareTpm } from "@darkbloom/testing";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTpmSigner, TpmKeyChangedError, TpmSigner } from "./tpm-signer.js";

function recordingLogger() {
  const lines: { level: number; msg: string; code?: string }[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { logger, lines, warnings: () => lines.filter((l) => l.level === 40).map((l) => l.msg) };
}

describe("openTpmSigner's fallbacks: the software key, with one warning saying why", () => {
  it("off never touches a TPM and says nothing", async () => {
    const { logger, lines } = recordingLogger();
    expect(await openTpmSigner("off", logger)).toBeUndefined();
    expect(lines).toEqual([]);
  });

  it("auto without /dev/tpmrm0 warns that no TPM was found", async () => {
    const { logger, warnings } = recordingLogger();
    expect(await openTpmSigner("auto", logger, { deviceExists: () => false })).toBeUndefined();
    expect(warnings()).toEqual([expect.stringContaining("no TPM found (/dev/tpmrm0)")]);
  });

  it("a TPM that does not answer is one warning with its code (tpm_not_built where the addon is missing)", async () => {
    const { logger, lines } = recordingLogger();
    expect(await openTpmSigner("swtpm:host=127.0.0.1,port=1", logger)).toBeUndefined();
    const codes = lines.filter((l) => l.level === 40).map((l) => l.code);
    expect(codes).toEqual([loadTpmBinding() ? "tpm_unavailable" : "tpm_not_built"]);
  });
});

describe.skipIf(!loadTpmBinding() || !softwareTpmTestable())("TpmSigner on a software TPM", () => {
  let swtpm: SoftwareTpm;
  beforeAll(async () => {
    swtpm = await startSoftwareTpm();
  });
  afterAll(async () => {
    await swtpm?.stop();
  });

  it("registers its EK certificate and key, signs with the TPM key, and refuses to sign once the TPM's key changed", async () => {
    const { logger } = recordingLogger();
    const signer = await openTpmSigner(swtpm.tcti, logger);
    expect(signer).toBeInstanceOf(TpmSigner);
    const s = signer as TpmSigner;
    expect(s.kind).toBe("tpm");
    expect(s.evidence.ekCertificate.length).toBeGreaterThan(0);
    expect(s.evidence.attestationKeyPublic.length).toBeGreaterThan(0);
    const data = Buffer.from("attestation blob");
    const signature = await s.sign(data);
    const { createPublicKey } = await import("node:crypto");
    const key = createPublicKey({
      key: Buffer.concat([
        Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex"),
        Buffer.from(s.publicKey()),
      ]),
      format: "der",
      type: "spki",
    });
    expect(verify("sha256", data, key, signature)).toBe(true);
    // A new endorsement seed (what clearing the TPM's endorsement hierarchy does): the key derived
    // now is another key, and the signer will not pass its signatures off as the registered key's.
    await swtpm.tool(["tpm2_evictcontrol", "-C", "o", "-c", "0x81018d00"]);
    await swtpm.tool(["tpm2_changeeps"]);
    await expect(s.sign(data)).rejects.toBeInstanceOf(TpmKeyChangedError);
  });
});
