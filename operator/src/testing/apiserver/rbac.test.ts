import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { startFakeApiServer } from "./index.js";
import { testClient, useFakeApiServer } from "./test-client.js";

// RBAC over the Role/ClusterRole/RoleBinding/ClusterRoleBinding objects in the server.

const { api: admin, server } = useFakeApiServer();
beforeAll(async () => {
  await admin.post("/api/v1/namespaces", { metadata: { name: "team" } });
});

const RBAC = "/apis/rbac.authorization.k8s.io/v1";

describe("RBAC", () => {
  it("denies by default with the real Forbidden message", async () => {
    const user = testClient(server(), server().addUser("alice"));
    const get = await user.get("/apis/apps/v1/namespaces/team/deployments/web");
    expect(get.status).toBe(403);
    expect(get.body).toMatchObject({
      kind: "Status",
      reason: "Forbidden",
      code: 403,
      message:
        'deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments" in API group "apps" in the namespace "team"',
      details: { name: "web", group: "apps", kind: "deployments" },
    });
    const list = await user.get("/api/v1/pods");
    expect(list.body.message).toBe(
      'pods is forbidden: User "alice" cannot list resource "pods" in API group "" at the cluster scope',
    );
  });

  it("treats requests without credentials as system:anonymous (public info only)", async () => {
    const anonymous = async (path: string) => {
      const response = await fetch(new URL(path, server().url));
      return { status: response.status, body: (await response.json()) as { message: string } };
    };
    expect((await anonymous("/version")).status).toBe(200);
    const api = await anonymous("/api");
    expect(api.status).toBe(403);
    expect(api.body.message).toBe('forbidden: User "system:anonymous" cannot get path "/api"');
    expect((await anonymous("/api/v1/namespaces/default/pods")).body.message).toBe(
      'pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" in the namespace "default"',
    );
  });

  it("allows discovery to every authenticated user", async () => {
    const user = testClient(server(), server().addUser("bob"));
    for (const path of ["/version", "/api", "/api/v1", "/apis", "/apis/apps/v1"]) {
      expect((await user.get(path)).status).toBe(200);
    }
  });

  it("grants a Role's rules to a service account through a RoleBinding, in that namespace only", async () => {
    await admin.post(`${RBAC}/namespaces/team/roles`, {
      metadata: { name: "deployer" },
      rules: [
        { apiGroups: ["apps"], resources: ["deployments"], verbs: ["get", "list", "create"] },
        { apiGroups: ["apps"], resources: ["deployments/status"], verbs: ["update"] },
        { apiGroups: [""], resources: ["configmaps"], resourceNames: ["settings"], verbs: ["get"] },
      ],
    });
    await admin.post(`${RBAC}/namespaces/team/rolebindings`, {
      metadata: { name: "deployer" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "deployer" },
      subjects: [{ kind: "ServiceAccount", name: "op", namespace: "team" }],
    });
    const sa = testClient(server(), server().addUser("system:serviceaccount:team:op"));
    expect((await sa.get("/apis/apps/v1/namespaces/team/deployments")).status).toBe(200);
    expect((await sa.get("/apis/apps/v1/namespaces/default/deployments")).status).toBe(403);
    const update = await sa.put("/apis/apps/v1/namespaces/team/deployments/x", {});
    expect(update.body.message).toBe(
      'deployments.apps "x" is forbidden: User "system:serviceaccount:team:op" cannot update resource "deployments" in API group "apps" in the namespace "team"',
    );
    // The status subresource is granted separately (404: allowed, but there is no such deployment).
    expect((await sa.put("/apis/apps/v1/namespaces/team/deployments/x/status", {})).status).toBe(404);
    expect((await sa.get("/api/v1/namespaces/team/configmaps/settings")).status).toBe(404);
    expect((await sa.get("/api/v1/namespaces/team/configmaps/other")).status).toBe(403);
    expect((await sa.get("/api/v1/namespaces/team/configmaps")).status).toBe(403);
  });

  it("grants ClusterRoles cluster-wide to groups, with wildcards", async () => {
    await admin.post(`${RBAC}/clusterroles`, {
      metadata: { name: "reader" },
      rules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["get", "list", "watch"] }],
    });
    await admin.post(`${RBAC}/clusterrolebindings`, {
      metadata: { name: "readers" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "reader" },
      subjects: [{ kind: "Group", name: "auditors" }],
    });
    const auditor = testClient(server(), server().addUser("carol", ["auditors"]));
    expect((await auditor.get("/api/v1/namespaces/team/configmaps")).status).toBe(200);
    expect((await auditor.get("/apis/apps/v1/deployments")).status).toBe(200);
    expect(
      (await auditor.post("/api/v1/namespaces/team/configmaps", { metadata: { name: "x" } })).status,
    ).toBe(403);
  });

  it("binds ClusterRoles in one namespace with a RoleBinding, and matches system:serviceaccounts groups", async () => {
    await admin.post(`${RBAC}/clusterroles`, {
      metadata: { name: "cm-writer" },
      rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["*"] }],
    });
    await admin.post(`${RBAC}/namespaces/team/rolebindings`, {
      metadata: { name: "all-sas" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "cm-writer" },
      subjects: [{ kind: "Group", name: "system:serviceaccounts:team" }],
    });
    const sa = testClient(server(), server().addUser("system:serviceaccount:team:any"));
    expect((await sa.post("/api/v1/namespaces/team/configmaps", { metadata: { name: "mine" } })).status).toBe(
      201,
    );
    expect(
      (await sa.post("/api/v1/namespaces/default/configmaps", { metadata: { name: "mine" } })).status,
    ).toBe(403);
  });

  it("allows everything to system:masters, and everything to everyone with authorization allow-all", async () => {
    const master = testClient(server(), server().addUser("root", ["system:masters"]));
    expect((await master.get("/api/v1/secrets")).status).toBe(200);
    const open = await startFakeApiServer({ authorization: "allow-all" });
    try {
      const anyone = testClient(open, open.addUser("dave"));
      expect((await anyone.get("/api/v1/secrets")).status).toBe(200);
      expect((await testClient(open, "nope").get("/api/v1/secrets")).status).toBe(401);
    } finally {
      await open.close();
    }
  });

  it("writes a kubeconfig for a token", () => {
    const token = server().addUser("erin");
    const config = parse(server().kubeconfig(token, "team"));
    expect(config["current-context"]).toBe("fake");
    expect(config.clusters[0].cluster.server).toBe(server().url.replace("http://", "https://"));
    expect(
      Buffer.from(config.clusters[0].cluster["certificate-authority-data"], "base64").toString(),
    ).toContain("BEGIN CERTIFICATE");
    expect(config.users[0]).toEqual({ name: "erin", user: { token } });
    expect(config.contexts[0].context).toEqual({ cluster: "fake", user: "erin", namespace: "team" });
  });
});
