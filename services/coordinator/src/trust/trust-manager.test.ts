import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  type AttestationDocument,
  challengeSigningInput,
  encodeAttestation,
  encodeChallengeStatus,
  rawP256PublicKey,
} from "@darkbloom/protocol";
import {
  type AttestationChallenge,
  AttestationResponseSchema,
  type Register,
  RegisterSchema,
  type RuntimeStatus,
  SignerKind,
  TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ReleasePolicy } from "../releases/release-store.js";
import { type AttachedTrust, attachTrust } from "../testing/attached-trust.js";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "../testing/test-database.js";
import { verifyRegistration } from "./attestation.js";
import { KeyQuarantineStore } from "./key-quarantine.js";
import { TrustManager, type TrustManagerOptions } from "./trust-manager.js";

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const BINARY = "ab".repeat(32);
const WEIGHTS = "cd".repeat(32);

interface Machine {
  key: KeyObject;
  publicKey: Uint8Array;
  machineId: string;
  encryptionKey: Uint8Array;
}

let nextMachine = 0;
function machine(key?: KeyObject): Machine {
  const k = key ?? generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey;
  const n = nextMachine++;
  return {
    key: k,
    publicKey: rawP256PublicKey(k),
    machineId: `machine-${n}`,
    encryptionKey: new Uint8Array(32).fill(n + 1),
  };
}

function document(m: Machine, over: Partial<AttestationDocument> = {}): Omit<AttestationDocument, "format"> {
  return {
    binary_sha256: BINARY,
    chip: "chip",
    daemon_version: "1.0.0",
    encryption_public_key: Buffer.from(m.encryptionKey).toString("base64"),
    key_persistent: true,
    machine_id: m.machineId,
    machine_model: "model",
    os: "linux",
    os_version: "6.1",
    secure_boot: "enabled",
    serial_sha256: "",
    signer: "software",
    sip: "not_applicable",
    timestamp_ms: Date.now(),
    ...over,
  };
}

function registerOf(
  m: Machine,
  over: {
    doc?: Partial<AttestationDocument>;
    register?: Partial<Pick<Register, "machineId" | "daemonVersion" | "encryptionPublicKey">>;
    noAttestation?: boolean;
  } = {},
): Register {
  const blob = encodeAttestation(document(m, over.doc));
  const signer = over.doc?.signer === "secure_enclave" ? SignerKind.SECURE_ENCLAVE : SignerKind.SOFTWARE;
  return create(RegisterSchema, {
    protocolVersion: 1,
    daemonVersion: "1.0.0",
    machineId: m.machineId,
    encryptionPublicKey: m.encryptionKey,
    models: [{ id: "m", weightSha256: WEIGHTS }],
    capacity: { maxBatch: 2 },
    ...(over.noAttestation
      ? {}
      : {
          attestation: {
            blob,
            signature: sign("sha256", blob, { key: m.key, dsaEncoding: "der" }),
            publicKey: m.publicKey,
            signer,
          },
        }),
    ...over.register,
  });
}

const TIMINGS = {
  challengeIntervalMs: 60_000,
  challengeTimeoutMs: 60,
  challengeRetryMs: 20,
  challengeFreshnessMs: 60_000,
  maxFailedChallenges: 3,
};

class Policy {
  value: ReleasePolicy = { binaryAllowlist: new Set(), minProviderVersion: "" };
  async policy(): Promise<ReleasePolicy> {
    return {
      binaryAllowlist: new Set(this.value.binaryAllowlist),
      minProviderVersion: this.value.minProviderVersion,
    };
  }
}

type Attached = AttachedTrust;

const managers: TrustManager[] = [];
afterEach(() => {
  for (const m of managers.splice(0)) m.close();
});

async function manager(over: Partial<TrustManagerOptions> = {}, policy = new Policy()) {
  const m = new TrustManager(
    {
      minTrust: TrustLevel.SELF_SIGNED,
      minProviderVersion: "",
      hardwareKeys: new Set(),
      ...TIMINGS,
      ...over,
    },
    policy,
    log,
  );
  managers.push(m);
  await m.start();
  return m;
}

const attach = attachTrust;

function answer(
  m: Machine,
  challenge: AttestationChallenge,
  over: {
    sip?: "enabled" | "disabled" | "not_applicable";
    models?: Array<{ id: string; weight_sha256: string }>;
    binary?: string;
  } = {},
) {
  const status = encodeChallengeStatus({
    binary_sha256: over.binary ?? BINARY,
    models: over.models ?? [{ id: "m", weight_sha256: WEIGHTS }],
    secure_boot: "enabled",
    sip: over.sip ?? "not_applicable",
  });
  const signature = sign("sha256", challengeSigningInput(challenge.nonce, challenge.timestampMs, status), {
    key: m.key,
    dsaEncoding: "der",
  });
  return create(AttestationResponseSchema, {
    nonce: challenge.nonce,
    timestampMs: challenge.timestampMs,
    status,
    signature,
  });
}

const codes = (s: RuntimeStatus | undefined) => s?.reasons.map((r) => r.code) ?? [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("registration verification", () => {
  const policy = { hardwareKeys: new Set<string>() };

  it("grants self_signed to a valid software attestation bound to the registered key", () => {
    const m = machine();
    const v = verifyRegistration(registerOf(m), policy);
    expect(v.level).toBe(TrustLevel.SELF_SIGNED);
    expect(v.violations).toEqual([]);
    expect(v.attestation?.publicKeyHex).toBe(Buffer.from(m.publicKey).toString("hex"));
  });

  it("names what is wrong: no attestation, malformed key, bad signature, key and field mismatches", () => {
    const m = machine();
    const code = (r: Register) => {
      const v = verifyRegistration(r, policy);
      return [...v.violations, ...v.notes].map((f) => f.code);
    };
    expect(code(registerOf(m, { noAttestation: true }))).toEqual(["no_attestation"]);
    const badKey = registerOf(m);
    badKey.attestation!.publicKey = badKey.attestation!.publicKey.subarray(1);
    expect(code(badKey)).toEqual(["malformed_attestation"]);
    const wrongSig = registerOf(m);
    wrongSig.attestation!.signature = sign("sha256", Buffer.from("x"), { key: m.key, dsaEncoding: "der" });
    expect(code(wrongSig)).toEqual(["bad_signature"]);
    const otherSigner = registerOf(m);
    otherSigner.attestation!.publicKey = machine().publicKey;
    expect(code(otherSigner)).toEqual(["bad_signature"]);
    expect(code(registerOf(m, { register: { encryptionPublicKey: new Uint8Array(32).fill(99) } }))).toEqual([
      "key_mismatch",
    ]);
    expect(code(registerOf(m, { register: { machineId: "someone-else" } }))).toEqual([
      "attestation_mismatch",
    ]);
    expect(code(registerOf(m, { register: { daemonVersion: "9.9.9" } }))).toEqual(["attestation_mismatch"]);
    const kind = registerOf(m);
    kind.attestation!.signer = SignerKind.SECURE_ENCLAVE;
    expect(code(kind)).toEqual(["attestation_mismatch"]);
    const notCanonical = registerOf(m);
    const blob = Buffer.from(` ${Buffer.from(notCanonical.attestation!.blob).toString()}`);
    notCanonical.attestation!.blob = blob;
    notCanonical.attestation!.signature = sign("sha256", blob, { key: m.key, dsaEncoding: "der" });
    expect(code(notCanonical)).toEqual(["malformed_attestation"]);
  });

  it("flags SIP or Secure Boot reported disabled in the blob", () => {
    const m = machine();
    const v = verifyRegistration(
      registerOf(m, { doc: { sip: "disabled", secure_boot: "disabled" } }),
      policy,
    );
    expect(v.attestation).toBeDefined();
    expect(v.violations.map((f) => f.code)).toEqual(["sip_disabled", "secure_boot_disabled"]);
  });

  it("grants hardware only to a persistent Secure Enclave key enrolled with the coordinator", () => {
    const m = machine();
    const enrolled = { hardwareKeys: new Set([Buffer.from(m.publicKey).toString("hex")]) };
    const se = registerOf(m, { doc: { signer: "secure_enclave" } });
    expect(verifyRegistration(se, enrolled).level).toBe(TrustLevel.HARDWARE);
    const notEnrolled = verifyRegistration(se, policy);
    expect(notEnrolled.level).toBe(TrustLevel.SELF_SIGNED);
    expect(notEnrolled.notes.map((n) => n.code)).toEqual(["hardware_unverified"]);
    const ephemeral = verifyRegistration(
      registerOf(m, { doc: { signer: "secure_enclave", key_persistent: false } }),
      enrolled,
    );
    expect(ephemeral.level).toBe(TrustLevel.SELF_SIGNED);
    expect(ephemeral.notes.map((n) => n.code)).toEqual(["ephemeral_key", "hardware_unverified"]);
  });
});

describe("challenges and judgements", () => {
  it("challenges at registration; a passed challenge makes the provider attested and routable", async () => {
    const tm = await manager();
    const m = machine();
    const p = attach(tm, registerOf(m));
    expect(p.sent[0]?.message.case).toBe("runtimeStatus");
    expect(p.lastStatus()).toMatchObject({ trustLevel: TrustLevel.SELF_SIGNED, routable: false });
    expect(codes(p.lastStatus())).toEqual(["attestation_stale"]);
    const [challenge] = p.challenges();
    expect(challenge?.nonce).toHaveLength(32);
    p.trust.onChallengeResponse(answer(m, challenge!));
    expect(p.lastStatus()).toMatchObject({ trustLevel: TrustLevel.SELF_SIGNED, routable: true, reasons: [] });
    expect(p.handle.attested()).toBe(true);
    expect(p.trust.lastChallenge?.result).toBe("passed");
  });

  it("treats a replayed answer as a replayed nonce, and an unknown nonce as nothing", async () => {
    const tm = await manager();
    const m = machine();
    const p = attach(tm, registerOf(m));
    const response = answer(m, p.challenges()[0]!);
    p.trust.onChallengeResponse(response);
    expect(p.lastStatus()?.routable).toBe(true);
    p.trust.onChallengeResponse(
      create(AttestationResponseSchema, { ...response, nonce: new Uint8Array(32) }),
    );
    expect(p.lastStatus()?.routable).toBe(true);
    p.trust.onChallengeResponse(response);
    expect(codes(p.lastStatus())).toContain("replayed_nonce");
    expect(p.lastStatus()).toMatchObject({ trustLevel: TrustLevel.NONE, routable: false });
  });

  it("an answer carrying a nonce issued to another provider is a replay", async () => {
    const tm = await manager();
    const a = machine();
    const b = machine();
    const pa = attach(tm, registerOf(a));
    const pb = attach(tm, registerOf(b));
    pb.trust.onChallengeResponse(answer(b, pa.challenges()[0]!));
    expect(codes(pb.lastStatus())).toContain("replayed_nonce");
    pa.trust.onChallengeResponse(answer(a, pa.challenges()[0]!));
    expect(pa.lastStatus()?.routable).toBe(true);
  });

  it("expired challenges: a failure after a fresh pass keeps routing until stale; three in a row untrust", async () => {
    const tm = await manager();
    const m = machine();
    const p = attach(tm, registerOf(m));
    p.trust.onChallengeResponse(answer(m, p.challenges()[0]!));
    expect(p.handle.attested()).toBe(true);
    await sleep(TIMINGS.challengeIntervalMs / 1000); // nothing happens before the interval
    expect(p.challenges()).toHaveLength(1);
    // Ask again now, and let three challenges expire.
    const fresh = await manager({ challengeIntervalMs: 30 });
    const q = attach(fresh, registerOf(machine()));
    await expectEventually(() => q.trust.lastChallenge?.result === "expired");
    expect(q.lastStatus()?.routable).toBe(false);
    expect(q.lastStatus()?.trustLevel).toBe(TrustLevel.SELF_SIGNED);
    await expectEventually(() => codes(q.lastStatus()).includes("challenge_expired"), 2_000);
    expect(q.lastStatus()?.trustLevel).toBe(TrustLevel.NONE);
    // A later challenge that passes ends the strikes.
    const n = machine();
    const r = attach(fresh, registerOf(n));
    await expectEventually(() => codes(r.lastStatus()).includes("challenge_expired"), 2_000);
    await expectEventually(() => r.challenges().length >= 4 && r.trust.lastChallenge?.result === "pending");
    r.trust.onChallengeResponse(answer(n, r.challenges().at(-1)!));
    expect(r.lastStatus()).toMatchObject({ trustLevel: TrustLevel.SELF_SIGNED, routable: true, reasons: [] });
  });

  it("routes on a pass younger than the freshness window; X-Provider-Attested needs the latest challenge passed", async () => {
    const tm = await manager({ challengeIntervalMs: 20, challengeFreshnessMs: 400 });
    const m = machine();
    const p = attach(tm, registerOf(m));
    p.trust.onChallengeResponse(answer(m, p.challenges()[0]!));
    expect(p.handle.attested()).toBe(true);
    await expectEventually(() => p.trust.lastChallenge?.result === "expired");
    expect(p.handle.attested()).toBe(false);
    expect(p.handle.freshlyAttested()).toBe(true);
    expect(p.trust.judgement()).toMatchObject({ routable: true, fresh: true, attested: false });
    await expectEventually(() => codes(p.lastStatus()).includes("attestation_stale"), 2_000);
    expect(p.lastStatus()?.routable).toBe(false);
    expect(p.handle.freshlyAttested()).toBe(false);
  });

  it("SIP off in a challenge makes the provider untrusted for the rest of its session", async () => {
    const tm = await manager({ challengeIntervalMs: 30 });
    const m = machine();
    const p = attach(tm, registerOf(m));
    p.trust.onChallengeResponse(answer(m, p.challenges()[0]!, { sip: "disabled" }));
    expect(codes(p.lastStatus())).toContain("sip_disabled");
    expect(p.lastStatus()).toMatchObject({ trustLevel: TrustLevel.NONE, routable: false });
    await expectEventually(() => p.challenges().length >= 2);
    p.trust.onChallengeResponse(answer(m, p.challenges()[1]!, { sip: "enabled" }));
    expect(p.trust.lastChallenge?.result).toBe("passed");
    expect(codes(p.lastStatus())).toContain("sip_disabled");
    expect(p.lastStatus()?.trustLevel).toBe(TrustLevel.NONE);
  });

  it("a loaded model whose hash is not the registered one is a model hash mismatch", async () => {
    const tm = await manager();
    const m = machine();
    const p = attach(tm, registerOf(m));
    p.trust.onChallengeResponse(
      answer(m, p.challenges()[0]!, { models: [{ id: "m", weight_sha256: "ee".repeat(32) }] }),
    );
    expect(codes(p.lastStatus())).toContain("model_hash_mismatch");
    expect(p.lastStatus()?.trustLevel).toBe(TrustLevel.NONE);
  });

  it("an unknown binary is untrusted while the allowlist lacks it; a release change re-checks the fleet", async () => {
    const policy = new Policy();
    policy.value.binaryAllowlist = new Set(["00".repeat(32)]);
    const tm = await manager({}, policy);
    const m = machine();
    const p = attach(tm, registerOf(m));
    expect(codes(p.lastStatus())).toContain("unknown_binary");
    p.trust.onChallengeResponse(answer(m, p.challenges()[0]!));
    expect(p.trust.lastChallenge?.result).toBe("failed");
    expect(p.lastStatus()).toMatchObject({ trustLevel: TrustLevel.NONE, routable: false });
    policy.value.binaryAllowlist.add(BINARY);
    await tm.refreshPolicy();
    expect(codes(p.lastStatus())).not.toContain("unknown_binary");
    expect(p.lastStatus()?.trustLevel).toBe(TrustLevel.SELF_SIGNED);
  });

  it("a daemon below the minimum version is de-routed whatever its trust; raising the minimum re-checks", async () => {
    const policy = new Policy();
    const tm = await manager({ minTrust: TrustLevel.NONE }, policy);
    const p = attach(tm, registerOf(machine(), { noAttestation: true }));
    expect(p.lastStatus()).toMatchObject({ trustLevel: TrustLevel.NONE, routable: true });
    policy.value.minProviderVersion = "1.0.1";
    await tm.refreshPolicy();
    expect(codes(p.lastStatus())).toEqual(["no_attestation", "version_below_minimum"]);
    expect(p.lastStatus()?.routable).toBe(false);
    expect(p.handle.deRouted).toBe(true);
    policy.value.minProviderVersion = "1.0.0";
    await tm.refreshPolicy();
    expect(p.lastStatus()?.routable).toBe(true);
    expect(tm.minProviderVersion).toBe("1.0.0");
  });

  it("two live machines with one signing key are both flagged, and the key stays flagged", async () => {
    const tm = await manager();
    const a = machine();
    const b = machine(a.key);
    const pa = attach(tm, registerOf(a));
    expect(codes(pa.lastStatus())).not.toContain("duplicate_key");
    const pb = attach(tm, registerOf(b));
    expect(codes(pa.lastStatus())).toContain("duplicate_key");
    expect(codes(pb.lastStatus())).toContain("duplicate_key");
    tm.detach(pb.handle.id);
    const again = attach(tm, registerOf(machine(a.key)));
    expect(codes(again.lastStatus())).toContain("duplicate_key");
    // The same machine reconnecting (its old session gone) is not a duplicate of itself.
    const tm2 = await manager();
    const c = machine();
    const first = attach(tm2, registerOf(c));
    tm2.detach(first.handle.id);
    expect(codes(attach(tm2, registerOf(c)).lastStatus())).not.toContain("duplicate_key");
  });

  it("markUntrusted de-routes, and the finding survives a reconnect with the same proven key", async () => {
    const tm = await manager({ minTrust: TrustLevel.NONE });
    const m = machine();
    const p = attach(tm, registerOf(m));
    p.trust.onChallengeResponse(answer(m, p.challenges()[0]!));
    expect(p.trust.lastPassedAt).toBeDefined();
    p.trust.markUntrusted("chunk_unopenable", "a chunk did not open");
    expect(p.lastStatus()).toMatchObject({ trustLevel: TrustLevel.NONE, routable: false });
    expect(p.handle.deRouted).toBe(true);
    tm.detach(p.handle.id);
    const again = attach(tm, registerOf(m));
    expect(codes(again.lastStatus())).toContain("chunk_unopenable");
    expect(again.lastStatus()?.routable).toBe(false);
    // The key is quarantined under any machine id it registers.
    const renamed = attach(tm, registerOf({ ...m, machineId: "another-machine-id" }));
    expect(codes(renamed.lastStatus())).toContain("chunk_unopenable");
  });

  it("quarantine is per proven key: never a machine id, never a key the session did not prove", async () => {
    const tm = await manager({ minTrust: TrustLevel.NONE });
    const real = machine();
    // A session that replays the machine's published attestation (it cannot sign a challenge) and
    // misbehaves: evicted, but the key it presented is not quarantined.
    const replay = attach(tm, registerOf(real));
    replay.trust.markUntrusted("chunk_not_sealed", "a plaintext chunk answered a sealed request");
    tm.detach(replay.handle.id);
    // A squatter with its own key under the machine's id, proving its key, then misbehaving.
    const squatter = machine();
    const s = attach(tm, registerOf({ ...squatter, machineId: real.machineId }));
    s.trust.onChallengeResponse(answer(squatter, s.challenges()[0]!));
    s.trust.markUntrusted("chunk_not_sealed", "a plaintext chunk answered a sealed request");
    tm.detach(s.handle.id);
    // The real machine, with its key, under its id: untouched by either.
    const back = attach(tm, registerOf(real));
    expect(codes(back.lastStatus())).toEqual(["attestation_stale"]); // no challenge answered yet
    expect(back.lastStatus()?.routable).toBe(true);
    back.trust.onChallengeResponse(answer(real, back.challenges()[0]!));
    expect(back.lastStatus()).toMatchObject({
      trustLevel: TrustLevel.SELF_SIGNED,
      routable: true,
      reasons: [],
    });
    // The squatter's key is quarantined wherever it goes.
    const elsewhere = attach(tm, registerOf(squatter));
    expect(codes(elsewhere.lastStatus())).toContain("chunk_not_sealed");
  });
});

async function expectEventually(predicate: () => boolean, timeoutMs = 1_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > until) throw new Error("condition not reached in time");
    await sleep(5);
  }
}

describe("quarantine in PostgreSQL: shared by replicas, kept across restarts", () => {
  let server: TestPostgres;
  let db: TestDatabase;
  beforeAll(async () => {
    server = await startTestPostgres();
    db = await createTestDatabase(server.url);
  });
  afterAll(async () => {
    await db?.drop();
    await server?.stop();
  });

  /** A coordinator's trust manager on the shared database (each call: another replica, or a restart). */
  const replica = (over: Partial<TrustManagerOptions> = {}) =>
    manager({ minTrust: TrustLevel.NONE, quarantineStore: new KeyQuarantineStore(db.pool), ...over });
  const hex = (m: Machine) => Buffer.from(m.publicKey).toString("hex");

  /** Registers as SessionManager does: admit() loads the key's quarantine, then open() attaches. */
  async function register(tm: TrustManager, m: Machine): Promise<Attached> {
    const r = registerOf(m);
    await tm.loadQuarantine(tm.verify(r));
    return attach(tm, r);
  }

  /** `m` proves its key on `tm`, then the data path catches it; waits for the quarantine's write. */
  async function caught(tm: TrustManager, m: Machine, code = "usage_mismatch"): Promise<void> {
    const p = await register(tm, m);
    p.trust.onChallengeResponse(answer(m, p.challenges()[0]!));
    expect(p.trust.lastPassedAt).toBeDefined();
    p.trust.markUntrusted(code, "the final usage claims more tokens than were delivered");
    tm.detach(p.handle.id);
    await tm.flush();
  }

  async function stored(m: Machine): Promise<Array<{ code: string; live: boolean }>> {
    const { rows } = await db.pool.query(
      "SELECT code, until > now() AS live FROM key_quarantine WHERE signing_key = $1",
      [hex(m)],
    );
    return rows;
  }

  it("a key quarantined by one replica is quarantined on another, under any machine id, and after restarts", async () => {
    const a = await replica();
    const b = await replica();
    const m = machine();
    // The other replica knew the key as trusted before the finding.
    const before = await register(b, m);
    expect(codes(before.lastStatus())).toEqual(["attestation_stale"]);
    b.detach(before.handle.id);

    await caught(a, m);
    expect(await stored(m)).toEqual([{ code: "usage_mismatch", live: true }]);
    const elsewhere = await register(b, m);
    expect(codes(elsewhere.lastStatus())).toContain("usage_mismatch");
    expect(elsewhere.lastStatus()).toMatchObject({ trustLevel: TrustLevel.NONE, routable: false });
    expect(elsewhere.handle.deRouted).toBe(true);
    b.detach(elsewhere.handle.id);
    const renamed = await register(b, { ...m, machineId: "another-machine-id" });
    expect(codes(renamed.lastStatus())).toContain("usage_mismatch");

    // Every replica restarts: the quarantine is in the database, not in a process.
    a.close();
    b.close();
    const restarted = await replica();
    const after = await register(restarted, m);
    expect(codes(after.lastStatus())).toContain("usage_mismatch");
    expect(after.lastStatus()?.routable).toBe(false);
  });

  it("an expired quarantine holds nowhere, and is pruned", async () => {
    const a = await replica({ quarantineMs: 200 });
    const m = machine();
    await caught(a, m);
    const b = await replica();
    expect(codes((await register(b, m)).lastStatus())).toContain("usage_mismatch");
    await sleep(250);
    b.close();
    const again = await replica();
    expect(codes((await register(again, m)).lastStatus())).toEqual(["attestation_stale"]);
    expect(codes((await register(a, m)).lastStatus())).toEqual(["attestation_stale"]);
    expect(await stored(m)).toEqual([{ code: "usage_mismatch", live: false }]);

    // A row past its time means nothing, and the next finding (of any key) deletes it.
    const old = machine();
    await db.pool.query(
      `INSERT INTO key_quarantine (signing_key, code, message, until)
       VALUES ($1, 'chunk_not_sealed', 'old', now() - interval '1 second')`,
      [hex(old)],
    );
    expect(codes((await register(again, old)).lastStatus())).toEqual(["attestation_stale"]);
    await caught(again, machine());
    expect(await stored(old)).toEqual([]);
    expect(await stored(m)).toEqual([]);
  });

  it("a new finding extends a quarantine and never shortens it", async () => {
    const store = new KeyQuarantineStore(db.pool);
    const m = machine();
    const first = await store.put(hex(m), "chunk_not_sealed", "a plaintext chunk", 3_600_000);
    const shorter = await store.put(hex(m), "usage_mismatch", "inflated usage", 60_000);
    expect(shorter.until).toEqual(first.until);
    expect(shorter.createdAt).toEqual(first.createdAt);
    expect(shorter.code).toBe("usage_mismatch");
    const longer = await store.put(hex(m), "usage_mismatch", "inflated usage", 7_200_000);
    expect(longer.until.getTime()).toBeGreaterThan(first.until.getTime());
    // A replica's own second finding extends it the same way.
    const a = await replica({ quarantineMs: 60_000 });
    await caught(a, m, "bad_signature");
    const now = await store.get(hex(m));
    expect(now).toMatchObject({ code: "bad_signature", until: longer.until });
  });

  it("a lifted quarantine no longer holds on any replica, without telling them", async () => {
    const a = await replica();
    const b = await replica();
    const m = machine();
    await caught(a, m);
    const quarantined = await register(b, m);
    expect(codes(quarantined.lastStatus())).toContain("usage_mismatch");
    b.detach(quarantined.handle.id);

    const store = new KeyQuarantineStore(db.pool);
    const lifted = await store.lift({
      keyHex: hex(m),
      reason: "metering bug, not the provider",
      actor: "ops",
    });
    expect(lifted.quarantine.code).toBe("usage_mismatch");
    expect(lifted.lift).toMatchObject({
      keyHex: hex(m),
      reason: "metering bug, not the provider",
      actor: "ops",
    });
    for (const tm of [a, b]) {
      const back = await register(tm, m);
      expect(codes(back.lastStatus())).toEqual(["attestation_stale"]);
      tm.detach(back.handle.id);
    }
    await expect(store.lift({ keyHex: hex(m), reason: "again", actor: "ops" })).rejects.toThrow(
      /no quarantine holds/,
    );
    const { rows } = await db.pool.query(
      "SELECT code, reason, actor FROM key_quarantine_lifts WHERE signing_key = $1",
      [hex(m)],
    );
    expect(rows).toEqual([
      { code: "usage_mismatch", reason: "metering bug, not the provider", actor: "ops" },
    ]);
  });

  it("stores nothing for a key the session did not prove", async () => {
    const a = await replica();
    const real = machine();
    const replay = await register(a, real);
    replay.trust.markUntrusted("chunk_not_sealed", "a plaintext chunk answered a sealed request");
    a.detach(replay.handle.id);
    await a.flush();
    expect(await stored(real)).toEqual([]);
    const b = await replica();
    expect(codes((await register(b, real)).lastStatus())).toEqual(["attestation_stale"]);
  });

  it("a finding whose write failed still holds on its replica until it expires", async () => {
    const down = Object.assign(Object.create(KeyQuarantineStore.prototype) as KeyQuarantineStore, {
      put: async () => {
        throw new Error("connection refused");
      },
      get: async () => undefined,
    });
    const a = await replica({ quarantineStore: down });
    const m = machine();
    await caught(a, m);
    const again = await register(a, m);
    expect(codes(again.lastStatus())).toContain("usage_mismatch");
  });
});
