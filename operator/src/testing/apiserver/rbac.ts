import { isObject, type Json, type JsonObject, meta, str } from "./json.js";
import { ApiError, forbidden } from "./status-errors.js";
import type { Store } from "./store.js";

export interface UserInfo {
  name: string;
  groups: string[];
}

/** What a request does, as the authorizer sees it (the real RequestInfo). */
export interface RequestAttributes {
  user: UserInfo;
  verb: string;
  isResource: boolean;
  path: string;
  apiGroup: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
}

const RBAC = "rbac.authorization.k8s.io";

/** Paths the built-in system:discovery role opens to every authenticated user. */
const DISCOVERY = ["/api", "/apis", "/openapi"];
/** Paths the built-in system:public-info-viewer role opens to everyone, anonymous users included. */
const PUBLIC_INFO = ["/version", "/healthz", "/livez", "/readyz"];

function strings(value: Json | undefined): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

function has(list: string[], value: string): boolean {
  return list.includes("*") || list.includes(value);
}

function resourceMatches(rule: string[], resource: string, subresource: string): boolean {
  const combined = subresource ? `${resource}/${subresource}` : resource;
  return rule.some((r) => r === "*" || r === combined || (subresource !== "" && r === `*/${subresource}`));
}

function ruleAllows(rule: JsonObject, a: RequestAttributes): boolean {
  if (!has(strings(rule.verbs), a.verb)) return false;
  if (!a.isResource) {
    return strings(rule.nonResourceURLs).some(
      (u) => u === "*" || u === a.path || (u.endsWith("*") && a.path.startsWith(u.slice(0, -1))),
    );
  }
  if (!has(strings(rule.apiGroups), a.apiGroup)) return false;
  if (!resourceMatches(strings(rule.resources), a.resource, a.subresource)) return false;
  const names = strings(rule.resourceNames);
  return names.length === 0 || names.includes(a.name);
}

function subjectMatches(subject: JsonObject, user: UserInfo, bindingNamespace: string): boolean {
  const name = str(subject.name);
  switch (subject.kind) {
    case "User":
      return name === user.name;
    case "Group":
      return name !== undefined && user.groups.includes(name);
    case "ServiceAccount":
      return user.name === `system:serviceaccount:${str(subject.namespace) ?? bindingNamespace}:${name}`;
    default:
      return false;
  }
}

/**
 * The RBAC authorizer over the Role, ClusterRole, RoleBinding and ClusterRoleBinding objects in the
 * store; members of system:masters are always allowed, as the real server's superuser group is.
 */
export function authorize(store: Store, a: RequestAttributes): boolean {
  if (a.user.groups.includes("system:masters")) return true;
  const under = (paths: string[]) => paths.some((p) => a.path === p || a.path.startsWith(`${p}/`));
  if (!a.isResource && a.verb === "get") {
    if (under(PUBLIC_INFO)) return true;
    if (a.user.groups.includes("system:authenticated") && under(DISCOVERY)) return true;
  }
  const rulesOf = (kind: string, namespace: string, roleName: string): JsonObject[] => {
    const role =
      kind === "ClusterRole"
        ? store.get(`${RBAC}/clusterroles`, "", roleName)
        : store.get(`${RBAC}/roles`, namespace, roleName);
    return role && Array.isArray(role.rules) ? role.rules.filter(isObject) : [];
  };
  const allowedBy = (binding: JsonObject, namespace: string): boolean => {
    const subjects = Array.isArray(binding.subjects) ? binding.subjects.filter(isObject) : [];
    if (!subjects.some((s) => subjectMatches(s, a.user, namespace))) return false;
    const ref = isObject(binding.roleRef) ? binding.roleRef : {};
    return rulesOf(str(ref.kind) ?? "", namespace, str(ref.name) ?? "").some((rule) => ruleAllows(rule, a));
  };
  if (store.list(`${RBAC}/clusterrolebindings`).some((b) => allowedBy(b, ""))) return true;
  if (!a.namespace || !a.isResource) return false;
  return store
    .list(`${RBAC}/rolebindings`, a.namespace)
    .some((b) => allowedBy(b, str(meta(b).namespace) ?? ""));
}

/** The real denial: `deployments.apps "x" is forbidden: User "u" cannot update resource "deployments" in API group "apps" in the namespace "ns"`. */
export function denied(a: RequestAttributes): ApiError {
  if (!a.isResource) {
    return new ApiError(
      403,
      "Forbidden",
      `forbidden: User "${a.user.name}" cannot ${a.verb} path "${a.path}"`,
    );
  }
  const resource = a.subresource ? `${a.resource}/${a.subresource}` : a.resource;
  const scope = a.namespace ? `in the namespace "${a.namespace}"` : "at the cluster scope";
  return forbidden(
    a.apiGroup,
    a.resource,
    a.name || undefined,
    `User "${a.user.name}" cannot ${a.verb} resource "${resource}" in API group "${a.apiGroup}" ${scope}`,
  );
}
