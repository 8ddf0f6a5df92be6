import { createPrivateKey } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  postJson,
  startTestCoordinator,
  startTestPostgres,
  type TestCoordinator,
  type TestPostgres,
  waitFor,
} from "@darkbloom/coordinator/testing";
import { rawP256PublicKey } from "@darkbloom/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CliDeps } from "../cli/context.js";
import { runCli } from "../cli/program.js";
import { testIo } from "../cli/test-io.js";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import { daemonBinarySha256 } from "./binary-hash.js";

/**
 * The real daemon (`darkbloom serve`, its software key file, attestation blob and challenge answers)
 * against a coordinator that routes to self_signed providers only.
 */
let pg: TestPostgres;
let t: TestCoordinator;
let home: string;
let dataDir: string;

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500, minTrustLevel: "self_signed" });
  home = await mkdtemp(join(tmpdir(), "darkbloom-attest-"));
  dataDir = join(home, "data");
  const synth = testIo();
  expect(
    await runCli(["models", "synth", "tiny", "--data-dir", dataDir], synth.io, { defaults: { home } }),
  ).toBe(0);
});
afterAll(async () => {
  await t?.close();
  await pg?.stop();
  await rm(home, { recursive: true, force: true });
});

function deps(engine: ScriptedEngine): Partial<CliDeps> {
  return {
    defaults: { home },
    cwd: home,
    createEngine: async () => engine,
    daemon: { link: { backoff: { initialMs: 50, maxMs: 200 } } },
  };
}

const serveArgs = () => [
  ...["serve", "--data-dir", dataDir, "--coordinator", t.url, "--log-level", "silent"],
  "--allow-cpu", // the scripted engine computes on the CPU, as it says
];

// biome-ignore lint/suspicious/noExplicitAny: assertions check the shape
type Json = any;

/** Polls GET /v1/providers/attestation until its first entry satisfies `done`. */
async function attestationOfFirstProvider(done: (entry: Json) => boolean): Promise<Json> {
  const until = Date.now() + 10_000;
  for (;;) {
    const body: Json = await (await fetch(`${t.url}/v1/providers/attestation`)).json();
    if (done(body.data[0])) return body.data[0];
    if (Date.now() > until) throw new Error(`not reached: ${JSON.stringify(body.data[0])}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("the daemon's attestation", () => {
  it("attests with its software key, passes the registration challenge and is routed to", async () => {
    const engine = new ScriptedEngine({ tokensPerGeneration: 3 });
    const io = testIo();
    const serving = runCli(serveArgs(), io.io, deps(engine));
    try {
      await waitFor(() => t.coordinator.registry.size === 1, 10_000, "the daemon to register");
      const keyPath = join(dataDir, "keys", "attestation.pem");
      expect((await stat(join(dataDir, "keys"))).mode & 0o777).toBe(0o700);
      expect((await stat(keyPath)).mode & 0o777).toBe(0o600);
      const publicKey = rawP256PublicKey(createPrivateKey(await readFile(keyPath, "utf8")));

      const entry = await attestationOfFirstProvider((e) => e?.attested === true);
      expect(entry).toMatchObject({
        trust_level: "self_signed",
        routable: true,
        signer: "software",
        public_key: Buffer.from(publicKey).toString("base64"),
        reasons: [],
      });
      expect(entry.attestation.document).toMatchObject({
        machine_id: (await readFile(join(dataDir, "machine-id"), "utf8")).trim(),
        binary_sha256: await daemonBinarySha256(),
        key_persistent: true,
        sip: process.platform === "linux" ? "not_applicable" : expect.any(String),
      });
      // The device it serves on, as the engine reported it (claimed, beside what is proven).
      expect(entry.hardware).toMatchObject({ accelerator: "cpu", gpus: [], os: process.platform });

      const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
        model: "tiny",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 3,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("x-provider-trust-level")).toBe("self_signed");
      expect(res.headers.get("x-provider-attested")).toBe("true");
      await res.text();
    } finally {
      io.signal("SIGTERM");
      expect(await serving).toBe(0);
    }
    await waitFor(() => t.coordinator.registry.size === 0, 5_000, "the provider to leave");
  });

  it("refuses to start when its key directory is readable by others, saying how to fix it", async () => {
    const keys = join(dataDir, "keys");
    await chmod(keys, 0o755);
    try {
      const engine = new ScriptedEngine();
      const io = testIo();
      expect(await runCli(serveArgs(), io.io, deps(engine))).toBe(1);
      expect(io.stderr()).toBe(
        `darkbloom: the attestation key directory ${keys} is accessible to group or others (mode 0755); run: chmod 700 ${keys}\n`,
      );
      expect(engine.closed).toBe(true);
      await expect(stat(join(dataDir, "darkbloom.pid"))).rejects.toThrow();
    } finally {
      await chmod(keys, 0o700);
    }
  });
});
