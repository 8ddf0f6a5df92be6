import { randomInt } from "node:crypto";
import type { FieldCause } from "./crd-schema/types.js";
import { goValue, isObject, type Json, type JsonObject, str } from "./json.js";

// The name and label rules of k8s.io/apimachinery/pkg/util/validation, with the real messages: tests
// and clients match on them.

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

const DNS1123_LABEL_MSG =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and " +
  "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is " +
  "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must " +
  "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is " +
  "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG =
  "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic " +
  "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for " +
  "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG =
  "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an " +
  "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is " +
  "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must " +
  "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used " +
  "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/** DNS-1123 subdomain (most kinds), DNS-1123 label (namespaces), DNS-1035 label (services), path segment (RBAC). */
export type NameRule = "subdomain" | "label" | "dns1035" | "path";

/** The problems of a name under a rule, as messages (empty when valid). */
export function nameProblems(name: string, rule: NameRule): string[] {
  if (rule === "path") {
    // ValidatePathSegmentName: RBAC names such as system:controller:x are valid.
    if (name === "." || name === "..") return [`may not be '${name}'`];
    return ["/", "%"].filter((c) => name.includes(c)).map((c) => `may not contain '${c}'`);
  }
  const max = rule === "subdomain" ? 253 : 63;
  const problems: string[] = [];
  if (name.length > max) problems.push(`must be no more than ${max} characters`);
  const [pattern, message] =
    rule === "subdomain"
      ? [DNS1123_SUBDOMAIN, DNS1123_SUBDOMAIN_MSG]
      : rule === "label"
        ? [DNS1123_LABEL, DNS1123_LABEL_MSG]
        : [DNS1035_LABEL, DNS1035_LABEL_MSG];
  if (!pattern.test(name)) problems.push(message);
  return problems;
}

export function invalidValue(field: string, value: Json | undefined, detail: string): FieldCause {
  return { reason: "FieldValueInvalid", message: `Invalid value: ${goValue(value)}: ${detail}`, field };
}

export function required(field: string, detail?: string): FieldCause {
  return {
    reason: "FieldValueRequired",
    message: detail ? `Required value: ${detail}` : "Required value",
    field,
  };
}

export function forbiddenField(field: string, detail: string): FieldCause {
  return { reason: "FieldValueForbidden", message: `Forbidden: ${detail}`, field };
}

export function notSupported(field: string, value: Json | undefined, supported: string[]): FieldCause {
  const list = supported.map((s) => JSON.stringify(s)).join(", ");
  return {
    reason: "FieldValueNotSupported",
    message: `Unsupported value: ${goValue(value)}: supported values: ${list}`,
    field,
  };
}

export function duplicate(field: string, value: Json | undefined): FieldCause {
  return { reason: "FieldValueDuplicate", message: `Duplicate value: ${goValue(value)}`, field };
}

/** A qualified name (label and annotation keys): optional DNS-subdomain prefix, then a name part. */
export function qualifiedNameProblems(key: string): string[] {
  const parts = key.split("/");
  if (parts.length > 2) {
    return [
      "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    ];
  }
  const [prefix, name] = parts.length === 2 ? [parts[0]!, parts[1]!] : ["", parts[0]!];
  const problems: string[] = [];
  if (parts.length === 2) {
    if (prefix === "") problems.push("prefix part must be non-empty");
    else problems.push(...nameProblems(prefix, "subdomain").map((p) => `prefix part ${p}`));
  }
  if (name === "") problems.push("name part must be non-empty");
  else if (name.length > 63) problems.push("name part must be no more than 63 characters");
  if (name !== "" && !QUALIFIED_NAME_PART.test(name)) problems.push(QUALIFIED_NAME_MSG);
  return problems;
}

export function labelCauses(field: string, labels: Json | undefined): FieldCause[] {
  if (!isObject(labels)) return [];
  const causes: FieldCause[] = [];
  for (const [key, value] of Object.entries(labels)) {
    for (const p of qualifiedNameProblems(key)) causes.push(invalidValue(field, key, p));
    const v = typeof value === "string" ? value : "";
    if (v.length > 63) causes.push(invalidValue(field, v, "must be no more than 63 characters"));
    if (!LABEL_VALUE.test(v)) causes.push(invalidValue(field, v, LABEL_VALUE_MSG));
  }
  return causes;
}

/** ValidateObjectMeta: the name (or generateName), labels, annotation keys, finalizers and owners. */
export function objectMetaCauses(metadata: JsonObject, rule: NameRule): FieldCause[] {
  const causes: FieldCause[] = [];
  const name = str(metadata.name) ?? "";
  if (name === "") causes.push(required("metadata.name", "name or generateName is required"));
  else for (const p of nameProblems(name, rule)) causes.push(invalidValue("metadata.name", name, p));
  causes.push(...labelCauses("metadata.labels", metadata.labels));
  if (isObject(metadata.annotations)) {
    for (const key of Object.keys(metadata.annotations)) {
      for (const p of qualifiedNameProblems(key)) causes.push(invalidValue("metadata.annotations", key, p));
    }
    if (JSON.stringify(metadata.annotations).length > 256 * 1024) {
      causes.push({
        reason: "TooLong",
        message: "Too long: must have at most 262144 bytes",
        field: "metadata.annotations",
      });
    }
  }
  if (Array.isArray(metadata.finalizers)) {
    metadata.finalizers.forEach((f, i) => {
      const finalizer = typeof f === "string" ? f : "";
      for (const p of qualifiedNameProblems(finalizer))
        causes.push(invalidValue(`metadata.finalizers[${i}]`, finalizer, p));
    });
  }
  if (Array.isArray(metadata.ownerReferences)) {
    let controllers = 0;
    metadata.ownerReferences.forEach((ref, i) => {
      const r = isObject(ref) ? ref : {};
      const field = `metadata.ownerReferences[${i}]`;
      if (!str(r.apiVersion))
        causes.push(invalidValue(`${field}.apiVersion`, r.apiVersion ?? "", "version must not be empty"));
      if (!str(r.kind)) causes.push(invalidValue(`${field}.kind`, r.kind ?? "", "kind must not be empty"));
      if (!str(r.name)) causes.push(invalidValue(`${field}.name`, r.name ?? "", "name must not be empty"));
      if (!str(r.uid)) causes.push(invalidValue(`${field}.uid`, r.uid ?? "", "uid must not be empty"));
      if (r.controller === true) controllers++;
    });
    if (controllers > 1) {
      causes.push(
        invalidValue(
          "metadata.ownerReferences",
          metadata.ownerReferences,
          "Only one reference can have Controller set to true",
        ),
      );
    }
  }
  return causes;
}

const SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789";

/** generateName plus 5 random characters, the prefix cut so the result fits a DNS label as the real server does. */
export function generateName(prefix: string): string {
  let suffix = "";
  for (let i = 0; i < 5; i++) suffix += SUFFIX_ALPHABET[randomInt(SUFFIX_ALPHABET.length)];
  return `${prefix.slice(0, 58)}${suffix}`;
}
