import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { SERIAL_HASH_PREFIX, type SecurityState } from "@darkbloom/protocol";

/** The machine's security state as the daemon can determine it (never guessed). */
export interface SecurityPosture {
  sip: SecurityState;
  secureBoot: SecurityState;
}

/** What the probes read the machine through; tests replace it. */
export interface ProbeIo {
  platform: NodeJS.Platform;
  /** Runs a command and resolves with its stdout; rejects when it fails or times out. */
  exec(command: string, args: string[]): Promise<string>;
  readFile(path: string): Promise<Buffer>;
  readdir(path: string): Promise<string[]>;
}

export function systemProbeIo(): ProbeIo {
  return {
    platform: process.platform,
    exec: (command, args) =>
      new Promise((resolve, reject) => {
        execFile(command, args, { timeout: 5_000, encoding: "utf8" }, (error, stdout) =>
          error ? reject(error) : resolve(stdout),
        );
      }),
    readFile: (path) => readFile(path),
    readdir: (path) => readdir(path),
  };
}

/** The EFI global-variable GUID under which firmware publishes SecureBoot. */
const EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
const EFIVARS = "/sys/firmware/efi/efivars";

/**
 * SIP and Secure Boot:
 * - macOS: SIP from `csrutil status`; Secure Boot from the AppleSecureBootPolicy NVRAM variable
 *   (T2 Macs: %02 full, %01 medium are enabled, %00 is disabled); "unknown" when unreadable (Apple
 *   silicon reports it only to `bputil`, which needs root).
 * - Linux: SIP does not exist ("not_applicable"); Secure Boot from the SecureBoot EFI variable (its
 *   fifth byte: 1 enabled, 0 disabled); "unknown" when efivars is absent or unreadable (legacy BIOS
 *   boots, containers), since that cannot tell "off" from "hidden".
 * - Anything else: both "unknown".
 */
export async function probeSecurityPosture(io: ProbeIo = systemProbeIo()): Promise<SecurityPosture> {
  if (io.platform === "darwin") {
    const [sip, secureBoot] = await Promise.all([
      io.exec("csrutil", ["status"]).then(parseCsrutil, () => "unknown" as const),
      io
        .exec("nvram", ["94b73556-2197-4702-82a8-3e1337dafbfb:AppleSecureBootPolicy"])
        .then(parseAppleSecureBootPolicy, () => "unknown" as const),
    ]);
    return { sip, secureBoot };
  }
  if (io.platform === "linux") return { sip: "not_applicable", secureBoot: await linuxSecureBoot(io) };
  return { sip: "unknown", secureBoot: "unknown" };
}

/** `csrutil status` output → SIP state. */
export function parseCsrutil(output: string): SecurityState {
  const m = /System Integrity Protection status:\s*(enabled|disabled)\b/i.exec(output);
  if (!m) return "unknown";
  // "enabled (Custom Configuration)" has parts turned off: not the full protection.
  if (/custom configuration/i.test(output)) return "unknown";
  return (m[1] ?? "").toLowerCase() === "enabled" ? "enabled" : "disabled";
}

/** `nvram …:AppleSecureBootPolicy` output → Secure Boot state. */
export function parseAppleSecureBootPolicy(output: string): SecurityState {
  const m = /AppleSecureBootPolicy\s+%0([0-2])/.exec(output);
  if (!m) return "unknown";
  return m[1] === "0" ? "disabled" : "enabled";
}

/** The SecureBoot EFI variable (4 attribute bytes, then the value) → Secure Boot state. */
export function parseSecureBootVariable(bytes: Uint8Array): SecurityState {
  if (bytes.length < 5) return "unknown";
  if (bytes[4] === 1) return "enabled";
  if (bytes[4] === 0) return "disabled";
  return "unknown";
}

async function linuxSecureBoot(io: ProbeIo): Promise<SecurityState> {
  try {
    const names = await io.readdir(EFIVARS);
    const name = names.find((n) => n === `SecureBoot-${EFI_GLOBAL}`);
    if (!name) return "unknown";
    return parseSecureBootVariable(await io.readFile(`${EFIVARS}/${name}`));
  } catch {
    return "unknown";
  }
}

/** Serials that firmware ships as placeholders, which identify nothing. */
const PLACEHOLDER_SERIALS =
  /^(|0+|none|n\/a|default string|to be filled by o\.e\.m\.|system serial number|not specified|0123456789)$/i;

/**
 * The hardware serial, hashed: SHA-256 of "darkbloom-serial-v1:" + serial, lowercase hex; "" when the
 * serial cannot be read (Linux exposes it to root only) or is a placeholder. The serial itself never
 * leaves the machine.
 */
export async function probeSerialSha256(io: ProbeIo = systemProbeIo()): Promise<string> {
  const serial = (await readSerial(io).catch(() => "")).trim();
  if (PLACEHOLDER_SERIALS.test(serial)) return "";
  return hashSerial(serial);
}

export function hashSerial(serial: string): string {
  return createHash("sha256").update(`${SERIAL_HASH_PREFIX}${serial}`).digest("hex");
}

async function readSerial(io: ProbeIo): Promise<string> {
  if (io.platform === "darwin") {
    const out = await io.exec("ioreg", ["-rd1", "-c", "IOPlatformExpertDevice"]);
    return /"IOPlatformSerialNumber"\s*=\s*"([^"]*)"/.exec(out)?.[1] ?? "";
  }
  if (io.platform === "linux") {
    for (const path of ["/sys/class/dmi/id/product_serial", "/sys/firmware/devicetree/base/serial-number"]) {
      try {
        const value = (await io.readFile(path)).toString("utf8").replace(/\0/g, "").trim();
        if (value) return value;
      } catch {
        // try the next source
      }
    }
  }
  return "";
}
