import { randomBytes } from "node:crypto";
import { stringify } from "yaml";
import type { UserInfo } from "./rbac.js";

const SERVICE_ACCOUNT = /^system:serviceaccount:([^:]+):([^:]+)$/;

/** Bearer tokens and who they authenticate (the real server's static token file). */
export class Users {
  private readonly tokens = new Map<string, UserInfo>();

  /** Mints a token; service accounts get their groups as the real token authenticator adds them. */
  add(name: string, groups: string[] = []): string {
    const all = new Set([...groups, "system:authenticated"]);
    const sa = SERVICE_ACCOUNT.exec(name);
    if (sa) {
      all.add("system:serviceaccounts");
      all.add(`system:serviceaccounts:${sa[1]}`);
    }
    const token = randomBytes(24).toString("base64url");
    this.tokens.set(token, { name, groups: [...all] });
    return token;
  }

  /**
   * The user of an `Authorization: Bearer` header: undefined (401) for an unknown token, and
   * system:anonymous without the header, as the real server with anonymous auth enabled (its default).
   */
  authenticate(authorization: string | undefined): UserInfo | undefined {
    if (authorization === undefined) return { name: "system:anonymous", groups: ["system:unauthenticated"] };
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    return m ? this.tokens.get(m[1]!) : undefined;
  }

  /**
   * A kubeconfig for a token. Its server is https: client-go (kubectl, helm) sends no credentials to
   * an http:// server and @kubernetes/client-node refuses one unless TLS checks are off; the CA is
   * the fake's own certificate.
   */
  kubeconfig(server: string, caPem: string, token: string, namespace = "default"): string {
    const user = this.tokens.get(token)?.name ?? "unknown";
    const ca = Buffer.from(caPem).toString("base64");
    return stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "fake", cluster: { server, "certificate-authority-data": ca } }],
      users: [{ name: user, user: { token } }],
      contexts: [{ name: "fake", context: { cluster: "fake", user, namespace } }],
      "current-context": "fake",
      preferences: {},
    });
  }
}
