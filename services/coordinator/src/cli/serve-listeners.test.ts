import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { testIo } from "@darkbloom/cli-kit/testing";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCertificate } from "../testing/test-certificates.js";
import { runCli } from "./program.js";
import { addListenerOptions, listenersFrom } from "./serve-listeners.js";

function parse(args: string[]): Record<string, unknown> {
  const command = addListenerOptions(new Command("serve").exitOverride());
  command.parse(args, { from: "user" });
  return command.opts();
}

const main = { port: 8080, advertiseUrl: undefined };

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "darkbloom-serve-listeners-"));
  if (process.getuid?.() === 0) await chmod(root, 0o755);
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("serve's TLS and peer-port settings", () => {
  it("takes flags over environment variables and makes the files' paths absolute", () => {
    expect(
      listenersFrom(
        parse(["--tls-cert", "tls/a.crt", "--tls-key", "/etc/tls/a.key", "--peer-port", "9444"]),
        {
          DARKBLOOM_TLS_CERT: "/ignored.crt",
          DARKBLOOM_PEER_PORT: "1",
        },
        main,
      ),
    ).toEqual({ tlsCertFile: resolve("tls/a.crt"), tlsKeyFile: "/etc/tls/a.key", peerPort: 9444 });
    expect(
      listenersFrom(
        parse([]),
        { DARKBLOOM_TLS_CERT: "/t/c.pem", DARKBLOOM_TLS_KEY: "/t/k.pem", DARKBLOOM_PEER_PORT: "0" },
        main,
      ),
    ).toEqual({ tlsCertFile: "/t/c.pem", tlsKeyFile: "/t/k.pem", peerPort: 0 });
    expect(listenersFrom(parse([]), {}, main)).toEqual({});
  });

  it("keeps the peer port in plaintext with --peer-plaintext or DARKBLOOM_PEER_PLAINTEXT=true", () => {
    const tls = ["--tls-cert", "/t/c.pem", "--tls-key", "/t/k.pem", "--peer-port", "9444"];
    const expected = { tlsCertFile: "/t/c.pem", tlsKeyFile: "/t/k.pem", peerPort: 9444, peerPlaintext: true };
    expect(listenersFrom(parse([...tls, "--peer-plaintext"]), {}, main)).toEqual(expected);
    expect(listenersFrom(parse(tls), { DARKBLOOM_PEER_PLAINTEXT: "true" }, main)).toEqual(expected);
    const { peerPlaintext: _, ...withTls } = expected;
    expect(listenersFrom(parse(tls), { DARKBLOOM_PEER_PLAINTEXT: "false" }, main)).toEqual(withTls);
    // An advertised http:// URL on the peer port is what the peers must dial.
    const advertised = { port: 8080, advertiseUrl: "http://10.0.0.5:9444" };
    expect(listenersFrom(parse([...tls, "--peer-plaintext"]), {}, advertised)).toEqual(expected);
  });

  it("accepts an advertised URL on the peer port, or without a port", () => {
    const opts = parse(["--peer-port", "9444"]);
    for (const advertiseUrl of ["http://10.0.0.5:9444", "https://coordinator-0.peers", "http://10.0.0.5"]) {
      expect(listenersFrom(opts, {}, { port: 8080, advertiseUrl })).toEqual({ peerPort: 9444 });
    }
  });

  it.each([
    [["--tls-cert", "/t/c.pem"], {}, /--tls-cert and --tls-key .* go together/],
    [[], { DARKBLOOM_TLS_KEY: "/t/k.pem" }, /--tls-cert and --tls-key .* go together/],
    [["--peer-port", "8080"], {}, /--peer-port must be another port than --port/],
    [["--peer-port", "70000"], {}, /--peer-port.*expected a port from 0 to 65535/],
    [[], { DARKBLOOM_PEER_PORT: "x" }, /environment variable DARKBLOOM_PEER_PORT is invalid/],
    [
      ["--peer-port", "9444", "--advertise-url", "http://10.0.0.5:8080"],
      {},
      /--advertise-url names port 8080, but the other replicas reach this one on --peer-port 9444/,
    ],
    [["--peer-plaintext"], {}, /--peer-plaintext \(DARKBLOOM_PEER_PLAINTEXT\) needs --peer-port/],
    [
      [],
      { DARKBLOOM_PEER_PLAINTEXT: "true" },
      /--peer-plaintext \(DARKBLOOM_PEER_PLAINTEXT\) needs --peer-port/,
    ],
    [
      ["--peer-port", "9444"],
      { DARKBLOOM_PEER_PLAINTEXT: "yes" },
      /environment variable DARKBLOOM_PEER_PLAINTEXT is invalid: expected true or false/,
    ],
    [
      ["--peer-port", "9444", "--peer-plaintext", "--advertise-url", "https://10.0.0.5:9444"],
      {},
      /--advertise-url is https:\/\/, but --peer-plaintext serves the peer port without TLS/,
    ],
  ])("exits 64 with one line on %j %j", async (args, env, message) => {
    const t = testIo({ HOME: "/nonexistent", ...env });
    expect(await runCli(["serve", "--data-dir", "/nonexistent/darkbloom", ...args], t.io)).toBe(64);
    expect(t.stderr()).toMatch(message);
    expect(t.stderr().trim().split("\n")).toHaveLength(1);
  });

  it("fails to start with one line naming the file when the certificate cannot be used", async () => {
    const certificate = await makeTestCertificate(0x1001);
    const other = await makeTestCertificate(0x2002);
    const certFile = join(root, "tls.crt");
    const keyFile = join(root, "tls.key");
    await writeFile(certFile, certificate.cert);
    await writeFile(keyFile, other.key);
    const serve = async (cert: string, key: string) => {
      const t = testIo({ HOME: root });
      const dataDir = join(root, "data");
      const args = ["serve", "--port", "0", "--log-level", "silent", "--data-dir", dataDir];
      const code = await runCli([...args, "--tls-cert", cert, "--tls-key", key], t.io);
      return { code, stderr: t.stderr() };
    };
    const missing = await serve(join(root, "absent.crt"), keyFile);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(
      `darkbloom-coordinator: cannot read the TLS certificate ${join(root, "absent.crt")} (ENOENT)\n`,
    );
    const mismatched = await serve(certFile, keyFile);
    expect(mismatched.code).toBe(1);
    expect(mismatched.stderr).toMatch(
      /^darkbloom-coordinator: the key in .*tls\.key is not the key of the certificate in .*tls\.crt\n$/,
    );
    expect(mismatched.stderr).not.toContain(other.key.split("\n")[1]);
  });
});
