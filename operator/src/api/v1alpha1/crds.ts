import { stringify } from "yaml";
import type { JSONSchemaProps, Schema, ValidationRule } from "../schema.js";
import { coordinatorRootRules, coordinatorSpecSchema, coordinatorStatusSchema } from "./coordinator-types.js";
import { CATEGORIES, COORDINATOR, GROUP, PROVIDER_RELEASE, VERSION } from "./group-version.js";
import { providerReleaseSpecSchema, providerReleaseStatusSchema } from "./provider-release-types.js";

// The CustomResourceDefinitions, generated from the schemas of the types: `kubectl apply` them from
// operator/config/crd/, which a test keeps equal to what is rendered here.

export interface PrinterColumn {
  name: string;
  type: "integer" | "number" | "string" | "boolean" | "date";
  jsonPath: string;
  description?: string;
  priority?: number;
}

export interface CustomResourceDefinitionVersion {
  name: string;
  served: boolean;
  storage: boolean;
  schema: { openAPIV3Schema: JSONSchemaProps };
  subresources?: {
    status?: Record<string, never>;
    scale?: { specReplicasPath: string; statusReplicasPath: string; labelSelectorPath?: string };
  };
  additionalPrinterColumns?: PrinterColumn[];
}

/** An apiextensions.k8s.io/v1 CustomResourceDefinition, with its schema keys as the API spells them. */
export interface CustomResourceDefinition {
  apiVersion: "apiextensions.k8s.io/v1";
  kind: "CustomResourceDefinition";
  metadata: { name: string };
  spec: {
    group: string;
    names: {
      kind: string;
      listKind: string;
      plural: string;
      singular: string;
      shortNames: string[];
      categories: string[];
    };
    scope: "Namespaced" | "Cluster";
    versions: CustomResourceDefinitionVersion[];
  };
}

/** The object's root: the API server owns `metadata` (its schema stays `type: object`). */
function rootSchema(
  description: string,
  spec: Schema<unknown>,
  status: Schema<unknown>,
  rules: ValidationRule[] = [],
): JSONSchemaProps {
  return {
    description,
    type: "object",
    properties: {
      apiVersion: {
        description: "The versioned schema of this representation of an object.",
        type: "string",
      },
      kind: { description: "The REST resource this object represents.", type: "string" },
      metadata: { type: "object" },
      spec: spec.node,
      status: status.node,
    },
    required: ["spec"],
    ...(rules.length > 0 ? { "x-kubernetes-validations": rules } : {}),
  };
}

function conditionColumn(
  name: string,
  type: string,
  field: "status" | "reason",
  priority = 0,
): PrinterColumn {
  return {
    name,
    type: "string",
    jsonPath: `.status.conditions[?(@.type=="${type}")].${field}`,
    ...(priority > 0 ? { priority } : {}),
  };
}

const AGE: PrinterColumn = { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" };

function crd(
  names: typeof COORDINATOR | typeof PROVIDER_RELEASE,
  version: Omit<CustomResourceDefinitionVersion, "name" | "served" | "storage">,
): CustomResourceDefinition {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${names.plural}.${GROUP}` },
    spec: {
      group: GROUP,
      names: {
        kind: names.kind,
        listKind: names.listKind,
        plural: names.plural,
        singular: names.singular,
        shortNames: [...names.shortNames],
        categories: [...CATEGORIES],
      },
      scope: "Namespaced",
      versions: [{ name: VERSION, served: true, storage: true, ...version }],
    },
  };
}

export function coordinatorCrd(): CustomResourceDefinition {
  return crd(COORDINATOR, {
    schema: {
      openAPIV3Schema: rootSchema(
        "A Darkbloom coordinator cluster: replicas of the coordinator sharing one PostgreSQL database.",
        coordinatorSpecSchema,
        coordinatorStatusSchema,
        coordinatorRootRules,
      ),
    },
    subresources: {
      status: {},
      scale: {
        specReplicasPath: ".spec.replicas",
        statusReplicasPath: ".status.replicas",
        labelSelectorPath: ".status.selector",
      },
    },
    additionalPrinterColumns: [
      { name: "Desired", type: "integer", jsonPath: ".spec.replicas" },
      { name: "Ready", type: "integer", jsonPath: ".status.readyReplicas" },
      { name: "Image", type: "string", jsonPath: ".status.currentImage", priority: 1 },
      conditionColumn("Status", "Ready", "status"),
      conditionColumn("Reason", "Degraded", "reason", 1),
      AGE,
    ],
  });
}

export function providerReleaseCrd(): CustomResourceDefinition {
  return crd(PROVIDER_RELEASE, {
    schema: {
      openAPIV3Schema: rootSchema(
        "A provider daemon release, registered with a Coordinator's admin API.",
        providerReleaseSpecSchema,
        providerReleaseStatusSchema,
      ),
    },
    subresources: { status: {} },
    additionalPrinterColumns: [
      { name: "Version", type: "string", jsonPath: ".spec.version" },
      { name: "Platform", type: "string", jsonPath: ".spec.platform" },
      { name: "Active", type: "boolean", jsonPath: ".spec.active" },
      conditionColumn("Synced", "Synced", "status"),
      AGE,
    ],
  });
}

const HEADER =
  "# Generated from operator/src/api/v1alpha1 (crds.ts): do not edit.\n" +
  "# Regenerate with: npm run build && node operator/dist/api/write-crds.js\n";

/** Long lines are kept whole: a folded CEL rule or pattern is harder to read and to grep. */
function toYaml(crd: CustomResourceDefinition): string {
  return stringify(crd, { lineWidth: 0 });
}

/** One CRD as a YAML file. */
export function renderCrdYaml(crd: CustomResourceDefinition): string {
  return HEADER + toYaml(crd);
}

/** Both CRDs as one multi-document YAML stream. */
export function renderCrdsYaml(): string {
  return HEADER + [coordinatorCrd(), providerReleaseCrd()].map(toYaml).join("---\n");
}

/** The committed CRD files, named as controller-gen names them (`<group>_<plural>.yaml`). */
export function crdFiles(): { name: string; content: string }[] {
  return [coordinatorCrd(), providerReleaseCrd()].map((c) => ({
    name: `${c.spec.group}_${c.spec.names.plural}.yaml`,
    content: renderCrdYaml(c),
  }));
}

/** operator/config/crd/, from src/api/v1alpha1 and from dist/api/v1alpha1 alike. */
export const CRD_DIRECTORY = new URL("../../../config/crd/", import.meta.url);
