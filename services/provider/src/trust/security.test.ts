import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtemp, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  postJson,
  startTestCoordinator,
  startTestPostgres,
  TEST_ADMIN_KEY,
  type TestCoordinator,
  type TestPostgres,
  waitFor,
} from "@darkbloom/coordinator/testing";
import { encodeChallengeStatus } from "@darkbloom/protocol";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import type { AttestationChallenge } from "@darkbloom/protocol/provider/v1";
import { type ScriptedAttestor, ScriptedProvider, type ScriptedProviderOptions } from "@darkbloom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../cli/program.js";
import { testIo } from "../cli/test-io.js";
import { buildBundle, serveFiles } from "../update/update-test-support.js";
import { type AttestationResponseInit, Attestor, answerChallenge } from "./attestor.js";
import type { SecurityPosture } from "./platform-state.js";
import type { AttestationSigner } from "./signer.js";
import { SoftwareSigner } from "./software-signer.js";

/**
 * The control path's security, end to end: a real coordinator on PostgreSQL, providers over real
 * Connect streams (scripted providers whose attestation and challenge answers come from the daemon's
 * own signer and attestor code, bent by each test the way an attacker or a broken machine would).
 */

const BINARY = "b1".repeat(32);
/** Fast challenges so that strikes and expiries happen within a test. */
const TRUST_CONFIG = {
  minTrustLevel: "self_signed" as const,
  challengeIntervalMs: 250,
  challengeTimeoutMs: 150,
  challengeRetryMs: 50,
};

type AnswerMode =
  | "honest"
  | "silent"
  | "sip_off"
  | "bad_status"
  | "wrong_model_hash"
  | "replay"
  | "other_key";

interface AttestorOptions {
  signer?: AttestationSigner;
  answer?: AnswerMode;
  posture?: SecurityPosture;
  binarySha256?: string;
  /** Changes one byte of the signed blob. */
  tamperBlob?: boolean;
  /** Signs the blob with this key while presenting the signer's public key. */
  signBlobWith?: AttestationSigner;
  /** Puts this X25519 key in the blob instead of the registered one. */
  blobEncryptionKey?: Uint8Array;
}

/** A ScriptedAttestor backed by the daemon's Attestor (real canonical blob, real signatures). */
/** The private key behind each test signer, so that the scripted provider signs responses with it. */
const privateKeys = new WeakMap<AttestationSigner, KeyObject>();

/** A persistent-kind software key (as the daemon's key file gives), held in memory for the test. */
function newSigner(): SoftwareSigner {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const signer = SoftwareSigner.fromPem(privateKey.export({ format: "pem", type: "pkcs8" }).toString());
  privateKeys.set(signer, privateKey);
  return signer;
}

function attestor(
  o: AttestorOptions = {},
): ScriptedAttestor & { answered: number; signer: AttestationSigner } {
  const signer = o.signer ?? newSigner();
  let real: Attestor | undefined;
  let previous: AttestationResponseInit | undefined;
  const state = {
    signer,
    answered: 0,
    async attestation(init: { machineId: string; daemonVersion: string; encryptionPublicKey: Uint8Array }) {
      real = await Attestor.create({
        signer,
        machineId: init.machineId,
        daemonVersion: init.daemonVersion,
        chip: "scripted",
        machineModel: "scripted",
        os: "linux",
        osVersion: "6.1",
        encryptionPublicKey: o.blobEncryptionKey ?? init.encryptionPublicKey,
        binarySha256: o.binarySha256 ?? BINARY,
        serialSha256: "",
        posture: o.posture ?? { sip: "not_applicable", secureBoot: "enabled" },
      });
      const att = { ...real.attestation };
      const blob = new Uint8Array(real.blob);
      if (o.tamperBlob) {
        const text = new TextDecoder().decode(blob).replace('"os":"linux"', '"os":"linus"');
        att.blob = new TextEncoder().encode(text);
      }
      if (o.signBlobWith) att.signature = await o.signBlobWith.sign(blob);
      return att;
    },
    async answer(challenge: AttestationChallenge, models: Array<{ id: string; weightSha256: string }>) {
      if (!real) throw new Error("no attestation yet");
      const loaded = models.map((m) => ({ id: m.id, sha256: m.weightSha256 }));
      const mode = o.answer ?? "honest";
      state.answered++;
      switch (mode) {
        case "silent":
          return undefined;
        case "replay":
          if (previous) return previous;
          previous = await real.respond(challenge, loaded);
          return previous;
        case "sip_off":
          return answerChallenge(signer, challenge, status({ sip: "disabled" }, loaded));
        case "wrong_model_hash":
          return answerChallenge(
            signer,
            challenge,
            status(
              {},
              loaded.map((m) => ({ ...m, sha256: "0f".repeat(32) })),
            ),
          );
        case "bad_status":
          return answerChallenge(signer, challenge, new TextEncoder().encode('{"sip": "enabled"}'));
        case "other_key":
          return answerChallenge(newSigner(), challenge, await real.status(loaded));
        default:
          return real.respond(challenge, loaded);
      }
    },
  };
  const status = (posture: Partial<{ sip: "disabled" }>, loaded: Array<{ id: string; sha256: string }>) =>
    encodeChallengeStatus({
      binary_sha256: o.binarySha256 ?? BINARY,
      models: loaded.map((m) => ({ id: m.id, weight_sha256: m.sha256 })),
      secure_boot: "enabled",
      sip: posture.sip ?? "not_applicable",
    });
  return state;
}

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startTestPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

let t: TestCoordinator | undefined;
const providers: ScriptedProvider[] = [];
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop()));
  await t?.close();
  t = undefined;
});

async function coordinator(over: Parameters<typeof startTestCoordinator>[1] = {}): Promise<TestCoordinator> {
  t = await startTestCoordinator(pg.url, { ...TRUST_CONFIG, ...over });
  return t;
}

async function provider(
  c: TestCoordinator,
  att: (ScriptedAttestor & { signer: AttestationSigner }) | undefined,
  over: Partial<ScriptedProviderOptions> = {},
): Promise<ScriptedProvider> {
  // Responses are signed with the attestation key, as the daemon does.
  const responseSigningKey = att ? privateKeys.get(att.signer) : undefined;
  const p = new ScriptedProvider({
    baseUrl: c.url,
    models: [{ id: "m" }],
    ...(att ? { attestor: att } : {}),
    ...(responseSigningKey ? { responseSigningKey } : {}),
    ...over,
  });
  providers.push(p);
  await p.start();
  return p;
}

interface PublishedAttestation {
  provider_id: string;
  trust_level: string;
  routable: boolean;
  attested: boolean;
  reasons: Array<{ code: string; message: string }>;
  signer: string | null;
  public_key: string | null;
  attestation: {
    blob: string;
    signature: string;
    verified: boolean;
    document: Record<string, unknown> | null;
  } | null;
  last_challenge: { result: string; reason: { code: string } | null } | null;
}

async function published(c: TestCoordinator, providerId: string | undefined): Promise<PublishedAttestation> {
  const res = await fetch(`${c.url}/v1/providers/attestation`);
  expect(res.status).toBe(200);
  const body = (await res.json()) as { object: string; data: PublishedAttestation[] };
  const entry = body.data.find((d) => d.provider_id === providerId);
  if (!entry) throw new Error(`provider ${providerId} is not published`);
  return entry;
}

async function eventually(
  c: TestCoordinator,
  p: ScriptedProvider,
  check: (a: PublishedAttestation) => boolean,
) {
  const until = Date.now() + 10_000;
  let last: PublishedAttestation | undefined;
  while (Date.now() < until) {
    last = await published(c, p.providerId);
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`condition not reached; last: ${JSON.stringify(last)}`);
}

const codes = (a: PublishedAttestation) => a.reasons.map((r) => r.code);

function admin(c: TestCoordinator) {
  return createClient(
    AdminService,
    createConnectTransport({
      baseUrl: c.url,
      httpVersion: "1.1",
      interceptors: [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${TEST_ADMIN_KEY}`);
          return next(req);
        },
      ],
    }),
  );
}

const chat = (c: TestCoordinator, headers: Record<string, string> = {}) =>
  postJson(
    c.url,
    "/v1/chat/completions",
    c.apiKey,
    { model: "m", messages: [{ role: "user", content: "hi" }], max_tokens: 4 },
    { headers: { "content-type": "application/json", authorization: `Bearer ${c.apiKey}`, ...headers } },
  );

describe("routing gate", () => {
  it("with minimum trust self_signed, an unattested provider gets no traffic and an attested one does", async () => {
    const c = await coordinator();
    const unattested = await provider(c, undefined);
    const attested = await provider(c, attestor());
    await eventually(c, attested, (a) => a.attested && a.routable);
    const plain = await published(c, unattested.providerId);
    expect(plain).toMatchObject({ trust_level: "none", routable: false, attestation: null, signer: null });
    expect(codes(plain)).toEqual(["no_attestation"]);
    for (let i = 0; i < 4; i++) {
      const res = await chat(c);
      expect(res.status).toBe(200);
      expect(res.headers.get("x-provider-id")).toBe(attested.providerId);
      expect(res.headers.get("x-provider-trust-level")).toBe("self_signed");
      expect(res.headers.get("x-provider-attested")).toBe("true");
      await res.text();
    }
    expect(unattested.received).toHaveLength(0);
    // A request asking for hardware trust finds nobody.
    const hardware = await chat(c, { "x-darkbloom-min-trust-level": "hardware" });
    expect(hardware.status).toBe(503);
    await hardware.text();
    // The provider was told how it is judged.
    expect(attested.runtimeStatuses.at(-1)).toMatchObject({ routable: true, reasons: [] });
    expect(unattested.runtimeStatuses.at(-1)?.reasons.map((r) => r.code)).toEqual(["no_attestation"]);
    await attested.stop();
    const none = await chat(c);
    expect(none.status).toBe(503);
    await none.text();
    expect(unattested.received).toHaveLength(0);
  });

  it("publishes every provider's attestation: key, blob, signature, document and last challenge", async () => {
    const c = await coordinator();
    const signer = newSigner();
    const p = await provider(c, attestor({ signer }));
    const a = await eventually(c, p, (x) => x.last_challenge?.result === "passed");
    expect(a).toMatchObject({
      trust_level: "self_signed",
      routable: true,
      attested: true,
      signer: "software",
    });
    expect(a.public_key).toBe(Buffer.from(signer.publicKey()).toString("base64"));
    expect(a.attestation?.verified).toBe(true);
    expect(a.attestation?.document).toMatchObject({
      binary_sha256: BINARY,
      machine_id: p.machineId,
      encryption_public_key: Buffer.from(p.encryptionPublicKey!).toString("base64"),
      key_persistent: true,
      signer: "software",
    });
    expect(codes(a)).toEqual([]);
    const blob = Buffer.from(a.attestation!.blob, "base64").toString("utf8");
    expect(JSON.parse(blob).format).toBe("darkbloom.attestation.v1");
  });
});

describe("attestation at registration", () => {
  it("a tampered blob is refused: bad_signature, trust none, not routed", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor({ tamperBlob: true }));
    const a = await published(c, p.providerId);
    expect(a).toMatchObject({ trust_level: "none", routable: false, last_challenge: null });
    expect(a.attestation?.verified).toBe(false);
    expect(codes(a)).toEqual(["bad_signature"]);
    expect(p.challenges).toHaveLength(0); // no verified key, nothing to challenge
  });

  it("a blob signed by another key than the one presented is refused (bad_signature)", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor({ signBlobWith: newSigner() }));
    expect(codes(await published(c, p.providerId))).toEqual(["bad_signature"]);
  });

  it("a blob whose X25519 key is not the registered one is refused (key_mismatch)", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor({ blobEncryptionKey: new Uint8Array(32).fill(9) }));
    const a = await published(c, p.providerId);
    expect(codes(a)).toEqual(["key_mismatch"]);
    expect(a.trust_level).toBe("none");
  });

  it("two live providers presenting one signing key are both untrusted (duplicate_key)", async () => {
    const c = await coordinator();
    const shared = newSigner();
    const first = await provider(c, attestor({ signer: shared }));
    await eventually(c, first, (a) => a.routable);
    const second = await provider(c, attestor({ signer: shared }));
    for (const p of [first, second]) {
      const a = await eventually(c, p, (x) => codes(x).includes("duplicate_key"));
      expect(a).toMatchObject({ trust_level: "none", routable: false });
    }
    expect(first.runtimeStatuses.at(-1)?.reasons.map((r) => r.code)).toContain("duplicate_key");
  });
});

describe("machine id takeover", () => {
  it("an attested session is replaced only by a session that proves its signing key", async () => {
    const c = await coordinator();
    const signer = newSigner();
    const machineId = "machine-held";
    const holder = await provider(c, attestor({ signer }), { machineId });
    await eventually(c, holder, (a) => a.attested && a.routable);

    // Without an attestation, or with another key: refused at once (the machine id is bound to the
    // holder's key); the holder keeps serving.
    await expect(provider(c, undefined, { machineId })).rejects.toThrow(
      /machine_id machine-held is bound to an attestation signing key/,
    );
    await expect(provider(c, attestor(), { machineId })).rejects.toThrow(
      /machine_id machine-held is bound to another attestation signing key/,
    );

    // The holder's key and attestation (both public) presented by a session that cannot sign with
    // the key: it waits as a contender, fails its challenges, and never displaces the holder.
    const impostor = await provider(c, attestor({ signer, answer: "other_key" }), { machineId });
    await eventually(c, impostor, (a) => a.last_challenge?.result === "failed");
    await new Promise((r) => setTimeout(r, 400)); // further challenge rounds
    expect(await published(c, holder.providerId)).toMatchObject({ routable: true, attested: true });
    for (let i = 0; i < 3; i++) {
      const res = await chat(c);
      expect(res.headers.get("x-provider-id")).toBe(holder.providerId);
      await res.text();
    }
    expect(impostor.received).toHaveLength(0);

    // The machine itself reconnecting (its old stream half-open) replaces the old session as soon as
    // it passes a challenge with its key.
    const again = await provider(c, attestor({ signer }), { machineId });
    await eventually(c, again, (a) => a.attested && a.routable);
    await expect
      .poll(() => published(c, holder.providerId).catch((e: Error) => e.message))
      .toMatch(/not published/);
    const res = await chat(c);
    expect(res.headers.get("x-provider-id")).toBe(again.providerId);
    await res.text();
  });
});

describe("challenges", () => {
  it("a replayed answer (an already answered nonce) makes the provider untrusted (replayed_nonce)", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor({ answer: "replay" }));
    const a = await eventually(c, p, (x) => codes(x).includes("replayed_nonce"));
    expect(a).toMatchObject({ trust_level: "none", routable: false });
    expect(p.challenges.length).toBeGreaterThanOrEqual(2);
  });

  it("an unanswered challenge expires; after three in a row the provider is untrusted (challenge_expired)", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor({ answer: "silent" }));
    const first = await eventually(c, p, (x) => x.last_challenge?.result === "expired");
    expect(first.routable).toBe(false);
    const a = await eventually(c, p, (x) => codes(x).includes("challenge_expired"));
    expect(a.trust_level).toBe("none");
    expect(p.challenges.length).toBeGreaterThanOrEqual(3);
  });

  it("three failed answers in a row (an invalid status document) make the provider untrusted", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor({ answer: "bad_status" }));
    const a = await eventually(c, p, (x) => codes(x).includes("challenge_failed"));
    expect(a.trust_level).toBe("none");
    expect(a.last_challenge?.result).toBe("failed");
  });

  it("an answer signed by another key is a bad signature", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor({ answer: "other_key" }));
    const a = await eventually(c, p, (x) => codes(x).includes("bad_signature"));
    expect(a).toMatchObject({ trust_level: "none", routable: false });
  });

  it("SIP reported off in a challenge makes the provider untrusted at once", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor({ answer: "sip_off" }));
    const a = await eventually(c, p, (x) => codes(x).includes("sip_disabled"));
    expect(a).toMatchObject({ trust_level: "none", routable: false });
    expect(p.runtimeStatuses.at(-1)?.reasons.map((r) => r.code)).toContain("sip_disabled");
  });

  it("a loaded model whose hash is not the registered weight hash makes the provider untrusted", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor({ answer: "wrong_model_hash" }));
    const a = await eventually(c, p, (x) => codes(x).includes("model_hash_mismatch"));
    expect(a.trust_level).toBe("none");
  });
});

describe("releases", () => {
  it("an unknown binary hash is untrusted once releases form an allowlist; allowing it re-checks the fleet", async () => {
    const c = await coordinator();
    const p = await provider(c, attestor());
    await eventually(c, p, (a) => a.routable);
    const client = admin(c);
    await client.createRelease({
      release: {
        version: "1.0.0",
        platform: "linux-x64",
        binarySha256: "0a".repeat(32),
        bundleSha256: "0b".repeat(32),
        url: "https://releases.example.com/1.0.0.tar.gz",
        active: true,
      },
    });
    const a = await eventually(c, p, (x) => codes(x).includes("unknown_binary"));
    expect(a).toMatchObject({ trust_level: "none", routable: false });
    const refused = await chat(c);
    expect(refused.status).toBe(503);
    await refused.text();
    await client.createRelease({
      release: {
        version: "0.0.0-test",
        platform: "linux-x64",
        binarySha256: BINARY,
        bundleSha256: "0c".repeat(32),
        url: "https://releases.example.com/0.0.0-test.tar.gz",
        active: true,
      },
    });
    await eventually(c, p, (x) => x.routable && x.trust_level === "self_signed");
    // Deactivating it removes it from the allowlist again.
    await client.setReleaseActive({ version: "0.0.0-test", platform: "linux-x64", active: false });
    await eventually(c, p, (x) => codes(x).includes("unknown_binary"));
  });

  it("a daemon below the minimum provider version is de-routed and told why", async () => {
    const c = await coordinator({ minTrustLevel: "none" });
    const p = await provider(c, undefined, { daemonVersion: "0.9.0" });
    expect((await chat(c)).status).toBe(200);
    await admin(c).createRelease({
      release: {
        version: "1.2.0",
        platform: "darwin-arm64",
        binarySha256: "0a".repeat(32),
        bundleSha256: "0b".repeat(32),
        url: "https://releases.example.com/1.2.0.tar.gz",
        minProviderVersion: "1.0.0",
        active: true,
      },
    });
    const a = await eventually(c, p, (x) => codes(x).includes("version_below_minimum"));
    expect(a.routable).toBe(false);
    await waitFor(
      () => p.runtimeStatuses.at(-1)?.reasons.some((r) => r.code === "version_below_minimum") === true,
      5_000,
      "RuntimeStatus naming version_below_minimum",
    );
    const refused = await chat(c);
    expect(refused.status).toBe(503);
    await refused.text();
    const version = await (await fetch(`${c.url}/api/version`)).json();
    expect(version).toEqual({ version: "0.1.0", protocol_version: 1, min_provider_version: "1.0.0" });
    const newer = await provider(c, undefined, { daemonVersion: "1.0.0" });
    expect((await published(c, newer.providerId)).routable).toBe(true);
  });

  it("darkbloom update installs the release the coordinator publishes for this platform", async () => {
    const c = await coordinator();
    const bundle = await buildBundle("0.2.0");
    const host = await serveFiles(new Map([["/darkbloom-0.2.0.tar.gz", bundle.bytes]]));
    const home = await mkdtemp(join(tmpdir(), "darkbloom-update-e2e-"));
    try {
      await admin(c).createRelease({
        release: {
          version: "0.2.0",
          platform: "linux-x64",
          binarySha256: bundle.binarySha256,
          bundleSha256: bundle.bundleSha256,
          url: `${host.url}/darkbloom-0.2.0.tar.gz`,
          active: true,
        },
      });
      const io = testIo();
      const dataDir = join(home, "data");
      const code = await runCli(["update", "--coordinator", c.url, "--data-dir", dataDir], io.io, {
        defaults: { home },
        cwd: home,
        platform: "linux",
        arch: "x64",
      });
      expect(io.stderr()).toBe("");
      expect(code).toBe(0);
      expect(await readlink(join(dataDir, "releases", "current"))).toBe("0.2.0");
    } finally {
      await host.close();
      await rm(home, { recursive: true, force: true });
    }
  });

  it("GET /v1/releases/latest gives the newest active release of a platform by version", async () => {
    const c = await coordinator();
    const client = admin(c);
    const release = (version: string, active = true) => ({
      release: {
        version,
        platform: "linux-x64",
        binarySha256: "0a".repeat(32),
        bundleSha256: "0b".repeat(32),
        url: `https://releases.example.com/${version}.tar.gz`,
        active,
      },
    });
    const missing = await fetch(`${c.url}/v1/releases/latest?platform=linux-x64`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: unknown }).error).toMatchObject({
      code: "release_not_found",
      param: "platform",
    });
    await client.createRelease(release("0.10.0"));
    await client.createRelease(release("0.9.0"));
    await client.createRelease(release("1.0.0-rc.1"));
    await client.createRelease(release("2.0.0", false));
    const res = await fetch(`${c.url}/v1/releases/latest?platform=linux-x64`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      version: "1.0.0-rc.1",
      platform: "linux-x64",
      bundle_sha256: "0b".repeat(32),
      binary_sha256: "0a".repeat(32),
      url: "https://releases.example.com/1.0.0-rc.1.tar.gz",
    });
    const bad = await fetch(`${c.url}/v1/releases/latest`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: unknown }).error).toMatchObject({
      code: "missing_required_parameter",
      param: "platform",
    });
  });
});
