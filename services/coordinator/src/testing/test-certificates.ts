import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A positive serial as DER writes it in hex: whole bytes (serials below 0x80 a byte keep it unsigned). */
function evenHex(n: number): string {
  const hex = n.toString(16).toUpperCase();
  return hex.length % 2 === 0 ? hex : `0${hex}`;
}

/** A self-signed certificate and its key, PEM. */
export interface TestCertificate {
  cert: string;
  key: string;
  /** The serial number as X509Certificate.serialNumber and TLSSocket.getPeerCertificate() show it. */
  serial: string;
}

/**
 * A self-signed P-256 certificate for 127.0.0.1 with the given serial (a new key unless `key` is
 * given: a renewal that keeps its key). Node cannot make X.509 certificates; the openssl CLI can.
 */
export async function makeTestCertificate(serial: number, key?: string): Promise<TestCertificate> {
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-cert-"));
  try {
    const keyFile = join(dir, "key.pem");
    const certFile = join(dir, "cert.pem");
    if (key !== undefined) await writeFile(keyFile, key, { mode: 0o600 });
    const keyArgs =
      key === undefined
        ? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile]
        : ["-key", keyFile];
    const args = ["req", "-x509", ...keyArgs, "-out", certFile, "-days", "2", "-subj", "/CN=127.0.0.1"];
    args.push("-addext", "subjectAltName=IP:127.0.0.1", "-set_serial", String(serial));
    await run("openssl", args).catch((e: NodeJS.ErrnoException) => {
      throw new Error(
        e.code === "ENOENT" ? "the tests' certificates need the openssl command" : `openssl: ${e.message}`,
      );
    });
    return {
      cert: await readFile(certFile, "utf8"),
      key: await readFile(keyFile, "utf8"),
      serial: evenHex(serial),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A certificate directory laid out as Kubernetes mounts a Secret (and cert-manager's certificates
 * with it): `tls.crt` and `tls.key` are symlinks through `..data`, a symlink to a versioned directory
 * that an update replaces in one rename.
 */
export class SecretVolume {
  private version = 0;

  private constructor(readonly dir: string) {}

  static async create(certificate: TestCertificate): Promise<SecretVolume> {
    const volume = new SecretVolume(await mkdtemp(join(tmpdir(), "darkbloom-secret-")));
    await volume.update(certificate);
    await symlink(join("..data", "tls.crt"), volume.certFile);
    await symlink(join("..data", "tls.key"), volume.keyFile);
    return volume;
  }

  get certFile(): string {
    return join(this.dir, "tls.crt");
  }

  get keyFile(): string {
    return join(this.dir, "tls.key");
  }

  /** Replaces both files at once, as the kubelet does: a new version directory, then the symlink swap. */
  async update(files: { cert: string; key: string }): Promise<void> {
    const version = `..v${++this.version}`;
    await mkdir(join(this.dir, version));
    await writeFile(join(this.dir, version, "tls.crt"), files.cert);
    await writeFile(join(this.dir, version, "tls.key"), files.key, { mode: 0o600 });
    await symlink(version, join(this.dir, "..data_tmp"));
    await rename(join(this.dir, "..data_tmp"), join(this.dir, "..data"));
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
