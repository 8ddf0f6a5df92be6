import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCertificate, SecretVolume, type TestCertificate } from "../testing/test-certificates.js";
import { CertificateReloader, type LoadedCertificate, loadCertificate } from "./tls-certificate.js";

let first: TestCertificate;
let renewed: TestCertificate;
let other: TestCertificate;
let dir: string;

beforeAll(async () => {
  first = await makeTestCertificate(0x1001);
  [renewed, other] = await Promise.all([makeTestCertificate(0x2002), makeTestCertificate(0x3003)]);
  dir = await mkdtemp(join(tmpdir(), "darkbloom-tls-files-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A logger whose lines the test reads (the reloader's only output besides onReload). */
function capturedLog() {
  const lines: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      raw.push(String(chunk));
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { log: pino({ level: "info" }, stream), lines, raw };
}

/** Writes a file by renaming a complete one over it, as careful tools do. */
async function replace(file: string, content: string): Promise<void> {
  await writeFile(`${file}.tmp`, content);
  await rename(`${file}.tmp`, file);
}

describe("loading the serving certificate", () => {
  it("names the file and what is wrong with it, never quoting the key", async () => {
    const certFile = join(dir, "cert.pem");
    const keyFile = join(dir, "key.pem");
    await writeFile(certFile, first.cert);
    await writeFile(keyFile, first.key);
    const loaded = await loadCertificate({ certFile, keyFile });
    expect(loaded.serial).toBe(first.serial);

    const missing = join(dir, "absent.pem");
    await expect(loadCertificate({ certFile: missing, keyFile })).rejects.toThrow(
      `cannot read the TLS certificate ${missing} (ENOENT)`,
    );
    await writeFile(join(dir, "garbage.pem"), "not a certificate");
    await expect(loadCertificate({ certFile: join(dir, "garbage.pem"), keyFile })).rejects.toThrow(
      "garbage.pem is not a PEM certificate",
    );
    await writeFile(join(dir, "other.key"), other.key);
    const mismatch = loadCertificate({ certFile, keyFile: join(dir, "other.key") });
    await expect(mismatch).rejects.toThrow(/the key in .*other\.key is not the key of the certificate/);
    const truncated = join(dir, "truncated.key");
    await writeFile(truncated, first.key.slice(0, 80));
    const error = await loadCertificate({ certFile, keyFile: truncated }).catch((e: Error) => e);
    expect(String(error)).toContain("is not an unencrypted PEM private key");
    expect(String(error)).not.toContain(first.key.slice(30, 60));
  });
});

describe("reloading the serving certificate", () => {
  it("follows a Secret volume's symlink swap, and refuses a bad pair once, keeping the current one", async () => {
    const volume = await SecretVolume.create(first);
    const { log, lines, raw } = capturedLog();
    const files = { certFile: volume.certFile, keyFile: volume.keyFile };
    const reloads: LoadedCertificate[] = [];
    // The periodic check is far off: the directory watch alone must see the swap.
    const reloader = new CertificateReloader(
      files,
      await loadCertificate(files),
      (c) => reloads.push(c),
      log,
      {
        checkIntervalMs: 60_000,
        settleMs: 20,
      },
    );
    reloader.start();
    try {
      await volume.update(renewed);
      await expect.poll(() => reloads.map((c) => c.serial), { timeout: 5_000 }).toEqual([renewed.serial]);
      expect(lines).toContainEqual(
        expect.objectContaining({ msg: "TLS certificate reloaded", serial: renewed.serial }),
      );

      // A certificate with another certificate's key: refused, logged, the current pair kept.
      await volume.update({ cert: other.cert, key: renewed.key });
      await expect
        .poll(() => lines.filter((l) => l.msg === "TLS certificate not reloaded: serving the current one"), {
          timeout: 5_000,
        })
        .toHaveLength(1);
      expect(lines.at(-1)).toMatchObject({
        serial: renewed.serial,
        err: expect.stringContaining("not the key"),
      });
      await reloader.check(); // the periodic check finds the same bad pair: no second line
      expect(lines.filter((l) => l.level === 40)).toHaveLength(1);
      expect(reloads).toHaveLength(1);

      // Once the pair is whole again it is taken.
      await volume.update(other);
      await expect.poll(() => reloads.at(-1)?.serial, { timeout: 5_000 }).toBe(other.serial);
      for (const key of [first.key, renewed.key, other.key]) {
        const body = key.split("\n")[1] ?? key;
        expect(raw.join("")).not.toContain(body);
      }
    } finally {
      reloader.stop();
      await volume.remove();
    }
  });

  it("reads the files again on its periodic check, and ignores an unchanged pair", async () => {
    const certFile = join(dir, "periodic.crt");
    const keyFile = join(dir, "periodic.key");
    await writeFile(certFile, first.cert);
    await writeFile(keyFile, first.key);
    const { log, lines } = capturedLog();
    const reloads: string[] = [];
    const files = { certFile, keyFile };
    const reloader = new CertificateReloader(
      files,
      await loadCertificate(files),
      (c) => reloads.push(c.serial),
      log,
    );
    // Not started: no watch, no timer; check() is what the periodic timer runs.
    await reloader.check();
    expect(reloads).toEqual([]);
    expect(lines).toEqual([]);
    await replace(certFile, "garbage");
    await reloader.check();
    expect(lines).toMatchObject([{ msg: "TLS certificate not reloaded: serving the current one" }]);
    await replace(certFile, first.cert);
    await reloader.check(); // back to the pair being served: nothing to do
    await replace(keyFile, renewed.key);
    await replace(certFile, renewed.cert);
    await reloader.check();
    expect(reloads).toEqual([renewed.serial]);
  });
});
