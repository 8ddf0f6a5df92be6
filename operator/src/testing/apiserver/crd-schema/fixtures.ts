// Test fixtures: a realistic CRD (a Widget with defaults, an enum, an immutable identity, a cross-field
// rule, a map of strings, a list-map, a status with conditions, the scale subresource and printer
// columns), and a one-version CRD around any schema for the focused tests. exampleCrd and
// statusAndScale also build the Gadget CRD of the server's HTTP tests (../test-client.ts).

import { compileCrd } from "./compile.js";
import type { CompiledVersion, Json } from "./types.js";

type JsonObject = { [key: string]: Json };

/** A namespaced CRD in the group example.com, named `<plural>.example.com`. */
export function exampleCrd(names: JsonObject & { plural: string }, versions: JsonObject[]): JsonObject {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${names.plural}.example.com` },
    spec: { group: "example.com", names, scope: "Namespaced", versions },
  };
}

export function widgetCrd(): JsonObject {
  return exampleCrd({ plural: "widgets", singular: "widget", kind: "Widget", shortNames: ["wd"] }, [
    {
      name: "v1",
      served: true,
      storage: true,
      subresources: statusAndScale(),
      additionalPrinterColumns: [
        { name: "Replicas", type: "integer", jsonPath: ".spec.replicas" },
        { name: "Tier", type: "string", jsonPath: ".spec.tier", priority: 1 },
        { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
        { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
      ],
      schema: { openAPIV3Schema: widgetSchema() },
    },
  ]);
}

/** The status and scale subresources, scale over spec.replicas, status.replicas and status.selector. */
export function statusAndScale(): JsonObject {
  return {
    status: {},
    scale: {
      specReplicasPath: ".spec.replicas",
      statusReplicasPath: ".status.replicas",
      labelSelectorPath: ".status.selector",
    },
  };
}

function widgetSchema(): JsonObject {
  return {
    type: "object",
    properties: {
      spec: {
        type: "object",
        required: ["identity"],
        properties: {
          identity: {
            type: "string",
            minLength: 1,
            maxLength: 63,
            "x-kubernetes-validations": [{ rule: "self == oldSelf", message: "identity is immutable" }],
          },
          replicas: { type: "integer", format: "int32", default: 1, minimum: 0 },
          maxReplicas: { type: "integer", format: "int32", minimum: 0 },
          tier: { type: "string", enum: ["free", "pro", "enterprise"], default: "free" },
          labels: { type: "object", additionalProperties: { type: "string", maxLength: 8 } },
          ports: {
            type: "array",
            maxItems: 3,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            items: {
              type: "object",
              required: ["name", "port"],
              properties: {
                name: { type: "string" },
                port: { type: "integer", minimum: 1, maximum: 65535 },
                protocol: { type: "string", enum: ["TCP", "UDP"], default: "TCP" },
              },
            },
          },
          endpoint: { type: "string", pattern: "^https://" },
        },
        "x-kubernetes-validations": [
          {
            rule: "!has(self.maxReplicas) || self.replicas <= self.maxReplicas",
            message: "replicas must not exceed maxReplicas",
            fieldPath: ".replicas",
          },
        ],
      },
      status: {
        type: "object",
        properties: {
          replicas: { type: "integer" },
          selector: { type: "string" },
          conditions: {
            type: "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            items: {
              type: "object",
              required: ["type", "status"],
              properties: {
                type: { type: "string" },
                status: { type: "string", enum: ["True", "False", "Unknown"] },
                reason: { type: "string" },
                message: { type: "string" },
                lastTransitionTime: { type: "string", format: "date-time" },
              },
            },
          },
        },
      },
    },
  };
}

/** A valid Widget as a client would send it. */
export function widget(spec: JsonObject = {}): JsonObject {
  return {
    apiVersion: "example.com/v1",
    kind: "Widget",
    metadata: { name: "w1", namespace: "default", creationTimestamp: "2024-05-01T10:00:00Z" },
    spec: { identity: "alpha", replicas: 2, ...spec },
  };
}

/** A one-version CRD around `schema` (Thing, things.example.com), with extra version fields. */
export function crdWith(schema: JsonObject, version: JsonObject = {}): JsonObject {
  return exampleCrd({ plural: "things", kind: "Thing" }, [
    { name: "v1", served: true, storage: true, schema: { openAPIV3Schema: schema }, ...version },
  ]);
}

/** A root schema whose `spec` is the given schema. */
export function specSchema(spec: JsonObject): JsonObject {
  return { type: "object", properties: { spec } };
}

/** A Thing with the given spec. */
export function thing(spec: Json): JsonObject {
  return {
    apiVersion: "example.com/v1",
    kind: "Thing",
    metadata: { name: "t1", namespace: "default" },
    spec,
  };
}

/** Compiles a CRD that must be accepted, and returns its single served version. */
export function compiled(crd: JsonObject): CompiledVersion {
  const { versions, causes } = compileCrd(crd);
  const [version] = versions;
  if (causes.length > 0 || version === undefined)
    throw new Error(`refused: ${JSON.stringify(causes, null, 2)}`);
  return version;
}
