import type { V1Job } from "@kubernetes/client-node";
import type { Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import { ANNOTATION_DATABASE, ANNOTATION_IMAGE, LABEL_IMAGE_HASH } from "../../../api/v1alpha1/well-known.js";
import { sha256Hex } from "./config-hash.js";
import { identity, labels, ownerReference } from "./labels.js";
import {
  dataVolume,
  dataVolumeMount,
  podPlacement,
  resourceRequirements,
  securityContext,
} from "./pod-common.js";

export const MIGRATE_CONTAINER = "migrate";

/**
 * A Job's name becomes the value of its pods' `batch.kubernetes.io/job-name` label, and label values
 * are at most 63 characters: a longer name makes a Job whose pods can never be created.
 */
const MAX_JOB_NAME = 63;

/** The first 10 hex digits of the image reference's SHA-256 (a label value: the image itself is too long). */
function imageHash(image: string): string {
  return sha256Hex(image).slice(0, 10);
}

/**
 * What one migration brings up to date: the schema `image` needs, in the database whose URL hashes
 * to `database` (the controller's hash of the database Secret's value: never the URL itself). A
 * Coordinator pointed at another database migrates it before any replica uses it, even on the same
 * image.
 */
export interface MigrationTarget {
  image: string;
  database: string;
}

/**
 * `<name>-migrate-<hash of the target>`: one Job per image and database, found again by name. A
 * Coordinator name too long for that (over 44 characters) is cut and followed by 8 hex digits of
 * its own hash, so that two long names sharing a prefix still get different Jobs.
 */
export function migrationJobName(coordinator: Coordinator, target: MigrationTarget): string {
  const suffix = `-migrate-${sha256Hex(`${target.image}\n${target.database}`).slice(0, 10)}`;
  const { name } = identity(coordinator);
  const room = MAX_JOB_NAME - suffix.length;
  if (name.length <= room) return name + suffix;
  const nameHash = sha256Hex(name).slice(0, 8);
  const prefix = name.slice(0, room - nameHash.length - 1).replace(/-+$/, "");
  return `${prefix}-${nameHash}${suffix}`;
}

/**
 * The Job that migrates the database to the spec's image before any replica runs it. Its `migrate
 * --json` is idempotent, so a retry after a failed attempt is safe; the controller deletes the Jobs
 * of earlier images itself.
 */
export function buildMigrationJob(coordinator: Coordinator, database: string): V1Job {
  const { spec } = coordinator;
  const jobLabels = { ...labels(coordinator, "migration"), [LABEL_IMAGE_HASH]: imageHash(spec.image) };
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: migrationJobName(coordinator, { image: spec.image, database }),
      namespace: identity(coordinator).namespace,
      labels: jobLabels,
      annotations: { [ANNOTATION_IMAGE]: spec.image, [ANNOTATION_DATABASE]: database },
      ownerReferences: [ownerReference(coordinator)],
    },
    spec: {
      backoffLimit: 2,
      activeDeadlineSeconds: 600,
      template: {
        metadata: { labels: jobLabels },
        spec: {
          restartPolicy: "Never",
          containers: [
            {
              name: MIGRATE_CONTAINER,
              image: spec.image,
              ...(spec.imagePullPolicy ? { imagePullPolicy: spec.imagePullPolicy } : {}),
              args: ["migrate", "--json"],
              env: [
                {
                  name: "DATABASE_URL",
                  valueFrom: {
                    secretKeyRef: { name: spec.database.secretRef.name, key: spec.database.secretRef.key },
                  },
                },
              ],
              resources: resourceRequirements(coordinator),
              securityContext: securityContext(),
              volumeMounts: [dataVolumeMount()],
            },
          ],
          volumes: [dataVolume()],
          ...podPlacement(coordinator),
          enableServiceLinks: false,
          automountServiceAccountToken: false,
        },
      },
    },
  };
}
