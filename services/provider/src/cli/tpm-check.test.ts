import { loadTpmBinding } from "@darkbloom/native/tpm";
import { softwareTpmTestable, startSoftwareTpm } from "@darkbloom/testing";
import { describe, expect, it } from "vitest";
import { tpmCheck } from "./tpm-check.js";

describe("doctor's tpm line", () => {
  it("passes when the TPM is off and warns, with a fix, when none is found or it does not answer", async () => {
    expect(await tpmCheck("off")).toMatchObject({
      ok: true,
      detail: expect.stringContaining("software key"),
    });
    expect(await tpmCheck("auto", () => false)).toMatchObject({
      ok: true,
      warn: true,
      detail: "no TPM (/dev/tpmrm0): the software key, trust self_signed",
    });
    const down = await tpmCheck("swtpm:host=127.0.0.1,port=1");
    expect(down).toMatchObject({ ok: true, warn: true });
    expect(down.detail).toContain(loadTpmBinding() ? "tpm_unavailable" : "tpm_not_built");
    expect(down.fix).toBeTruthy();
  });

  it.skipIf(!loadTpmBinding() || !softwareTpmTestable())(
    "passes on a TPM with an EK certificate",
    async () => {
      const tpm = await startSoftwareTpm();
      try {
        expect(await tpmCheck(tpm.tcti)).toEqual({
          name: "tpm",
          ok: true,
          detail: `${tpm.tcti}: attestation key ready, EK certificate present`,
        });
      } finally {
        await tpm.stop();
      }
    },
  );
});
