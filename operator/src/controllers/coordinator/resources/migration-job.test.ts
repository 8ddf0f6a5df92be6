import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { storedCoordinator } from "../../../testing/coordinator-fixture.js";
import { labels, ownerReference } from "./labels.js";
import { buildMigrationJob, migrationJobName } from "./migration-job.js";

const IMAGE = "ghcr.io/darkbloom/coordinator:1.4.0";
const DATABASE = "0123456789abcdef";
const TARGET = { image: IMAGE, database: DATABASE };
const IMAGE_HASH = createHash("sha256").update(IMAGE).digest("hex").slice(0, 10);
const TARGET_HASH = createHash("sha256").update(`${IMAGE}\n${DATABASE}`).digest("hex").slice(0, 10);

describe("migration Job", () => {
  it("is named after the Coordinator, the image and the database", () => {
    const coordinator = storedCoordinator();
    expect(migrationJobName(coordinator, TARGET)).toBe(`main-migrate-${TARGET_HASH}`);
    expect(migrationJobName(coordinator, { ...TARGET, image: `${IMAGE}-rc` })).not.toBe(
      migrationJobName(coordinator, TARGET),
    );
    expect(migrationJobName(coordinator, { ...TARGET, database: "fedcba9876543210" })).not.toBe(
      migrationJobName(coordinator, TARGET),
    );
  });

  it("keeps names within 63 characters, distinct for long names that share a prefix", () => {
    const fits = "a".repeat(44);
    expect(migrationJobName(storedCoordinator({}, fits), TARGET)).toBe(`${fits}-migrate-${TARGET_HASH}`);
    const long = `${"a".repeat(40)}-${"b".repeat(22)}`;
    const longer = `${"a".repeat(40)}-${"c".repeat(22)}`;
    const names = [long, longer, "a".repeat(45)].map((n) =>
      migrationJobName(storedCoordinator({}, n), TARGET),
    );
    for (const name of names) {
      expect(name.length, name).toBeLessThanOrEqual(63);
      expect(name, name).toMatch(/^[a-z]([-a-z0-9]*[a-z0-9])?$/);
      expect(name.endsWith(`-migrate-${TARGET_HASH}`), name).toBe(true);
    }
    expect(new Set(names).size).toBe(3);
    // A cut that ends on a hyphen drops it rather than doubling it.
    const hyphen = migrationJobName(storedCoordinator({}, `${"a".repeat(34)}-${"b".repeat(20)}`), TARGET);
    expect(hyphen).toMatch(/^a{34}-[0-9a-f]{8}-migrate-/);
  });

  it("runs `migrate --json` once with the database URL, labelled and annotated with the image and database", () => {
    const coordinator = storedCoordinator({
      imagePullPolicy: "Always",
      imagePullSecrets: [{ name: "registry" }],
    });
    const job = buildMigrationJob(coordinator, DATABASE);
    const jobLabels = { ...labels(coordinator, "migration"), "darkbloom.dev/image-hash": IMAGE_HASH };
    expect(job.metadata).toEqual({
      name: `main-migrate-${TARGET_HASH}`,
      namespace: "darkbloom",
      labels: jobLabels,
      annotations: { "darkbloom.dev/image": IMAGE, "darkbloom.dev/database": DATABASE },
      ownerReferences: [ownerReference(coordinator)],
    });
    expect(job.spec).toMatchObject({ backoffLimit: 2, activeDeadlineSeconds: 600 });
    expect(job.spec).not.toHaveProperty("ttlSecondsAfterFinished");
    const pod = job.spec?.template.spec;
    expect(job.spec?.template.metadata?.labels).toEqual(jobLabels);
    expect(pod).toMatchObject({
      restartPolicy: "Never",
      volumes: [{ name: "data", emptyDir: {} }],
      imagePullSecrets: [{ name: "registry" }],
      enableServiceLinks: false,
      automountServiceAccountToken: false,
    });
    expect(pod?.containers).toEqual([
      {
        name: "migrate",
        image: IMAGE,
        imagePullPolicy: "Always",
        args: ["migrate", "--json"],
        env: [{ name: "DATABASE_URL", valueFrom: { secretKeyRef: { name: "db", key: "url" } } }],
        resources: {},
        securityContext: expect.objectContaining({ runAsNonRoot: true, readOnlyRootFilesystem: true }),
        volumeMounts: [{ name: "data", mountPath: "/var/lib/darkbloom" }],
      },
    ]);
  });

  it("places its pod like the replicas, without their spread constraints", () => {
    const toleration = { key: "dedicated", operator: "Exists" };
    const coordinator = storedCoordinator({
      resources: { limits: { memory: "256Mi" } },
      scheduling: {
        nodeSelector: { pool: "serving" },
        tolerations: [toleration],
        topologySpreadConstraints: [{ maxSkew: 1, topologyKey: "zone", whenUnsatisfiable: "DoNotSchedule" }],
      },
    });
    const pod = buildMigrationJob(coordinator, DATABASE).spec?.template.spec;
    expect(pod).toMatchObject({ nodeSelector: { pool: "serving" }, tolerations: [toleration] });
    expect(pod).not.toHaveProperty("topologySpreadConstraints");
    expect(pod?.containers[0]?.resources).toEqual({ limits: { memory: "256Mi" } });
  });
});
