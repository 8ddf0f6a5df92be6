import { type Infer, s } from "../schema.js";

// Schema pieces both kinds use: names, versions, Secret references and status conditions.

/** Semantic Versioning 2.0.0 without a leading "v": the coordinator's release store's SEMVER. */
export const SEMVER_PATTERN =
  "(0|[1-9]\\d*)\\.(0|[1-9]\\d*)\\.(0|[1-9]\\d*)(?:-((?:0|[1-9]\\d*|\\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\\.(?:0|[1-9]\\d*|\\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\\+([0-9a-zA-Z-]+(?:\\.[0-9a-zA-Z-]+)*))?";

/** A DNS-1123 subdomain: the names of Secrets and most other objects. */
export const DNS1123_SUBDOMAIN_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/** A DNS-1035 label (at most 63 characters): the names of Services, and so of Coordinators. */
export const DNS1035_LABEL_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/** The name of an object in the same namespace, e.g. a Secret. */
export function objectName(description: string) {
  return s.string({ description, minLength: 1, maxLength: 253, pattern: DNS1123_SUBDOMAIN_PATTERN });
}

/** A key of a Secret in the coordinator's namespace, with a default key. */
export function secretKeyRef(description: string, defaultKey: string) {
  return s.object(
    {
      name: objectName("Name of the Secret, in the Coordinator's namespace."),
      key: s.string({
        description: `Key of the value in the Secret's data (default "${defaultKey}").`,
        minLength: 1,
        maxLength: 253,
        pattern: "^[-._a-zA-Z0-9]+$",
        default: defaultKey,
      }),
    },
    { description, required: ["name"] },
  );
}

export const CONDITION_STATUSES = ["True", "False", "Unknown"] as const;
export type ConditionStatus = (typeof CONDITION_STATUSES)[number];

/** metav1.Condition's schema, as controller-gen writes it (every field but observedGeneration required). */
export const conditionSchema = s.object(
  {
    type: s.string({
      description: "Type of condition in CamelCase, e.g. Ready.",
      maxLength: 316,
      pattern:
        "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    }),
    status: s.enum(CONDITION_STATUSES, { description: "Status of the condition: True, False or Unknown." }),
    reason: s.string({
      description: "A CamelCase reason for the condition's last transition, for machines.",
      minLength: 1,
      maxLength: 1024,
      pattern: "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    }),
    message: s.string({
      description: "A human readable message about the transition; may be empty.",
      maxLength: 32768,
    }),
    lastTransitionTime: s.string({
      description: "When the condition last changed from one status to another.",
      format: "date-time",
    }),
    observedGeneration: s.integer({
      description: "The .metadata.generation the condition was set from.",
      format: "int64",
      minimum: 0,
    }),
  },
  {
    description: "One aspect of the resource's current state.",
    required: ["type", "status", "reason", "message", "lastTransitionTime"],
  },
);

export type Condition = Infer<typeof conditionSchema>;

/** `status.conditions`: one entry per type (a list-map, so that server-side apply merges by type). */
export function conditionsSchema(description: string) {
  return s.array(conditionSchema, { description, maxItems: 16, listType: "map", listMapKeys: ["type"] });
}
