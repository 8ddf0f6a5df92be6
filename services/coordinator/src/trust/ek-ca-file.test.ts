import { execFileSync } from "node:child_process";
import type { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { EkCaFile } from "./ek-ca-file.js";

const dirs: string[] = [];

/** A self-signed CA certificate (openssl, as Debian ships it) named "Test EK CA <name>". */
function testCaPem(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), "ek-ca-cert-"));
  dirs.push(dir);
  const out = join(dir, "ca.pem");
  execFileSync(
    "openssl",
    [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
      ...["-keyout", join(dir, "key.pem"), "-out", out, "-days", "2", "-subj", `/CN=Test EK CA ${name}`],
      ...["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
    ],
    { stdio: "ignore" },
  );
  return readFileSync(out, "utf8");
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("EkCaFile", () => {
  it("re-reads the bundle when it changes (checked at most every 10 s), and keeps the last good one when it breaks", () => {
    const dir = mkdtempSync(join(tmpdir(), "ek-ca-"));
    dirs.push(dir);
    const path = join(dir, "ca.pem");
    writeFileSync(path, testCaPem("a"));
    let now = 1_000_000;
    const lines: { msg: string }[] = [];
    const log = pino({ level: "info" }, { write: (l: string) => lines.push(JSON.parse(l)) });
    let changes = 0;
    const file = new EkCaFile(path, log, { now: () => now, onChange: () => changes++ });
    const subject = () => file.current().certificates.map((c: X509Certificate) => c.subject);
    expect(subject()).toEqual([expect.stringContaining("Test EK CA a")]);

    writeFileSync(path, testCaPem("a") + testCaPem("b"));
    utimesSync(path, new Date(), new Date(Date.now() + 5_000));
    now += 5_000;
    expect(subject()).toHaveLength(1); // not looked at yet
    now += 5_000;
    expect(subject()).toHaveLength(2);
    expect(lines.at(-1)?.msg).toBe("TPM EK CA bundle reloaded");
    expect(changes).toBe(1);

    writeFileSync(path, "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n");
    utimesSync(path, new Date(), new Date(Date.now() + 20_000));
    now += 10_000;
    expect(subject()).toHaveLength(2);
    expect(lines.at(-1)?.msg).toBe("the TPM EK CA bundle could not be reloaded; keeping the last one");
    rmSync(path);
    now += 10_000;
    expect(subject()).toHaveLength(2);
    expect(changes).toBe(1);
  });

  it("refuses a file without a usable certificate at start", () => {
    const dir = mkdtempSync(join(tmpdir(), "ek-ca-"));
    dirs.push(dir);
    const path = join(dir, "ca.pem");
    writeFileSync(path, "nothing\n");
    expect(() => new EkCaFile(path, pino({ level: "silent" }))).toThrow();
  });
});
