import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

/**
 * A software TPM 2.0 (swtpm) manufactured like a real one (an endorsement key with a certificate from
 * a local EK CA in NV), driven by the real tpm2-tools: what the TPM-bound provider keys and the
 * coordinator's TPM evidence checks are tested against.
 */

/** A local EK CA (swtpm_localca): a root and an intermediate that issues the EK certificates. */
export interface SoftwareTpmCa {
  dir: string;
  /** PEM bundle: root + intermediate, what a coordinator configures as EK CA roots. */
  readonly bundlePem: string;
  /** Removes the directory when createSoftwareTpmCa() made it; keeps a directory the caller named. */
  remove(): Promise<void>;
}

export interface SoftwareTpm {
  /** "swtpm:host=127.0.0.1,port=N": the TCTI reaches the control channel at port N+1 by itself. */
  tcti: string;
  ca: SoftwareTpmCa;
  stateDir: string;
  /** A scratch directory, removed by stop(): the default working directory of tool(). */
  workDir: string;
  /**
   * Runs a tpm2-tools command (e.g. ["tpm2_pcrextend", "0:sha256=…"]) against this TPM; rejects with
   * stderr on failure. `flushObjects` flushes the transient objects afterwards, failed or not, as a
   * resource manager would between clients (saved sessions stay, for the next command to use).
   */
  tool(args: string[], options?: ToolOptions): Promise<{ stdout: string }>;
  /**
   * Flushes every transient object and session. There is no resource manager: what a tool loads
   * stays loaded, and swtpm holds only three transient objects.
   */
  flush(): Promise<void>;
  /** The EK certificate (DER) swtpm_setup stored in NV: RSA 2048 at 0x01c00002, ECC P-384 at 0x01c00016. */
  readEkCertificate(algorithm?: "rsa" | "ecc"): Promise<Uint8Array>;
  /**
   * Power-cycles the TPM (stop swtpm and start it again on the same state, startup-clear): PCRs reset,
   * resetCount increases, persistent handles stay. `orderly` (default true) sends TPM2_Shutdown(CLEAR)
   * first, as an operating system does on reboot; false is a power loss.
   */
  restart(options?: { orderly?: boolean }): Promise<void>;
  /** Idempotent; kills swtpm, removes the temporary directories it created. */
  stop(): Promise<void>;
}

export interface ToolOptions {
  /** Relative paths resolve here; default workDir. */
  cwd?: string;
  /** The tool's stdin. */
  input?: Uint8Array;
  flushObjects?: boolean;
}

/** A tpm2-tools command that failed; `stderr` holds what the tool said. */
export class SoftwareTpmToolError extends Error {
  override readonly name = "SoftwareTpmToolError";
  constructor(
    message: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(message);
  }
}

const SWTPM_TOOLS = ["swtpm", "swtpm_setup", "swtpm_localca"];
/** The tpm2-tools this harness runs itself; tests need more, but these come from the same package. */
const TPM2_TOOLS = ["tpm2_nvread", "tpm2_flushcontext", "tpm2_shutdown", "tpm2_getcap"];
const EK_CERT_INDEX = { rsa: "0x01c00002", ecc: "0x01c00016" } as const;
const START_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 3_000;
const TOOL_TIMEOUT_MS = 60_000;
/** What swtpm and the tools keep of their output for error messages. */
const MAX_LOG = 16_384;

let support: { available: boolean; reason?: string } | undefined;

function findExecutable(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Whether swtpm, swtpm_setup and tpm2-tools are installed; reason when not. */
export function softwareTpmSupport(): { available: boolean; reason?: string } {
  if (support) return support;
  const missing = [...SWTPM_TOOLS, ...TPM2_TOOLS].filter((name) => findExecutable(name) === undefined);
  support =
    missing.length === 0
      ? { available: true }
      : {
          available: false,
          reason: `not installed: ${missing.join(", ")} (Debian/Ubuntu: apt-get install swtpm swtpm-tools tpm2-tools)`,
        };
  return support;
}

/**
 * For test files: true when available; when not, throws if DARKBLOOM_REQUIRE_TPM_TESTS is "1" (CI must
 * not skip them silently), else false (describe.skipIf(!softwareTpmTestable())).
 */
export function softwareTpmTestable(): boolean {
  const { available, reason } = softwareTpmSupport();
  if (available) return true;
  if (process.env.DARKBLOOM_REQUIRE_TPM_TESTS === "1") {
    throw new Error(`DARKBLOOM_REQUIRE_TPM_TESTS=1 but the software TPM is unavailable: ${reason}`);
  }
  return false;
}

// Exit handlers must be synchronous: they kill what is still running and remove what is left, so that
// a test process that dies without stop() leaves no swtpm behind (setpriv's parent-death signal covers
// the deaths that skip exit handlers, SIGKILL included).
const liveProcesses = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitGuardInstalled = false;

function installExitGuard(): void {
  if (exitGuardInstalled) return;
  exitGuardInstalled = true;
  process.once("exit", () => {
    for (const child of liveProcesses) child.kill("SIGKILL");
    for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  });
}

class LocalCa implements SoftwareTpmCa {
  constructor(
    readonly dir: string,
    private readonly owned: boolean,
  ) {}

  // swtpm_localca creates the root and the intermediate the first time it issues an EK certificate,
  // so the bundle exists once the first TPM has been set up with this CA.
  get bundlePem(): string {
    const root = join(this.dir, "swtpm-localca-rootca-cert.pem");
    const intermediate = join(this.dir, "issuercert.pem");
    if (!existsSync(root) || !existsSync(intermediate)) {
      throw new Error(`the EK CA in ${this.dir} has no certificates yet: start a TPM with it first`);
    }
    return `${readFileSync(root, "utf8").trim()}\n${readFileSync(intermediate, "utf8").trim()}\n`;
  }

  async remove(): Promise<void> {
    if (!this.owned) return;
    await rm(this.dir, { recursive: true, force: true });
    liveDirs.delete(this.dir);
  }
}

/** A local EK CA in `dir` (created if missing) or in a new temporary directory. */
export async function createSoftwareTpmCa(dir?: string): Promise<SoftwareTpmCa> {
  installExitGuard();
  if (dir !== undefined) {
    await mkdir(dir, { recursive: true });
    return new LocalCa(dir, false);
  }
  const created = await mkdtemp(join(tmpdir(), "darkbloom-swtpm-ca-"));
  liveDirs.add(created);
  return new LocalCa(created, true);
}

function appendLog(log: { text: string }, chunk: Buffer): void {
  log.text = (log.text + chunk.toString("utf8")).slice(-MAX_LOG);
}

function listen(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(undefined));
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * Two consecutive free ports: the swtpm TCTI has no option for the control port, it always dials the
 * server port + 1. Another process may still take them before swtpm binds; start() retries then.
 */
async function consecutiveFreePorts(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = await listen(0);
    if (!first) continue;
    const address = first.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    const second = port > 0 && port < 65535 ? await listen(port + 1) : undefined;
    await close(first);
    if (second) {
      await close(second);
      return port;
    }
  }
  throw new Error("no two consecutive free TCP ports on 127.0.0.1");
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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs a command to completion; rejects with its stderr when it fails. */
function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; input?: Uint8Array },
): Promise<{ stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
      timeout: TOOL_TIMEOUT_MS,
    });
    const stdout: Buffer[] = [];
    const stderr = { text: "" };
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => appendLog(stderr, chunk));
    // A tool that exits without reading its input closes the pipe under us: that is its exit's business.
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? Buffer.alloc(0));
    child.once("error", (error) =>
      reject(new SoftwareTpmToolError(`${command}: ${error.message}`, null, "")),
    );
    child.once("close", (code, signal) => {
      if (code === 0) {
        resolve({ stdout: Buffer.concat(stdout).toString("utf8") });
        return;
      }
      const how = signal ? `killed by ${signal}` : `exit ${code}`;
      const said = stderr.text.trim();
      reject(
        new SoftwareTpmToolError(
          `${[command, ...args].join(" ")} failed (${how})${said ? `: ${said}` : ""}`,
          code,
          said,
        ),
      );
    });
  });
}

class SwtpmInstance implements SoftwareTpm {
  readonly stateDir: string;
  readonly workDir: string;
  private child: ChildProcess | undefined;
  private readonly log = { text: "" };
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly dir: string,
    readonly ca: SoftwareTpmCa,
    private port: number,
  ) {
    this.stateDir = join(dir, "state");
    this.workDir = join(dir, "work");
  }

  get tcti(): string {
    return `swtpm:host=127.0.0.1,port=${this.port}`;
  }

  /** The first start may move to other ports (someone took them); a restart must keep the TCTI. */
  async launch(mayMovePorts: boolean): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const outcome = await this.launchOnce(deadline);
      if (outcome.ready) return;
      if (outcome.portInUse && Date.now() < deadline) {
        if (mayMovePorts) {
          this.port = await consecutiveFreePorts();
        } else {
          await sleep(100);
        }
        continue;
      }
      throw new Error(`swtpm did not start on port ${this.port}: ${outcome.why}`);
    }
  }

  private async launchOnce(
    deadline: number,
  ): Promise<{ ready: true } | { ready: false; portInUse: boolean; why: string }> {
    const swtpmArgs = [
      "socket",
      "--tpm2",
      "--tpmstate",
      `dir=${this.stateDir}`,
      "--server",
      `type=tcp,port=${this.port},bindaddr=127.0.0.1`,
      "--ctrl",
      `type=tcp,port=${this.port + 1},bindaddr=127.0.0.1`,
      "--flags",
      "not-need-init,startup-clear",
    ];
    // setpriv execs swtpm with a parent-death signal: swtpm dies with the test process however it dies.
    const setpriv = findExecutable("setpriv");
    const swtpm = findExecutable("swtpm") ?? "swtpm";
    const child = setpriv
      ? spawn(setpriv, ["--pdeathsig", "KILL", "--", swtpm, ...swtpmArgs], {
          stdio: ["ignore", "pipe", "pipe"],
        })
      : spawn(swtpm, swtpmArgs, { stdio: ["ignore", "pipe", "pipe"] });
    this.log.text = "";
    child.stdout?.on("data", (chunk: Buffer) => appendLog(this.log, chunk));
    child.stderr?.on("data", (chunk: Buffer) => appendLog(this.log, chunk));
    let exited = false;
    const closed = new Promise((resolve) => child.once("close", resolve));
    child.once("error", (error) => appendLog(this.log, Buffer.from(`${error.message}\n`)));
    child.once("exit", () => {
      exited = true;
      liveProcesses.delete(child);
    });
    liveProcesses.add(child);
    this.child = child;
    while (Date.now() < deadline) {
      if (exited) break;
      // Both ports: the TCTI opens the control channel as well as the server socket.
      if ((await accepts(this.port)) && (await accepts(this.port + 1)) && !exited) return { ready: true };
      await sleep(20);
    }
    if (!exited) {
      await this.kill();
      return { ready: false, portInUse: false, why: `not listening after ${START_TIMEOUT_MS} ms` };
    }
    // The exit event can precede the last of stderr: let the pipes drain.
    await Promise.race([closed, sleep(500)]);
    const said = this.log.text.trim();
    return { ready: false, portInUse: /address already in use/i.test(said), why: `exited: ${said}` };
  }

  /** SIGTERM (swtpm ends gracefully), SIGKILL after a grace period; resolves when it is gone. */
  private async kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
    await gone;
    clearTimeout(timer);
  }

  async tool(args: string[], options: ToolOptions = {}): Promise<{ stdout: string }> {
    const [command, ...rest] = args;
    if (command === undefined) throw new Error("tool() needs a command");
    if (!this.child || this.stopping) throw new Error("the software TPM is not running");
    try {
      return await run(command, rest, {
        cwd: options.cwd ?? this.workDir,
        env: { ...process.env, TPM2TOOLS_TCTI: this.tcti },
        ...(options.input ? { input: options.input } : {}),
      });
    } finally {
      if (options.flushObjects) await this.tool(["tpm2_flushcontext", "--transient-object"]);
    }
  }

  async flush(): Promise<void> {
    await this.tool(["tpm2_flushcontext", "--transient-object"]);
    await this.tool(["tpm2_flushcontext", "--loaded-session"]);
    await this.tool(["tpm2_flushcontext", "--saved-session"]);
  }

  async readEkCertificate(algorithm: "rsa" | "ecc" = "rsa"): Promise<Uint8Array> {
    const file = join(this.workDir, `ek-certificate-${algorithm}.der`);
    await this.tool(["tpm2_nvread", EK_CERT_INDEX[algorithm], "-o", file]);
    return new Uint8Array(await readFile(file));
  }

  async restart(options: { orderly?: boolean } = {}): Promise<void> {
    if (!this.child || this.stopping) throw new Error("the software TPM is not running");
    if (options.orderly ?? true) await this.tool(["tpm2_shutdown", "--clear"]);
    await this.kill();
    await this.launch(false);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.kill();
      await rm(this.dir, { recursive: true, force: true });
      liveDirs.delete(this.dir);
    })();
    return this.stopping;
  }

  /** swtpm_setup: manufactures the TPM (EKs, their certificates from the CA, the SHA-256 PCR bank). */
  async manufacture(): Promise<void> {
    const localca = findExecutable("swtpm_localca") ?? "swtpm_localca";
    const localcaConf = join(this.dir, "localca.conf");
    const setupConf = join(this.dir, "setup.conf");
    const caDir = this.ca.dir;
    await writeFile(
      localcaConf,
      `statedir = ${caDir}\nsigningkey = ${caDir}/signkey.pem\nissuercert = ${caDir}/issuercert.pem\ncertserial = ${caDir}/certserial\n`,
    );
    // The options file names the platform for platform certificates: not needed for EK certificates.
    const options = "/etc/swtpm-localca.options";
    await writeFile(
      setupConf,
      `create_certs_tool = ${localca}\ncreate_certs_tool_config = ${localcaConf}\n` +
        (existsSync(options) ? `create_certs_tool_options = ${options}\n` : "") +
        "active_pcr_banks = sha256\n",
    );
    await mkdir(this.stateDir);
    await mkdir(this.workDir);
    try {
      await run(
        "swtpm_setup",
        ["--tpm2", "--tpm-state", this.stateDir, "--create-ek-cert", "--config", setupConf],
        { cwd: this.dir },
      );
    } catch (error) {
      throw new Error(`swtpm_setup failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}

/**
 * A manufactured software TPM, started and listening. With `ca`, its EK certificates come from that CA
 * (TPMs that share one trust the same bundle); without, from a CA of its own that stop() removes.
 */
export async function startSoftwareTpm(options: { ca?: SoftwareTpmCa } = {}): Promise<SoftwareTpm> {
  const { available, reason } = softwareTpmSupport();
  if (!available) throw new Error(`software TPM unavailable: ${reason}`);
  installExitGuard();
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-swtpm-"));
  liveDirs.add(dir);
  const ownCa = options.ca === undefined;
  const ca = options.ca ?? new LocalCa(join(dir, "ca"), false);
  if (ownCa) await mkdir(ca.dir);
  const tpm = new SwtpmInstance(dir, ca, await consecutiveFreePorts());
  try {
    await tpm.manufacture();
    await tpm.launch(true);
  } catch (error) {
    await tpm.stop();
    throw error;
  }
  return tpm;
}
