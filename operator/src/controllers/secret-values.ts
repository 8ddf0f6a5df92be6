import type { Informer } from "../runtime/informer.js";
import type { KubeObject } from "../runtime/kube-api.js";

/** Why a referenced Secret value cannot be used: the reason a Degraded condition carries. */
export interface SecretProblem {
  reason: "SecretMissing" | "SecretKeyMissing";
  message: string;
}

/** A value of a Secret in the informer's cache, decoded, or what is wrong with the reference. */
export function secretValue(
  secrets: Informer<KubeObject>,
  namespace: string,
  name: string,
  key: string,
): string | SecretProblem {
  const secret = secrets.get(namespace, name) as (KubeObject & { data?: Record<string, string> }) | undefined;
  if (secret === undefined) {
    return { reason: "SecretMissing", message: `Secret ${name} does not exist in namespace ${namespace}` };
  }
  const encoded = secret.data?.[key];
  if (encoded === undefined || encoded === "") {
    return { reason: "SecretKeyMissing", message: `Secret ${name} has no key "${key}"` };
  }
  return Buffer.from(encoded, "base64").toString("utf8");
}
