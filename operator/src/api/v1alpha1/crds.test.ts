import { readFile } from "node:fs/promises";
import { parse } from "@bufbuild/cel";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import type { JSONSchemaProps } from "../schema.js";
import {
  CRD_DIRECTORY,
  type CustomResourceDefinition,
  coordinatorCrd,
  crdFiles,
  providerReleaseCrd,
  renderCrdsYaml,
} from "./crds.js";

const REGENERATE = "npm run build && node operator/dist/api/write-crds.js";

function rootOf(crd: CustomResourceDefinition): JSONSchemaProps {
  const version = crd.spec.versions[0];
  if (!version) throw new Error("no version");
  return version.schema.openAPIV3Schema;
}

/** Every node below the root with its path, metadata excluded (the API server owns it). */
function* walk(node: JSONSchemaProps, path: string): Generator<[string, JSONSchemaProps]> {
  yield [path, node];
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    if (path === "" && key === "metadata") continue;
    yield* walk(child, `${path}.${key}`);
  }
  if (node.items) yield* walk(node.items, `${path}[]`);
  if (node.additionalProperties) yield* walk(node.additionalProperties, `${path}{}`);
}

describe.each([
  ["Coordinator", coordinatorCrd],
  ["ProviderRelease", providerReleaseCrd],
])("the %s CRD", (_kind, build) => {
  const crd = build();
  const root = rootOf(crd);

  it("is structural: every node typed (or int-or-string, or preserved and closed), defaults typed", () => {
    for (const [path, node] of walk(root, "")) {
      if (node["x-kubernetes-int-or-string"]) {
        expect(node.type, path).toBeUndefined();
        continue;
      }
      expect(node.type, `${path} has no type`).toBeDefined();
      if (node["x-kubernetes-preserve-unknown-fields"]) expect(node.properties, path).toBeUndefined();
      if (node.default !== undefined && node.type !== "object") {
        expect(typeof node.default, path).toBe(node.type === "integer" ? "number" : node.type);
      }
    }
    expect(root.properties?.metadata).toEqual({ type: "object" });
  });

  it("documents every field (kubectl explain)", () => {
    for (const [path, node] of walk(root, "")) {
      expect(node.description, `${path} has no description`).toMatch(/\S/);
    }
  });

  it("keys list-maps by required fields only", () => {
    for (const [path, node] of walk(root, "")) {
      for (const key of node["x-kubernetes-list-map-keys"] ?? []) {
        expect(node.items?.required, path).toContain(key);
      }
    }
  });

  it("has CEL rules that parse", () => {
    for (const [path, node] of walk(root, "")) {
      for (const { rule } of node["x-kubernetes-validations"] ?? []) {
        expect(() => parse(rule), `${path}: ${rule}`).not.toThrow();
      }
    }
  });

  it("names the resource in the darkbloom category, namespaced, one served storage version", () => {
    expect(crd.metadata.name).toBe(`${crd.spec.names.plural}.darkbloom.dev`);
    expect(crd.spec.names.categories).toEqual(["darkbloom"]);
    expect(crd.spec.scope).toBe("Namespaced");
    expect(crd.spec.versions).toHaveLength(1);
    expect(crd.spec.versions[0]).toMatchObject({ name: "v1alpha1", served: true, storage: true });
    expect(crd.spec.versions[0]?.subresources?.status).toEqual({});
  });
});

describe("the CRDs' specifics", () => {
  it("gives Coordinator the scale subresource and its printer columns", () => {
    const crd = coordinatorCrd();
    expect(crd.spec.names).toMatchObject({
      kind: "Coordinator",
      plural: "coordinators",
      shortNames: ["dbc"],
    });
    const version = crd.spec.versions[0];
    expect(version?.subresources?.scale).toEqual({
      specReplicasPath: ".spec.replicas",
      statusReplicasPath: ".status.replicas",
      labelSelectorPath: ".status.selector",
    });
    expect(version?.additionalPrinterColumns).toEqual([
      { name: "Desired", type: "integer", jsonPath: ".spec.replicas" },
      { name: "Ready", type: "integer", jsonPath: ".status.readyReplicas" },
      { name: "Image", type: "string", jsonPath: ".status.currentImage", priority: 1 },
      { name: "Status", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      {
        name: "Reason",
        type: "string",
        jsonPath: '.status.conditions[?(@.type=="Degraded")].reason',
        priority: 1,
      },
      { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    ]);
    const spec = rootOf(crd).properties?.spec;
    expect(spec?.required).toEqual(["image", "database", "adminKeySecretRef"]);
    expect(rootOf(crd).properties?.status?.properties?.conditions).toMatchObject({
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
    });
  });

  it("gives ProviderRelease its printer columns and immutable fields", () => {
    const crd = providerReleaseCrd();
    expect(crd.spec.names).toMatchObject({
      kind: "ProviderRelease",
      plural: "providerreleases",
      shortNames: ["dbrel"],
    });
    expect(crd.spec.versions[0]?.subresources?.scale).toBeUndefined();
    expect(crd.spec.versions[0]?.additionalPrinterColumns?.map((c) => c.name)).toEqual([
      "Version",
      "Platform",
      "Active",
      "Synced",
      "Age",
    ]);
    const properties = rootOf(crd).properties?.spec?.properties ?? {};
    const immutable = Object.entries(properties)
      .filter(([, node]) => node["x-kubernetes-validations"]?.some((r) => r.rule === "self == oldSelf"))
      .map(([name]) => name);
    expect(immutable).toEqual(Object.keys(properties).filter((name) => name !== "active"));
  });

  it("renders both as one YAML stream that reads back as the objects", () => {
    const text = renderCrdsYaml();
    expect(text.startsWith("# Generated")).toBe(true);
    expect(parseAllDocuments(text).map((d) => d.toJSON())).toEqual([coordinatorCrd(), providerReleaseCrd()]);
  });

  it.each(crdFiles().map((f) => [f.name, f.content]))(
    "has %s up to date in operator/config/crd",
    async (name, content) => {
      const committed = await readFile(new URL(name, CRD_DIRECTORY), "utf8").catch(() => "(missing)");
      expect(committed, `operator/config/crd/${name} is stale: regenerate with ${REGENERATE}`).toBe(content);
    },
  );
});
