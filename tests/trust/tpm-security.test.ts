/**
 * The TPM trust path end to end in one process, with nothing faked: a provider's real TpmSigner and
 * Attestor on a software TPM (swtpm, manufactured with an EK certificate from a local CA) answer the
 * coordinator's real TrustManager, and every way a stranger could lie about its TPM is tried.
 */
import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { clone, create } from "@bufbuild/protobuf";
import {
  attestationView,
  EkTrustStore,
  TrustCode,
  TrustManager,
  type TrustManagerOptions,
} from "@darkbloom/coordinator";
import { type AttachedTrust, attachTrust } from "@darkbloom/coordinator/testing";
import {
  type AttestationChallenge,
  AttestationResponseSchema,
  type Register,
  RegisterSchema,
  TpmEvidenceSchema,
  TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import { Attestor, TpmSigner } from "@darkbloom/provider";
import {
  createSoftwareTpmCa,
  type SoftwareTpm,
  type SoftwareTpmCa,
  softwareTpmTestable,
  startSoftwareTpm,
} from "@darkbloom/testing";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const WEIGHTS = "cd".repeat(32);
const MODELS = [{ id: "m", sha256: WEIGHTS }];
// A challenge after every pass, soon: each test walks through several.
const TIMINGS = {
  challengeIntervalMs: 30,
  challengeTimeoutMs: 10_000,
  challengeRetryMs: 30,
  challengeFreshnessMs: 60_000,
  maxFailedChallenges: 3,
};

interface Provider {
  tpm: SoftwareTpm;
  signer: TpmSigner;
  attestor: Attestor;
  register: Register;
}

type Session = AttachedTrust;

describe.skipIf(!softwareTpmTestable())("TPM-bound provider keys under the coordinator's checks", () => {
  let ca: SoftwareTpmCa;
  const tpms: SoftwareTpm[] = [];
  const managers: TrustManager[] = [];
  let machines = 0;

  beforeAll(async () => {
    ca = await createSoftwareTpmCa();
  });
  afterEach(() => {
    for (const m of managers.splice(0)) m.close();
  });
  afterAll(async () => {
    await Promise.all(tpms.map((t) => t.stop()));
    await ca?.remove();
  });

  async function provider(options: { ca?: SoftwareTpmCa } = {}): Promise<Provider> {
    const tpm = await startSoftwareTpm({ ca: options.ca ?? ca });
    tpms.push(tpm);
    const signer = await TpmSigner.open({ tcti: tpm.tcti });
    const n = machines++;
    const encryptionPublicKey = new Uint8Array(32).fill(n + 1);
    const attestor = await Attestor.create({
      signer,
      machineId: `tpm-machine-${n}`,
      daemonVersion: "1.0.0",
      chip: "",
      machineModel: "server",
      os: "linux",
      osVersion: "6.1",
      encryptionPublicKey,
      binarySha256: "ab".repeat(32),
      serialSha256: "",
      posture: { sip: "not_applicable", secureBoot: "enabled" },
    });
    const register = create(RegisterSchema, {
      protocolVersion: 1,
      daemonVersion: "1.0.0",
      machineId: `tpm-machine-${n}`,
      encryptionPublicKey,
      models: [{ id: "m", weightSha256: WEIGHTS }],
      capacity: { maxBatch: 2 },
      attestation: attestor.attestation,
      ...(attestor.tpm ? { tpm: attestor.tpm } : {}),
    });
    return { tpm, signer, attestor, register };
  }

  async function manager(over: Partial<TrustManagerOptions> = {}): Promise<TrustManager> {
    const m = new TrustManager(
      {
        minTrust: TrustLevel.SELF_SIGNED,
        minProviderVersion: "",
        hardwareKeys: new Set(),
        ekRoots: EkTrustStore.fromPem(ca.bundlePem),
        ...TIMINGS,
        ...over,
      },
      undefined,
      log,
    );
    managers.push(m);
    await m.start();
    return m;
  }

  const attach = attachTrust;

  /** The n-th challenge (1-based), once it has been issued. */
  async function challenge(s: Session, n: number): Promise<AttestationChallenge> {
    await expect.poll(() => s.challenges().length, { timeout: 5_000, interval: 5 }).toBeGreaterThanOrEqual(n);
    return s.challenges()[n - 1] as AttestationChallenge;
  }

  /** Answers the n-th challenge as the provider's attestor does, after `tamper` changes the answer. */
  async function answer(
    s: Session,
    p: Provider,
    n: number,
    tamper: (a: Awaited<ReturnType<Attestor["respond"]>>) => void = () => undefined,
  ) {
    const response = await p.attestor.respond(await challenge(s, n), MODELS);
    tamper(response);
    s.trust.onChallengeResponse(create(AttestationResponseSchema, response));
    return response;
  }

  const codes = (s: Session) => s.lastStatus()?.reasons.map((r) => r.code) ?? [];

  it("an honest TPM earns tpm: the first challenge carries a credential its TPM activates, every answer a fresh quote", async () => {
    const p = await provider();
    const m = await manager();
    const s = attach(m, p.register);
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.SELF_SIGNED);
    expect((await challenge(s, 1)).tpmCredential).toBeDefined();
    await answer(s, p, 1);
    expect(s.lastStatus()).toMatchObject({ trustLevel: TrustLevel.TPM, routable: true });
    expect(codes(s)).toEqual([]);
    // Activation is once per session; quotes go on.
    expect((await challenge(s, 2)).tpmCredential).toBeUndefined();
    await answer(s, p, 2);
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.TPM);
    const view = attestationView(s.trust) as {
      signer: string;
      trust_level: string;
      tpm: Record<string, unknown>;
    };
    expect(view.signer).toBe("tpm");
    expect(view.trust_level).toBe("tpm");
    expect(view.tpm).toMatchObject({ ek_certified: true, activated: true });
    expect(view.tpm.pcr_digest).toMatch(/^[0-9a-f]{64}$/);
  });

  it("a foreign EK CA, or none configured, leaves the TPM at self_signed with tpm_unknown_ek_ca, and no credential is sent", async () => {
    const foreignCa = await createSoftwareTpmCa();
    try {
      const p = await provider({ ca: foreignCa });
      for (const m of [await manager(), await manager({ ekRoots: undefined })]) {
        const s = attach(m, p.register);
        expect((await challenge(s, 1)).tpmCredential).toBeUndefined();
        await answer(s, p, 1);
        expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.SELF_SIGNED);
        expect(codes(s)).toEqual([TrustCode.tpmUnknownEkCa]);
      }
    } finally {
      await foreignCa.remove();
    }
  });

  it("an EK CA added to the bundle file certifies connected TPMs at once, and removed, uncertifies them", async () => {
    const foreignCa = await createSoftwareTpmCa();
    const dir = await mkdtemp(join(tmpdir(), "ek-ca-"));
    try {
      const foreign = await provider({ ca: foreignCa }); // sets the foreign CA up
      void foreign;
      const path = join(dir, "ek-ca.pem");
      let version = 0;
      const write = async (pem: string) => {
        await writeFile(path, pem);
        const t = new Date(Date.now() + ++version * 1000);
        await utimes(path, t, t);
      };
      await write(foreignCa.bundlePem);
      const p = await provider();
      // Challenges a minute apart: only the new CA can bring the next one within the test.
      const m = await manager({
        ekRoots: undefined,
        ekCaFile: path,
        policyRefreshMs: 50,
        challengeIntervalMs: 60_000,
        challengeRetryMs: 60_000,
      });
      const s = attach(m, p.register);
      expect((await challenge(s, 1)).tpmCredential).toBeUndefined();
      await answer(s, p, 1);
      expect(codes(s)).toEqual([TrustCode.tpmUnknownEkCa]);

      await write(foreignCa.bundlePem + ca.bundlePem);
      await expect.poll(() => codes(s), { timeout: 5_000 }).toEqual([]);
      // Certified now: challenged at once, with the credential, whose activation earns tpm.
      expect((await challenge(s, 2)).tpmCredential).toBeDefined();
      await answer(s, p, 2);
      expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.TPM);

      await write(foreignCa.bundlePem);
      await expect.poll(() => s.lastStatus()?.trustLevel, { timeout: 5_000 }).toBe(TrustLevel.SELF_SIGNED);
      expect(codes(s)).toEqual([TrustCode.tpmUnknownEkCa]);
    } finally {
      await rm(dir, { recursive: true, force: true });
      await foreignCa.remove();
    }
  });

  it("key swap at registration: another TPM's attestation key beside this attestation is refused (tpm_wrong_key)", async () => {
    const [a, b] = [await provider(), await provider()];
    const m = await manager();
    const register = clone(RegisterSchema, a.register);
    register.tpm = create(TpmEvidenceSchema, {
      ekCertificate: a.register.tpm?.ekCertificate,
      attestationKeyPublic: b.register.tpm?.attestationKeyPublic,
    });
    const s = attach(m, register);
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.NONE);
    expect(codes(s)).toContain(TrustCode.tpmWrongKey);
  });

  it("a certified EK that is not beside the key: the credential cannot be activated (tpm_activation_failed)", async () => {
    const [a, b] = [await provider(), await provider()];
    const m = await manager();
    // A's key and attestation, B's (genuine, certified) EK certificate.
    const register = clone(RegisterSchema, a.register);
    register.tpm = create(TpmEvidenceSchema, {
      ekCertificate: b.register.tpm?.ekCertificate,
      attestationKeyPublic: a.register.tpm?.attestationKeyPublic,
    });
    const s = attach(m, register);
    expect((await challenge(s, 1)).tpmCredential).toBeDefined();
    await answer(s, a, 1);
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.NONE);
    expect(codes(s)).toContain(TrustCode.tpmActivationFailed);
  });

  it("a replayed quote (an earlier challenge's) is caught (tpm_quote_replay)", async () => {
    const p = await provider();
    const m = await manager();
    const s = attach(m, p.register);
    const first = await answer(s, p, 1);
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.TPM);
    await answer(s, p, 2, (r) => {
      r.tpmQuote = first.tpmQuote;
    });
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.NONE);
    expect(codes(s)).toContain(TrustCode.tpmQuoteReplay);
  });

  it("a quote by another TPM's key over the right data is caught (tpm_wrong_key)", async () => {
    const [a, b] = [await provider(), await provider()];
    const m = await manager();
    const s = attach(m, a.register);
    await answer(s, a, 1);
    const c2 = await challenge(s, 2);
    await answer(s, a, 2, () => undefined);
    const c3 = await challenge(s, 3);
    expect(c3.nonce).not.toEqual(c2.nonce);
    const forged = create(AttestationResponseSchema, await b.attestor.respond(c3, MODELS));
    const honest = create(AttestationResponseSchema, await a.attestor.respond(c3, MODELS));
    // A's own signature over the status, B's quote over the same bytes (B signs the same status).
    honest.tpmQuote = forged.tpmQuote;
    s.trust.onChallengeResponse(honest);
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.NONE);
    expect(codes(s)).toContain(TrustCode.tpmWrongKey);
  });

  it("boot-state PCRs that change between two challenges are a violation (tpm_pcr_changed)", async () => {
    const p = await provider();
    const m = await manager();
    const s = attach(m, p.register);
    await answer(s, p, 1);
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.TPM);
    await p.tpm.tool(["tpm2_pcrextend", `0:sha256=${"11".repeat(32)}`]);
    await answer(s, p, 2);
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.NONE);
    expect(codes(s)).toContain(TrustCode.tpmPcrChanged);
  });

  it("a PCR policy admits the boot states it lists and holds others at self_signed (tpm_pcr_mismatch)", async () => {
    const p = await provider();
    const strict = attach(await manager({ tpmPcrAllowlist: new Set(["00".repeat(32)]) }), p.register);
    await answer(strict, p, 1);
    expect(strict.lastStatus()?.trustLevel).toBe(TrustLevel.SELF_SIGNED);
    expect(codes(strict)).toEqual([TrustCode.tpmPcrMismatch]);
    const digest = (attestationView(strict.trust) as { tpm: { pcr_digest: string } }).tpm.pcr_digest;
    const allowing = attach(await manager({ tpmPcrAllowlist: new Set([digest]) }), p.register);
    await answer(allowing, p, 1);
    expect(allowing.lastStatus()?.trustLevel).toBe(TrustLevel.TPM);
  });

  it("a key that disappears from its persistent handle comes back as the same key, and trust holds", async () => {
    const p = await provider();
    const m = await manager();
    const s = attach(m, p.register);
    await answer(s, p, 1);
    await p.tpm.tool(["tpm2_evictcontrol", "-C", "o", "-c", "0x81018d00"]);
    await expect(p.tpm.tool(["tpm2_readpublic", "-c", "0x81018d00"])).rejects.toThrow();
    await answer(s, p, 2);
    expect(s.lastStatus()).toMatchObject({ trustLevel: TrustLevel.TPM, routable: true });
    await p.tpm.tool(["tpm2_readpublic", "-c", "0x81018d00"]);
  });

  it("an answer without a quote fails the challenge (tpm_bad_quote) without a sticky violation", async () => {
    const p = await provider();
    const m = await manager();
    const s = attach(m, p.register);
    await answer(s, p, 1);
    await answer(s, p, 2, (r) => {
      r.tpmQuote = undefined;
    });
    expect(s.trust.lastChallenge).toMatchObject({
      result: "failed",
      reason: { code: TrustCode.tpmBadQuote },
    });
    expect(s.lastStatus()?.trustLevel).toBe(TrustLevel.TPM);
    await answer(s, p, 3);
    expect(s.trust.lastChallenge?.result).toBe("passed");
  });
});
