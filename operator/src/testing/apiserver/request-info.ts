/**
 * What a URL and method ask for, as the real server's RequestInfoFactory reads them: resource
 * requests (`/api/v1/...`, `/apis/{group}/{version}/...`) get a verb, resource, subresource, namespace
 * and name; everything else is a non-resource request on a path.
 */
export interface RequestInfo {
  isResource: boolean;
  path: string;
  verb: string;
  apiGroup: string;
  apiVersion: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
}

/** Namespace subresources: `/api/v1/namespaces/x/status` is the status of namespace x, not a resource "status" in it. */
const NAMESPACE_SUBRESOURCES = new Set(["status", "finalize"]);

const METHOD_VERBS: Record<string, string> = { POST: "create", PUT: "update", PATCH: "patch" };

export function requestInfo(method: string, url: URL): RequestInfo {
  const path = url.pathname;
  const nonResource: RequestInfo = {
    isResource: false,
    path,
    verb: (method === "GET" || method === "HEAD" ? "get" : METHOD_VERBS[method]) ?? method.toLowerCase(),
    apiGroup: "",
    apiVersion: "",
    resource: "",
    subresource: "",
    namespace: "",
    name: "",
  };
  const segments = path.split("/").filter((s) => s !== "");
  let rest: string[];
  let apiGroup: string;
  let apiVersion: string;
  if (segments[0] === "api" && segments.length >= 3) {
    [apiGroup, apiVersion, rest] = ["", segments[1]!, segments.slice(2)];
  } else if (segments[0] === "apis" && segments.length >= 4) {
    [apiGroup, apiVersion, rest] = [segments[1]!, segments[2]!, segments.slice(3)];
  } else return nonResource;

  let watchPrefix = false;
  if (rest[0] === "watch") {
    watchPrefix = true;
    rest = rest.slice(1);
  }
  let namespace = "";
  if (rest[0] === "namespaces" && rest.length > 1) {
    namespace = rest[1]!;
    if (rest.length > 2 && !NAMESPACE_SUBRESOURCES.has(rest[2]!)) rest = rest.slice(2);
  }
  if (rest.length === 0 || rest.length > 3) return nonResource;
  const [resource, name = "", subresource = ""] = rest as [string, string?, string?];

  const watch = url.searchParams.get("watch");
  let verb: string;
  switch (method) {
    case "GET":
    case "HEAD":
      verb = watchPrefix || watch === "true" || watch === "1" ? "watch" : name ? "get" : "list";
      break;
    case "DELETE":
      verb = name ? "delete" : "deletecollection";
      break;
    default:
      verb = METHOD_VERBS[method] ?? method.toLowerCase();
  }
  return { isResource: true, path, verb, apiGroup, apiVersion, resource, subresource, namespace, name };
}
