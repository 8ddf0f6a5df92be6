// The Helm chart running real coordinators: installed on the strict fake API server in its two
// steps (tests/helm/install.ts) with the URL of a real PostgreSQL, the fake cluster running the
// pods as processes of the built CLI, and the operator reconciling as the chart's ServiceAccount
// under RBAC. The coordinator serves its own TLS (coordinator.tls, a cert-manager-like Secret with
// ca.crt): the migration Job migrates the empty database, the replica becomes Ready behind the
// operator's Service (HTTPS probes), the admin key the chart generated opens the admin API over
// https, the operator registers a ProviderRelease over https verifying the certificate, and a
// renewed certificate reaches new connections without a restart. TPM providers are judged against
// the EK CAs of a ConfigMap (coordinator.tpm.ekCaConfigMap): a provider daemon on a software TPM
// earns trust tpm once its vendor's CA is added, without a restart.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import https from "node:https";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type tls from "node:tls";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { startTestPostgres, type TestPostgres } from "@darkbloom/coordinator/testing";
import { providerBin } from "@darkbloom/local-network";
import type { RunningOperator } from "@darkbloom/operator";
import {
  type FakeApiServer,
  type FakeCluster,
  startFakeApiServer,
  startFakeCluster,
} from "@darkbloom/operator/testing";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { treeSha256 } from "@darkbloom/provider";
import { type SoftwareTpm, softwareTpmTestable, startSoftwareTpm } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AdminClient,
  find,
  type Json,
  type Manifest,
  NAMESPACE,
  RELEASE,
  waitFor,
} from "../helm/helm.js";
import { installChart, startRenderedOperator } from "../helm/install.js";
import { coordinatorEntrypoint } from "./support.js";

let postgres: TestPostgres;
let server: FakeApiServer;
let cluster: FakeCluster;
let operator: RunningOperator;
let manifests: Manifest[];
let admin: AdminClient;
let workDir: string;

/** The Service's cluster DNS name: what the certificate names and the operator verifies. */
const SERVICE_DNS = `${RELEASE}.${NAMESPACE}.svc`;
const TLS_SECRET = "darkbloom-coordinator-tls";
const EK_CA_CONFIG_MAP = "tpm-vendors";

/** A CA certificate of a TPM vendor that made none of the TPMs here. */
async function unrelatedCa(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-helm-ekca-"));
  try {
    const out = join(dir, "ca.pem");
    await promisify(execFile)("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
      ...["-keyout", join(dir, "key.pem"), "-out", out, "-days", "2", "-subj", "/CN=Unrelated EK CA"],
      ...["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
    ]);
    return await readFile(out, "utf8");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const ekCaConfigMap = (pem: string): Manifest => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name: EK_CA_CONFIG_MAP, namespace: NAMESPACE },
  data: { "ca.pem": pem },
});
let unrelated: string;

/** A self-signed certificate for the Service's name (and 127.0.0.1), as a CA issuer would make one. */
async function certificate(serial: number): Promise<{ cert: string; key: string }> {
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-helm-cert-"));
  try {
    const [cert, key] = [join(dir, "tls.crt"), join(dir, "tls.key")];
    await promisify(execFile)("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
      ...["-keyout", key, "-out", cert, "-days", "2", "-subj", `/CN=${SERVICE_DNS}`],
      ...["-addext", `subjectAltName=DNS:${SERVICE_DNS},IP:127.0.0.1`, "-set_serial", String(serial)],
    ]);
    return { cert: await readFile(cert, "utf8"), key: await readFile(key, "utf8") };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The TLS Secret as cert-manager writes it: tls.crt, tls.key and ca.crt (here the certificate itself). */
const tlsSecret = (pair: { cert: string; key: string }): Manifest => ({
  apiVersion: "v1",
  kind: "Secret",
  metadata: { name: TLS_SECRET, namespace: NAMESPACE },
  type: "kubernetes.io/tls",
  data: Object.fromEntries(
    Object.entries({ "tls.crt": pair.cert, "tls.key": pair.key, "ca.crt": pair.cert }).map(([k, v]) => [
      k,
      Buffer.from(v).toString("base64"),
    ]),
  ),
});

let first: { cert: string; key: string };
let renewed: { cert: string; key: string };

/** Creates a ProviderRelease of `version` for linux-x64 and waits for its Synced condition. */
async function syncedRelease(version: string, binarySha256: string): Promise<Json> {
  const release: Manifest = {
    apiVersion: "darkbloom.dev/v1alpha1",
    kind: "ProviderRelease",
    metadata: { name: `darkbloom-${version.replaceAll(".", "-")}-linux-x64`, namespace: NAMESPACE },
    spec: {
      coordinatorRef: { name: RELEASE },
      version,
      platform: "linux-x64",
      binarySha256,
      bundleSha256: "cd".repeat(32),
      url: `https://releases.example/darkbloom-${version}-linux-x64.tar.gz`,
    },
  };
  expect((await admin.create(release)).status).toBe(201);
  return waitFor(
    "the ProviderRelease to be Synced",
    async () => {
      const stored = await admin.get(
        "darkbloom.dev/v1alpha1",
        "ProviderRelease",
        NAMESPACE,
        release.metadata.name,
      );
      const condition = (stored?.status?.conditions as Json[] | undefined)?.find((c) => c.type === "Synced");
      return condition?.status === "True" ? condition : undefined;
    },
    20_000,
  );
}

/** GET over TLS trusting both certificates: the status and the parsed JSON body. */
function getTlsJson(
  address: { host: string; port: number },
  path: string,
): Promise<{ status: number; body: Json }> {
  return new Promise((resolve, reject) => {
    const request = https.get(
      { ...address, path, servername: SERVICE_DNS, ca: [first.cert, renewed.cert], agent: false },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (c: Buffer) => chunks.push(c));
        response.on("end", () => {
          try {
            resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) });
          } catch (error) {
            reject(error);
          }
        });
      },
    );
    request.on("error", reject);
  });
}

/** GET over TLS on a connection of its own, trusting both certificates: the status and the serial served. */
function getTls(
  address: { host: string; port: number },
  path: string,
): Promise<{ status: number; serial: string }> {
  return new Promise((resolve, reject) => {
    const request = https.get(
      { ...address, path, servername: SERVICE_DNS, ca: [first.cert, renewed.cert], agent: false },
      (response) => {
        response.resume();
        const serial = (response.socket as tls.TLSSocket).getPeerCertificate().serialNumber;
        resolve({ status: response.statusCode ?? 0, serial });
      },
    );
    request.on("error", reject);
  });
}

beforeAll(async () => {
  [postgres, first, renewed, unrelated] = await Promise.all([
    startTestPostgres(),
    certificate(0x1001),
    certificate(0x2002),
    unrelatedCa(),
  ]);
  server = await startFakeApiServer();
  const installed = await installChart(server, "database-url-values.yaml", [
    "--set",
    `coordinator.database.url=${postgres.url}`,
    "--set",
    `coordinator.peerPort=9443,coordinator.tls.enabled=true,coordinator.tls.secretName=${TLS_SECRET}`,
    "--set",
    `coordinator.tpm.ekCaConfigMap=${EK_CA_CONFIG_MAP}`,
  ]);
  manifests = installed.second.manifests;
  admin = installed.admin;
  expect((await admin.create(tlsSecret(first))).status).toBe(201);
  expect((await admin.create(ekCaConfigMap(unrelated))).status).toBe(201);
  workDir = await mkdtemp(join(tmpdir(), "darkbloom-helm-cluster-"));
  // The chart's coordinator image runs the built CLI; the operator's image is unknown here (its
  // pods wait), as the operator runs in this process.
  cluster = await startFakeCluster({
    apiServerUrl: server.url,
    token: server.adminToken,
    workDir,
    images: { [find(manifests, "Coordinator").spec.image]: { entrypoint: coordinatorEntrypoint } },
  });
  ({ operator } = await startRenderedOperator(server, manifests, (ns, service, port) =>
    cluster.serviceAddress(ns, service, port),
  ));
});

afterAll(async () => {
  await operator?.close();
  await cluster?.close();
  await server?.close();
  await postgres?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

describe("the chart on a cluster, the coordinator serving TLS", () => {
  it("migrates the database, serves https behind the operator's Service, and takes the generated admin key", async () => {
    const ready = await waitFor(
      "the Coordinator to be Ready",
      async () => {
        const coordinator = await admin.get("darkbloom.dev/v1alpha1", "Coordinator", NAMESPACE, RELEASE);
        const condition = (coordinator?.status?.conditions as Json[] | undefined)?.find(
          (c) => c.type === "Ready",
        );
        return condition?.status === "True" ? coordinator : undefined;
      },
      90_000,
    );
    expect(ready.status.readyReplicas).toBe(1);
    expect(ready.status.migratedImage).toBe(ready.spec.image);
    const jobs = await admin.list("batch/v1", "Job", NAMESPACE);
    expect(jobs.map((j) => j.status.succeeded)).toEqual([1]);

    const at = await cluster.serviceAddress(NAMESPACE, RELEASE, "http");
    expect(await getTls(at, "/healthz")).toEqual({ status: 200, serial: "1001" });
    // The public port refuses plaintext (400 tls_required).
    expect((await fetch(`http://${at.host}:${at.port}/healthz`)).status).toBe(400);
    const secret = find(manifests, "Secret", `${RELEASE}-admin-key`);
    const adminKey = Buffer.from(secret.data["admin-key"], "base64").toString();
    const transport = createConnectTransport({
      baseUrl: `https://${at.host}:${at.port}`,
      httpVersion: "1.1",
      nodeOptions: { ca: first.cert, servername: SERVICE_DNS },
    });
    const account = await createClient(AdminService, transport).createAccount(
      { name: "helm-consumer", initialCreditMicroUsd: 1n },
      { headers: { authorization: `Bearer ${adminKey}` } },
    );
    expect(account.apiKeySecret).toMatch(/\S/);
  });

  it("registers a ProviderRelease over https, verifying the certificate against the Secret's ca.crt", async () => {
    const synced = await syncedRelease("1.4.0", "ab".repeat(32));
    expect(synced.reason).toBe("Synced");
  });

  it("serves a renewed certificate to new connections without restarting the pod", async () => {
    const pods = async () =>
      (await admin.list("v1", "Pod", NAMESPACE)).filter(
        (p) => p.metadata.labels?.["app.kubernetes.io/component"] === "coordinator",
      );
    const [before] = await pods();
    expect((await admin.replace(tlsSecret(renewed))).status).toBe(200);
    const at = await cluster.serviceAddress(NAMESPACE, RELEASE, "http");
    await waitFor(
      "the renewed certificate to be served",
      async () => ((await getTls(at, "/healthz")).serial === "2002" ? true : undefined),
      20_000,
    );
    expect(new X509Certificate(renewed.cert).serialNumber).toBe("2002");
    const [after] = await pods();
    expect(after?.metadata.uid).toBe(before?.metadata.uid);
    expect(after?.status.containerStatuses[0].restartCount).toBe(0);
  });

  it.skipIf(!softwareTpmTestable())(
    "grants a TPM provider trust tpm once its vendor's EK CA is added to the ConfigMap, without a restart",
    async () => {
      const tpm: SoftwareTpm = await startSoftwareTpm();
      const dataDir = await mkdtemp(join(tmpdir(), "darkbloom-helm-tpm-provider-"));
      let daemon: ChildProcess | undefined;
      try {
        const at = await cluster.serviceAddress(NAMESPACE, RELEASE, "http");
        const trusted = join(dataDir, "coordinator-ca.pem");
        await writeFile(trusted, `${first.cert}${renewed.cert}`);
        await promisify(execFile)(process.execPath, [
          providerBin,
          "models",
          "synth",
          "tiny",
          "--data-dir",
          dataDir,
        ]);
        // The release registered above made the coordinator check binaries: this daemon's is released.
        // providerBin is <provider>/dist/bin/darkbloom.js: the daemon hashes its dist/.
        await syncedRelease("0.1.0", await treeSha256(dirname(dirname(providerBin))));
        daemon = spawn(
          process.execPath,
          [
            ...[providerBin, "serve", "--coordinator", `https://127.0.0.1:${at.port}`, "--data-dir", dataDir],
            ...[
              "--model",
              "tiny",
              "--threads",
              "1",
              "--metrics-listen",
              "off",
              "--tpm",
              tpm.tcti,
              "--allow-cpu",
            ],
          ],
          { env: { ...process.env, NODE_EXTRA_CA_CERTS: trusted }, stdio: "ignore" },
        );
        const published = async () => {
          const { body } = await getTlsJson(at, "/v1/providers/attestation");
          return (body.data as Json[]).find((p) => p.signer === "tpm");
        };
        const before = await waitFor("the TPM provider to be judged", published, 30_000);
        await waitFor(
          "its challenge to pass",
          async () => ((await published())?.last_challenge?.result === "passed" ? true : undefined),
          30_000,
        );
        const judged = await published();
        expect(judged?.trust_level).toBe("self_signed");
        expect(((judged?.reasons ?? []) as Json[]).map((r) => r.code)).toEqual(["tpm_unknown_ek_ca"]);

        const pods = async () =>
          (await admin.list("v1", "Pod", NAMESPACE)).filter(
            (p) => p.metadata.labels?.["app.kubernetes.io/component"] === "coordinator",
          );
        const [pod] = await pods();
        expect((await admin.replace(ekCaConfigMap(`${unrelated}${tpm.ca.bundlePem}`))).status).toBe(200);
        // The kubelet updates the volume, the replica re-reads the bundle and challenges the provider
        // with a credential its TPM activates.
        const after = await waitFor(
          "trust tpm",
          async () => {
            const p = await published();
            return p?.trust_level === "tpm" ? p : undefined;
          },
          40_000,
        );
        expect(after.provider_id).toBe(before.provider_id);
        expect(after.tpm).toMatchObject({ ek_certified: true, activated: true });
        const [same] = await pods();
        expect(same?.metadata.uid).toBe(pod?.metadata.uid);
        expect(same?.status.containerStatuses[0].restartCount).toBe(0);
      } finally {
        daemon?.kill("SIGKILL");
        await tpm.stop();
        await rm(dataDir, { recursive: true, force: true });
      }
    },
    120_000,
  );
});
