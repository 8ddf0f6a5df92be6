import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createSoftwareTpmCa,
  type SoftwareTpm,
  type SoftwareTpmCa,
  SoftwareTpmToolError,
  softwareTpmSupport,
  softwareTpmTestable,
  startSoftwareTpm,
} from "./swtpm.js";

/** The harness itself, against the real swtpm and tpm2-tools: what the TPM tests elsewhere rely on. */

const ZERO_PCR = `0x${"00".repeat(32)}`;

function certificates(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map(
    (block) => new X509Certificate(block),
  );
}

/** Whether the EK certificate chains to the bundle's root through its intermediate. */
function chainsTo(ek: X509Certificate, bundlePem: string): boolean {
  const [root, intermediate] = certificates(bundlePem);
  if (!root || !intermediate) return false;
  return (
    ek.checkIssued(intermediate) &&
    ek.verify(intermediate.publicKey) &&
    intermediate.checkIssued(root) &&
    intermediate.verify(root.publicKey)
  );
}

async function clockInfo(tpm: SoftwareTpm): Promise<{ resetCount: number; safe: string }> {
  const { stdout } = await tpm.tool(["tpm2_readclock"]);
  const resetCount = Number(/reset_count:\s*(\d+)/.exec(stdout)?.[1]);
  const safe = /safe:\s*(\w+)/.exec(stdout)?.[1] ?? "";
  return { resetCount, safe };
}

async function pcr0(tpm: SoftwareTpm): Promise<string> {
  const { stdout } = await tpm.tool(["tpm2_pcrread", "sha256:0"]);
  return /0\s*:\s*(0x[0-9A-Fa-f]+)/.exec(stdout)?.[1]?.toLowerCase() ?? "";
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

it("reports whether the tools are installed, and a reason when not", () => {
  const support = softwareTpmSupport();
  expect(support.available).toBe(softwareTpmTestable());
  if (!support.available) expect(support.reason).toMatch(/not installed/);
});

describe.skipIf(!softwareTpmTestable())("software TPM", () => {
  let tpm: SoftwareTpm;
  let sibling: SoftwareTpm;
  let foreignCa: SoftwareTpmCa;
  let foreign: SoftwareTpm;

  beforeAll(async () => {
    tpm = await startSoftwareTpm();
    [sibling, foreignCa] = await Promise.all([startSoftwareTpm({ ca: tpm.ca }), createSoftwareTpmCa()]);
    foreign = await startSoftwareTpm({ ca: foreignCa });
  });

  afterAll(async () => {
    await Promise.all([tpm?.stop(), sibling?.stop(), foreign?.stop()]);
    await foreignCa?.remove();
  });

  it("is manufactured: both EKs persistent, their certificates in NV chain to the CA bundle", async () => {
    expect(tpm.tcti).toMatch(/^swtpm:host=127\.0\.0\.1,port=\d+$/);
    const { stdout } = await tpm.tool(["tpm2_getcap", "handles-persistent"]);
    expect(stdout).toContain("0x81010001");
    expect(stdout).toContain("0x81010016");
    expect(certificates(tpm.ca.bundlePem)).toHaveLength(2);
    const rsa = new X509Certificate(await tpm.readEkCertificate("rsa"));
    expect(rsa.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(chainsTo(rsa, tpm.ca.bundlePem)).toBe(true);
    const ecc = new X509Certificate(await tpm.readEkCertificate("ecc"));
    expect(ecc.publicKey.asymmetricKeyDetails?.namedCurve).toBe("secp384r1");
    expect(chainsTo(ecc, tpm.ca.bundlePem)).toBe(true);
  });

  it("shares a CA between TPMs set up with it; another CA is foreign", async () => {
    expect(sibling.tcti).not.toBe(tpm.tcti);
    const siblingEk = new X509Certificate(await sibling.readEkCertificate());
    const ownEk = new X509Certificate(await tpm.readEkCertificate());
    expect(siblingEk.publicKey.equals(ownEk.publicKey)).toBe(false);
    expect(chainsTo(siblingEk, tpm.ca.bundlePem)).toBe(true);
    const foreignEk = new X509Certificate(await foreign.readEkCertificate());
    expect(chainsTo(foreignEk, foreign.ca.bundlePem)).toBe(true);
    expect(chainsTo(foreignEk, tpm.ca.bundlePem)).toBe(false);
  });

  it("feeds input to a tool and rejects with what the tool said", async () => {
    const { stdout } = await tpm.tool(["tpm2_hash", "-g", "sha256", "--hex", "-C", "e"], {
      input: Buffer.from("abc"),
    });
    expect(stdout.trim()).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const failure = await tpm.tool(["tpm2_nvread", "0x01c000ff"]).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(SoftwareTpmToolError);
    expect((failure as SoftwareTpmToolError).message).toMatch(
      /tpm2_nvread 0x01c000ff failed \(exit \d+\): .+/,
    );
    expect((failure as SoftwareTpmToolError).stderr).toMatch(/ERROR/);
  });

  it("flushes what the tools leave loaded (swtpm holds three transient objects)", async () => {
    for (let i = 0; i < 4; i++) {
      await tpm.tool(["tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", `primary${i}.ctx`]);
      await tpm.flush();
    }
    expect((await tpm.tool(["tpm2_getcap", "handles-transient"])).stdout.trim()).toBe("");
    // Without flushing, the fourth fails: the flush above is what made room.
    const loaded = [];
    for (let i = 0; i < 4; i++) {
      loaded.push(
        await tpm
          .tool(["tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", `held${i}.ctx`])
          .then(() => "ok")
          .catch(() => "full"),
      );
    }
    expect(loaded).toContain("full");
    await tpm.flush();
    // flushObjects: each command's objects go as soon as it is done, even when it failed.
    for (let i = 0; i < 4; i++) {
      await tpm.tool(["tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", `flushed${i}.ctx`], {
        flushObjects: true,
      });
    }
    // The primary is created (and loaded), then saving its context fails.
    const unsaved = ["tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", "/nonexistent/primary.ctx"];
    await expect(tpm.tool(unsaved, { flushObjects: true })).rejects.toThrow(/Failed saving object context/);
    expect((await tpm.tool(["tpm2_getcap", "handles-transient"])).stdout.trim()).toBe("");
  });

  it("restarts: PCRs reset, resetCount increases, persistent handles and the TCTI stay", async () => {
    const tcti = tpm.tcti;
    await tpm.tool(["tpm2_pcrextend", `0:sha256=${"11".repeat(32)}`]);
    expect(await pcr0(tpm)).not.toBe(ZERO_PCR);
    const before = await clockInfo(tpm);
    await tpm.restart();
    expect(tpm.tcti).toBe(tcti);
    expect(await pcr0(tpm)).toBe(ZERO_PCR);
    const after = await clockInfo(tpm);
    expect(after.resetCount).toBe(before.resetCount + 1);
    expect(after.safe).toBe("yes");
    expect((await tpm.tool(["tpm2_getcap", "handles-persistent"])).stdout).toContain("0x81010001");
    await tpm.restart({ orderly: false });
    expect((await clockInfo(tpm)).resetCount).toBe(before.resetCount + 2);
  });

  it("says what swtpm said when it cannot start", async () => {
    const broken = await startSoftwareTpm({ ca: tpm.ca });
    try {
      await rm(broken.stateDir, { recursive: true });
      await expect(broken.restart({ orderly: false })).rejects.toThrow(
        /swtpm did not start on port \d+: exited: swtpm: .*lockfile/,
      );
    } finally {
      await broken.stop();
    }
  });

  it("stops for good, idempotently, and removes its directories", async () => {
    const extra = await startSoftwareTpm({ ca: tpm.ca });
    const port = Number(extra.tcti.split("port=")[1]);
    expect(await accepts(port)).toBe(true);
    await Promise.all([extra.stop(), extra.stop()]);
    await extra.stop();
    expect(await accepts(port)).toBe(false);
    expect(await accepts(port + 1)).toBe(false);
    expect(existsSync(extra.stateDir)).toBe(false);
    expect(existsSync(extra.workDir)).toBe(false);
    expect(existsSync(tpm.ca.dir)).toBe(true);
    await expect(extra.tool(["tpm2_getcap", "handles-persistent"])).rejects.toThrow(/not running/);
  });
});

/** Polls until the port refuses connections (the process behind it is gone), for up to `ms`. */
async function refusedWithin(port: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await accepts(port))) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

describe.skipIf(!softwareTpmTestable())("a test process that dies without stop()", () => {
  let dir: string;

  // The harness compiled on its own (it imports only Node built-ins) and run in a child Node process
  // that starts a TPM, prints where it is, and dies.
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "darkbloom-swtpm-test-"));
    const source = await readFile(new URL("./swtpm.ts", import.meta.url), "utf8");
    const { outputText } = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    await writeFile(join(dir, "swtpm.mjs"), outputText);
    await writeFile(
      join(dir, "child.mjs"),
      `import { startSoftwareTpm } from "./swtpm.mjs";
const tpm = await startSoftwareTpm();
process.stdout.write(JSON.stringify({ tcti: tpm.tcti, stateDir: tpm.stateDir }) + "\\n");
if (process.argv[2] === "SIGKILL") process.kill(process.pid, "SIGKILL");
else process.exit(1);
`,
    );
  });

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function dieAfterStart(how: "exit" | "SIGKILL"): Promise<{ port: number; stateDir: string }> {
    const child = spawn(process.execPath, [join(dir, "child.mjs"), how], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
    });
    await new Promise((resolve) => child.once("close", resolve));
    const { tcti, stateDir } = JSON.parse(out) as { tcti: string; stateDir: string };
    return { port: Number(tcti.split("port=")[1]), stateDir };
  }

  it("kills swtpm and removes the directories on exit", async () => {
    const { port, stateDir } = await dieAfterStart("exit");
    expect(await refusedWithin(port, 2_000)).toBe(true);
    expect(existsSync(stateDir)).toBe(false);
  });

  it("kills swtpm when the process is killed (SIGKILL runs no exit handler)", async () => {
    const { port, stateDir } = await dieAfterStart("SIGKILL");
    expect(await refusedWithin(port, 2_000)).toBe(true);
    await rm(join(stateDir, ".."), { recursive: true, force: true });
  });
});

it("says when a CA has no certificates yet", async () => {
  const ca = await createSoftwareTpmCa();
  try {
    expect(() => ca.bundlePem).toThrow(/no certificates yet/);
  } finally {
    await ca.remove();
  }
  expect(existsSync(ca.dir)).toBe(false);
});
