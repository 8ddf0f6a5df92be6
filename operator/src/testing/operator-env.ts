import { KubeConfig } from "@kubernetes/client-node";
import { coordinatorCrd, providerReleaseCrd } from "../api/v1alpha1/crds.js";
import { LEADER_ELECTION_RULES, OPERATOR_RULES } from "../rbac.js";
import { KubeApi, type KubeObject, type ResourceType } from "../runtime/kube-api.js";
import { type FakeApiServer, type FakeApiServerOptions, startFakeApiServer } from "./apiserver/index.js";

const CRDS: ResourceType = {
  group: "apiextensions.k8s.io",
  version: "v1",
  plural: "customresourcedefinitions",
  kind: "CustomResourceDefinition",
  namespaced: false,
};
const NAMESPACES: ResourceType = {
  group: "",
  version: "v1",
  plural: "namespaces",
  kind: "Namespace",
  namespaced: false,
};
const SERVICE_ACCOUNTS: ResourceType = {
  group: "",
  version: "v1",
  plural: "serviceaccounts",
  kind: "ServiceAccount",
  namespaced: true,
};
const rbac = (plural: string, kind: string, namespaced: boolean): ResourceType => ({
  group: "rbac.authorization.k8s.io",
  version: "v1",
  plural,
  kind,
  namespaced,
});

export const OPERATOR_NAMESPACE = "darkbloom-system";
export const OPERATOR_SERVICE_ACCOUNT = "darkbloom-operator";
export const OPERATOR_USER = `system:serviceaccount:${OPERATOR_NAMESPACE}:${OPERATOR_SERVICE_ACCOUNT}`;

/**
 * A fake API server set up as the Helm chart sets up a cluster: the operator's CRDs, its namespace,
 * its ServiceAccount bound to exactly the rules of rbac.ts (the server enforces RBAC, so a request
 * the rules do not allow fails the test that makes it), and a namespace for the workloads.
 */
export interface OperatorTestEnv {
  readonly apiServer: FakeApiServer;
  /** A superuser's client: the platform team's kubectl. */
  readonly admin: KubeApi;
  readonly adminKubeConfig: KubeConfig;
  /** The operator's service account credentials. */
  readonly operatorKubeConfig: KubeConfig;
  /** The operator's kubeconfig as a file's text (for operator processes). */
  readonly operatorKubeconfigYaml: string;
  /** Where Coordinators are applied. */
  readonly namespace: string;
  close(): Promise<void>;
}

export async function startOperatorEnv(
  options: { namespace?: string; apiServer?: FakeApiServerOptions } = {},
): Promise<OperatorTestEnv> {
  const apiServer = await startFakeApiServer(options.apiServer);
  try {
    const adminKubeConfig = kubeConfigOf(apiServer.kubeconfig(apiServer.adminToken));
    const admin = new KubeApi(adminKubeConfig);
    for (const crd of [coordinatorCrd(), providerReleaseCrd()])
      await admin.create(CRDS, crd as unknown as KubeObject);
    const namespace = options.namespace ?? "darkbloom";
    for (const name of [OPERATOR_NAMESPACE, namespace]) {
      await admin.create(NAMESPACES, { apiVersion: "v1", kind: "Namespace", metadata: { name } });
    }
    await admin.create(SERVICE_ACCOUNTS, {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: OPERATOR_SERVICE_ACCOUNT, namespace: OPERATOR_NAMESPACE },
    });
    const subject = { kind: "ServiceAccount", name: OPERATOR_SERVICE_ACCOUNT, namespace: OPERATOR_NAMESPACE };
    await admin.create(rbac("clusterroles", "ClusterRole", false), {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRole",
      metadata: { name: "darkbloom-operator" },
      rules: OPERATOR_RULES,
    });
    await admin.create(rbac("clusterrolebindings", "ClusterRoleBinding", false), {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: "darkbloom-operator" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "darkbloom-operator" },
      subjects: [subject],
    });
    await admin.create(rbac("roles", "Role", true), {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name: "darkbloom-operator-leader-election", namespace: OPERATOR_NAMESPACE },
      rules: LEADER_ELECTION_RULES,
    });
    await admin.create(rbac("rolebindings", "RoleBinding", true), {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: "darkbloom-operator-leader-election", namespace: OPERATOR_NAMESPACE },
      roleRef: {
        apiGroup: "rbac.authorization.k8s.io",
        kind: "Role",
        name: "darkbloom-operator-leader-election",
      },
      subjects: [subject],
    });
    const token = apiServer.addUser(OPERATOR_USER, [
      "system:serviceaccounts",
      `system:serviceaccounts:${OPERATOR_NAMESPACE}`,
      "system:authenticated",
    ]);
    const operatorKubeconfigYaml = apiServer.kubeconfig(token, OPERATOR_NAMESPACE);
    return {
      apiServer,
      admin,
      adminKubeConfig,
      operatorKubeConfig: kubeConfigOf(operatorKubeconfigYaml),
      operatorKubeconfigYaml,
      namespace,
      close: () => apiServer.close(),
    };
  } catch (error) {
    await apiServer.close();
    throw error;
  }
}

function kubeConfigOf(yaml: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(yaml);
  return kc;
}
