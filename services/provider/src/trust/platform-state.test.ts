import { describe, expect, it } from "vitest";
import {
  hashSerial,
  type ProbeIo,
  parseAppleSecureBootPolicy,
  parseCsrutil,
  parseSecureBootVariable,
  probeSecurityPosture,
  probeSerialSha256,
} from "./platform-state.js";

function io(over: Partial<ProbeIo> & Pick<ProbeIo, "platform">): ProbeIo {
  return {
    exec: async (command) => {
      throw new Error(`${command}: not found`);
    },
    readFile: async (path) => {
      throw Object.assign(new Error(`ENOENT: ${path}`), { code: "ENOENT" });
    },
    readdir: async (path) => {
      throw Object.assign(new Error(`ENOENT: ${path}`), { code: "ENOENT" });
    },
    ...over,
  };
}

const SECURE_BOOT = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

describe("security posture", () => {
  it("parses csrutil, the Apple Secure Boot policy and the EFI SecureBoot variable", () => {
    expect(parseCsrutil("System Integrity Protection status: enabled.\n")).toBe("enabled");
    expect(parseCsrutil("System Integrity Protection status: disabled.\n")).toBe("disabled");
    expect(parseCsrutil("System Integrity Protection status: enabled (Custom Configuration).\n")).toBe(
      "unknown",
    );
    expect(parseCsrutil("")).toBe("unknown");
    expect(parseAppleSecureBootPolicy("94b73556-…:AppleSecureBootPolicy\t%02")).toBe("enabled");
    expect(parseAppleSecureBootPolicy("94b73556-…:AppleSecureBootPolicy\t%00")).toBe("disabled");
    expect(parseAppleSecureBootPolicy("nvram: Error getting variable")).toBe("unknown");
    expect(parseSecureBootVariable(new Uint8Array([6, 0, 0, 0, 1]))).toBe("enabled");
    expect(parseSecureBootVariable(new Uint8Array([6, 0, 0, 0, 0]))).toBe("disabled");
    expect(parseSecureBootVariable(new Uint8Array([6, 0]))).toBe("unknown");
  });

  it("on Linux: SIP is not applicable; Secure Boot from efivars, unknown when it cannot be read", async () => {
    expect(await probeSecurityPosture(io({ platform: "linux" }))).toEqual({
      sip: "not_applicable",
      secureBoot: "unknown",
    });
    const efi = (value: number) =>
      io({
        platform: "linux",
        readdir: async () => ["Boot0000-8be4df61-93ca-11d2-aa0d-00e098032b8c", SECURE_BOOT],
        readFile: async (path) => {
          expect(path).toBe(`/sys/firmware/efi/efivars/${SECURE_BOOT}`);
          return Buffer.from([6, 0, 0, 0, value]);
        },
      });
    expect((await probeSecurityPosture(efi(1))).secureBoot).toBe("enabled");
    expect((await probeSecurityPosture(efi(0))).secureBoot).toBe("disabled");
  });

  it("on macOS: from csrutil and nvram; unknown when they fail", async () => {
    const mac = io({
      platform: "darwin",
      exec: async (command) =>
        command === "csrutil"
          ? "System Integrity Protection status: disabled.\n"
          : "94b73556-2197-4702-82a8-3e1337dafbfb:AppleSecureBootPolicy\t%02\n",
    });
    expect(await probeSecurityPosture(mac)).toEqual({ sip: "disabled", secureBoot: "enabled" });
    expect(await probeSecurityPosture(io({ platform: "darwin" }))).toEqual({
      sip: "unknown",
      secureBoot: "unknown",
    });
  });
});

describe("serial", () => {
  it("is hashed, and empty when unreadable or a firmware placeholder", async () => {
    const linux = (serial: string) =>
      io({ platform: "linux", readFile: async () => Buffer.from(`${serial}\n`) });
    expect(await probeSerialSha256(linux("PF2ABCDE"))).toBe(hashSerial("PF2ABCDE"));
    expect(hashSerial("PF2ABCDE")).toMatch(/^[0-9a-f]{64}$/);
    expect(await probeSerialSha256(linux("To Be Filled By O.E.M."))).toBe("");
    expect(await probeSerialSha256(io({ platform: "linux" }))).toBe("");
    const mac = io({
      platform: "darwin",
      exec: async () => '    "IOPlatformSerialNumber" = "C02XYZ"\n',
    });
    expect(await probeSerialSha256(mac)).toBe(hashSerial("C02XYZ"));
  });
});
