import { describe, expect, test } from "vitest";
import { compiled, widget, widgetCrd } from "./fixtures.js";
import { compileCrd } from "./index.js";
import type { Json } from "./types.js";

type JsonObject = { [key: string]: Json };

const BLOCKED = {
  reason: "FieldValueInvalid",
  field: "<nil>",
  message:
    "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
};

/** What the server does with a request body: prune, default, validate. */
function admit(object: JsonObject, old?: JsonObject) {
  const version = compiled(widgetCrd());
  version.prune(object);
  version.applyDefaults(object);
  return version.validate(object, old);
}

describe("a realistic Widget CRD", () => {
  test("compiles into one served version with its identity, subresources and columns", () => {
    const { versions, causes } = compileCrd(widgetCrd());
    expect(causes).toEqual([]);
    const [version] = versions;
    expect(version).toMatchObject({
      group: "example.com",
      version: "v1",
      kind: "Widget",
      plural: "widgets",
      namespaced: true,
      hasStatus: true,
      scale: {
        specReplicasPath: ".spec.replicas",
        statusReplicasPath: ".status.replicas",
        labelSelectorPath: ".status.selector",
      },
    });
    expect(version?.printerColumns).toEqual([
      { name: "Replicas", type: "integer", priority: 0, jsonPath: ".spec.replicas" },
      { name: "Tier", type: "string", priority: 1, jsonPath: ".spec.tier" },
      {
        name: "Ready",
        type: "string",
        priority: 0,
        jsonPath: '.status.conditions[?(@.type=="Ready")].status',
      },
      { name: "Age", type: "date", priority: 0, jsonPath: ".metadata.creationTimestamp" },
    ]);
  });

  test("prunes unknown fields, keeps apiVersion, kind and metadata, and applies defaults", () => {
    const version = compiled(widgetCrd());
    const object = widget({ replicas: null, extra: true, ports: [{ name: "http", port: 80, bogus: 1 }] });
    object.status = { conditions: [{ type: "Ready", status: "True", extra: "x" }], unknown: 1 };
    version.prune(object);
    version.applyDefaults(object);
    expect(object).toEqual({
      apiVersion: "example.com/v1",
      kind: "Widget",
      metadata: { name: "w1", namespace: "default", creationTimestamp: "2024-05-01T10:00:00Z" },
      spec: {
        identity: "alpha",
        replicas: 1,
        tier: "free",
        ports: [{ name: "http", port: 80, protocol: "TCP" }],
      },
      status: { conditions: [{ type: "Ready", status: "True" }] },
    });
    expect(version.validate(object)).toEqual([]);
  });

  test("refuses a value of the wrong type, and then does not run the rules", () => {
    expect(admit(widget({ replicas: "3" }))).toEqual([
      {
        reason: "FieldValueTypeInvalid",
        field: "spec.replicas",
        message: 'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
      },
      BLOCKED,
    ]);
  });

  test("refuses a negative replica count, an unknown tier and a missing identity", () => {
    const object = widget({ replicas: -1, tier: "gold" });
    delete (object.spec as JsonObject).identity;
    expect(admit(object)).toEqual([
      { reason: "FieldValueRequired", field: "spec.identity", message: "Required value" },
      {
        reason: "FieldValueInvalid",
        field: "spec.replicas",
        message: "Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
      },
      {
        reason: "FieldValueNotSupported",
        field: "spec.tier",
        message: 'Unsupported value: "gold": supported values: "free", "pro", "enterprise"',
      },
      BLOCKED,
    ]);
  });

  test("keeps the identity immutable, but only on update", () => {
    expect(admit(widget({ identity: "beta" }))).toEqual([]);
    expect(admit(widget({ identity: "beta" }), widget({ identity: "beta" }))).toEqual([]);
    expect(admit(widget({ identity: "beta" }), widget({ identity: "alpha" }))).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.identity",
        message: 'Invalid value: "beta": identity is immutable',
      },
    ]);
  });

  test("checks replicas against maxReplicas, reported at the rule's fieldPath", () => {
    expect(admit(widget({ replicas: 3, maxReplicas: 5 }))).toEqual([]);
    expect(admit(widget({ replicas: 6, maxReplicas: 5 }))).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.replicas",
        message: "Invalid value: replicas must not exceed maxReplicas",
      },
    ]);
  });

  test("validates the values of the labels map, keyed in the path", () => {
    expect(admit(widget({ labels: { app: "web", team: "a-long-team-name" } }))).toEqual([
      {
        reason: "FieldValueTooLong",
        field: "spec.labels[team]",
        message: "Too long: may not be more than 8 bytes",
      },
      BLOCKED,
    ]);
  });

  test("refuses duplicate list-map keys and too many ports", () => {
    const ports = [
      { name: "http", port: 80 },
      { name: "https", port: 443 },
      { name: "http", port: 8080 },
      { name: "admin", port: 9000 },
    ];
    expect(admit(widget({ ports }))).toEqual([
      { reason: "FieldValueTooMany", field: "spec.ports", message: "Too many: 4: must have at most 3 items" },
      {
        reason: "FieldValueDuplicate",
        field: "spec.ports[2]",
        message: 'Duplicate value: map[string]interface {}{"name":"http"}',
      },
      BLOCKED,
    ]);
  });

  test("checks the pattern of the endpoint and the metadata name", () => {
    const object = widget({ endpoint: "http://example.com" });
    (object.metadata as JsonObject).name = "Widget_1";
    expect(admit(object)).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.endpoint",
        message: "Invalid value: \"http://example.com\": spec.endpoint in body should match '^https://'",
      },
      {
        reason: "FieldValueInvalid",
        field: "metadata.name",
        message:
          "Invalid value: \"Widget_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
      },
    ]);
  });

  test("validates the status conditions", () => {
    const object = widget();
    object.status = {
      conditions: [
        { type: "Ready", status: "Maybe" },
        { type: "Ready", status: "True", lastTransitionTime: "yesterday" },
      ],
    };
    expect(admit(object)).toEqual([
      {
        reason: "FieldValueNotSupported",
        field: "status.conditions[0].status",
        message: 'Unsupported value: "Maybe": supported values: "True", "False", "Unknown"',
      },
      {
        reason: "FieldValueTypeInvalid",
        field: "status.conditions[1].lastTransitionTime",
        message:
          'Invalid value: "yesterday": status.conditions[1].lastTransitionTime in body must be of type date-time: "yesterday"',
      },
      {
        reason: "FieldValueDuplicate",
        field: "status.conditions[1]",
        message: 'Duplicate value: map[string]interface {}{"type":"Ready"}',
      },
      BLOCKED,
    ]);
  });

  test("computes the Table cells, null where a path selects nothing", () => {
    const version = compiled(widgetCrd());
    const object = widget();
    version.applyDefaults(object);
    expect(version.cells(object)).toEqual([2, "free", null, "2024-05-01T10:00:00Z"]);
    object.status = {
      conditions: [
        { type: "Synced", status: "False" },
        { type: "Ready", status: "True" },
      ],
    };
    expect(version.cells(object)).toEqual([2, "free", "True", "2024-05-01T10:00:00Z"]);
  });
});
