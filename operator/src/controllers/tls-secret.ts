import { createPrivateKey, X509Certificate } from "node:crypto";
import type { Coordinator } from "../api/v1alpha1/coordinator-types.js";
import type { Informer } from "../runtime/informer.js";
import type { KubeObject } from "../runtime/kube-api.js";
import { type SecretProblem, secretValue } from "./secret-values.js";

// A Coordinator's `spec.tls` Secret, as both controllers read it: the Coordinator's checks it before
// pods mount it, the ProviderRelease's takes from it what the operator trusts on its admin calls.

/** The keys of a kubernetes.io/tls Secret (cert-manager writes the same, and ca.crt beside them). */
export const TLS_CERT_KEY = "tls.crt";
export const TLS_KEY_KEY = "tls.key";
export const TLS_CA_KEY = "ca.crt";

/** Why the TLS Secret cannot be served: a Degraded reason and its message. */
export interface TlsProblem {
  reason: SecretProblem["reason"] | "CertificateInvalid";
  message: string;
}

/**
 * What is wrong with the TLS Secret, if anything: absent, a key missing, or a pair the coordinator
 * would refuse to start with (not PEM, or a key that is not the certificate's). Checked before the
 * pods mount it, so that a typo does not roll the replicas into a crash loop. The message never
 * quotes the Secret's content.
 */
export function tlsSecretProblem(
  secrets: Informer<KubeObject>,
  namespace: string,
  secretName: string,
): TlsProblem | undefined {
  const cert = secretValue(secrets, namespace, secretName, TLS_CERT_KEY);
  if (typeof cert !== "string") return cert;
  const key = secretValue(secrets, namespace, secretName, TLS_KEY_KEY);
  if (typeof key !== "string") return key;
  const invalid = (what: string): TlsProblem => ({
    reason: "CertificateInvalid",
    message: `Secret ${secretName}: ${what}`,
  });
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch {
    return invalid(`${TLS_CERT_KEY} is not a PEM certificate`);
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    return invalid(`${TLS_KEY_KEY} is not an unencrypted PEM private key`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    return invalid(`${TLS_KEY_KEY} is not the key of the certificate in ${TLS_CERT_KEY}`);
  }
  return undefined;
}

/** How the operator verifies a TLS coordinator it calls through its Service. */
export interface AdminTls {
  /** The Secret's ca.crt: then the only CA trusted; absent, Node's CA store (public CAs). */
  ca: string | undefined;
  /** The name the certificate must hold (and the SNI sent): spec.tls.serverName, else the Service's DNS name. */
  serverName: string;
}

/** The admin calls' TLS settings of a Coordinator serving TLS, or why they cannot be made. */
export function adminTls(
  secrets: Informer<KubeObject>,
  coordinator: Pick<Coordinator, "metadata" | "spec">,
): AdminTls | SecretProblem | undefined {
  const { tls } = coordinator.spec;
  if (tls === undefined) return undefined;
  const namespace = coordinator.metadata.namespace ?? "";
  const ca = secretValue(secrets, namespace, tls.secretName, TLS_CA_KEY);
  // A Secret without ca.crt (an ACME certificate) is verified against the public CAs; a missing
  // Secret is not taken for one: the trust would silently widen.
  if (typeof ca !== "string" && ca.reason === "SecretMissing") return ca;
  return {
    ca: typeof ca === "string" ? ca : undefined,
    serverName: tls.serverName ?? `${coordinator.metadata.name}.${namespace}.svc`,
  };
}
