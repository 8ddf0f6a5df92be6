/**
 * The seam between the fake API server's request handling and its CustomResourceDefinition engine:
 * what the server needs from one served version of a CRD. The engine follows the real API server's
 * semantics for structural schemas (apiextensions.k8s.io/v1): pruning, defaulting, OpenAPI v3
 * validation and CEL rules (x-kubernetes-validations), with the field paths it reports.
 */

/** A JSON value as stored (objects after JSON.parse). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One failed check, as the API server reports it in a 422's `details.causes`. */
export interface FieldCause {
  /** "FieldValueRequired", "FieldValueInvalid", "FieldValueNotSupported", "FieldValueTypeInvalid", "FieldValueForbidden", "FieldValueTooLong", "FieldValueTooMany", "FieldValueDuplicate". */
  reason: string;
  /** Human text, as the real server words it (e.g. `Invalid value: "x": spec.replicas in body should be greater than or equal to 0`). */
  message: string;
  /** The field path, e.g. "spec.replicas", "spec.items[2].name", "metadata.name". */
  field: string;
}

/** A printer column, from `additionalPrinterColumns`. */
export interface PrinterColumn {
  name: string;
  type: string;
  format?: string;
  description?: string;
  priority: number;
  jsonPath: string;
}

/** The scale subresource's paths, from `subresources.scale`. */
export interface ScalePaths {
  specReplicasPath: string;
  statusReplicasPath: string;
  labelSelectorPath?: string;
}

/** One served version of a CRD, compiled once when the CRD is created or updated. */
export interface CompiledVersion {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly namespaced: boolean;
  readonly hasStatus: boolean;
  readonly scale: ScalePaths | undefined;
  readonly printerColumns: readonly PrinterColumn[];
  /** Drops fields the schema does not declare (unless x-kubernetes-preserve-unknown-fields); apiVersion, kind and metadata are kept. Mutates. */
  prune(object: { [key: string]: Json }): void;
  /** Applies schema defaults (on create, update and when read from storage). Mutates. */
  applyDefaults(object: { [key: string]: Json }): void;
  /**
   * Validates against the schema and the CEL rules. `old` is the stored object on update (transition
   * rules with `oldSelf` only run then); empty when valid.
   */
  validate(object: { [key: string]: Json }, old?: { [key: string]: Json }): FieldCause[];
  /** The printer columns' cells for one object (kubectl's Table view), "" or null where a path is absent. */
  cells(object: { [key: string]: Json }): Json[];
}

/** Why a CRD itself was refused (its schema is not structural, a CEL rule does not compile…). */
export interface CrdCompileResult {
  versions: CompiledVersion[];
  causes: FieldCause[];
}
