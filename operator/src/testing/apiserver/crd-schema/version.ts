// One served version of a CRD, compiled: what the fake API server calls for each custom resource.

import { invalid, REASON } from "./causes.js";
import { type Column, cells } from "./columns.js";
import { applyDefaults } from "./defaults.js";
import { validateListTypes } from "./list-types.js";
import { validateObjectMeta } from "./object-meta.js";
import { pruneObject } from "./prune.js";
import type { RuleSet } from "./rules.js";
import type { SchemaNode } from "./schema.js";
import type { CompiledVersion, FieldCause, Json, ScalePaths } from "./types.js";
import { validateSchema } from "./validate.js";

export interface VersionParts {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly namespaced: boolean;
  readonly hasStatus: boolean;
  readonly scale: ScalePaths | undefined;
  readonly columns: readonly Column[];
  readonly schema: SchemaNode;
  readonly rules: RuleSet;
}

export function compiledVersion(parts: VersionParts): CompiledVersion {
  const { schema, rules, columns } = parts;
  return {
    group: parts.group,
    version: parts.version,
    kind: parts.kind,
    plural: parts.plural,
    namespaced: parts.namespaced,
    hasStatus: parts.hasStatus,
    scale: parts.scale,
    printerColumns: columns.map(({ column }) => column),
    prune: (object) => pruneObject(object, schema),
    applyDefaults: (object) => applyDefaults(object, schema),
    validate: (object, old) => validateResource(object, old, schema, rules),
    cells: (object) => cells(object, columns),
  };
}

// The OpenAPI errors that keep the server from running the CEL rules: with them the values may not
// have the types and sizes the rules were compiled (and costed) for.
const BLOCKING = new Set<string>([REASON.notSupported, REASON.tooLong, REASON.tooMany, REASON.typeInvalid]);

/** The custom resource strategy's validation: schema, metadata, list types, then the CEL rules. */
function validateResource(
  object: { [key: string]: Json },
  old: { [key: string]: Json } | undefined,
  schema: SchemaNode,
  rules: RuleSet,
): FieldCause[] {
  const causes = [
    ...validateSchema(object, schema),
    ...validateObjectMeta(object, schema),
    ...validateListTypes(object, schema),
  ];
  if (causes.some((cause) => BLOCKING.has(cause.reason))) {
    // The server reports this with a nil field path, which prints as "<nil>".
    const detail =
      "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";
    return [...causes, invalid("<nil>", null, detail)];
  }
  return [...causes, ...rules.validate(object, old, schema, "", true)];
}
