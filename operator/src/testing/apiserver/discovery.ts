import type { Json, JsonObject } from "./json.js";
import type { ResourceInfo, Resources } from "./resources.js";

// Legacy (non-aggregated) discovery. Clients that ask for the aggregated form (apidiscovery.k8s.io/v2)
// get this with a plain `application/json` content type and fall back to it, as they do with servers
// older than 1.26.

export const VERSION_INFO: JsonObject = {
  major: "1",
  minor: "35",
  emulationMajor: "1",
  emulationMinor: "35",
  minCompatibilityMajor: "1",
  minCompatibilityMinor: "34",
  gitVersion: "v1.35.0",
  gitCommit: "0000000000000000000000000000000000000000",
  gitTreeState: "clean",
  buildDate: "2025-12-17T00:00:00Z",
  goVersion: "go1.25.5",
  compiler: "gc",
  platform: "linux/amd64",
};

function resourceEntries(r: ResourceInfo): JsonObject[] {
  const main: JsonObject = {
    name: r.plural,
    singularName: r.singular,
    namespaced: r.namespaced,
    kind: r.kind,
    verbs: [...r.verbs],
  };
  if (r.shortNames.length > 0) main.shortNames = [...r.shortNames];
  if (r.categories.length > 0) main.categories = [...r.categories];
  const entries = [main];
  const subVerbs = ["get", "patch", "update"];
  if (r.status)
    entries.push({
      name: `${r.plural}/status`,
      singularName: "",
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: subVerbs,
    });
  if (r.scale) {
    entries.push({
      name: `${r.plural}/scale`,
      singularName: "",
      namespaced: r.namespaced,
      group: "autoscaling",
      version: "v1",
      kind: "Scale",
      verbs: subVerbs,
    });
  }
  if (r.group === "" && r.kind === "Pod") {
    entries.push({
      name: "pods/binding",
      singularName: "",
      namespaced: true,
      kind: "Binding",
      verbs: ["create"],
    });
  }
  return entries;
}

/** `/api/v1` or `/apis/{group}/{version}`: an APIResourceList, or undefined when nothing is served there. */
export function resourceList(resources: Resources, group: string, version: string): JsonObject | undefined {
  const served = resources.all().filter((r) => r.group === group && r.version === version);
  if (served.length === 0) return undefined;
  return {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: group ? `${group}/${version}` : version,
    resources: served.flatMap(resourceEntries) as Json[],
  };
}

export function apiVersions(serverAddress: string): JsonObject {
  return {
    kind: "APIVersions",
    versions: ["v1"],
    serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress }],
  };
}

function apiGroup(group: string, versions: string[]): JsonObject {
  const entries = versions.map((version) => ({ groupVersion: `${group}/${version}`, version }));
  return { name: group, versions: entries, preferredVersion: entries[0]! };
}

/** `/apis/{group}`: an APIGroup, or undefined for an unknown group. */
export function groupInfo(resources: Resources, group: string): JsonObject | undefined {
  const found = resources.groups().find((g) => g.group === group && group !== "");
  return found && { kind: "APIGroup", apiVersion: "v1", ...apiGroup(found.group, found.versions) };
}

export function groupList(resources: Resources): JsonObject {
  return {
    kind: "APIGroupList",
    apiVersion: "v1",
    groups: resources
      .groups()
      .filter((g) => g.group !== "")
      .map((g) => apiGroup(g.group, g.versions)),
  };
}
