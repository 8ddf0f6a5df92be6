import type {
  V1Affinity,
  V1ObjectMeta,
  V1Toleration,
  V1TopologySpreadConstraint,
} from "@kubernetes/client-node";
import { type Infer, s, type ValidationRule } from "../schema.js";
import {
  conditionsSchema,
  DNS1035_LABEL_PATTERN,
  DNS1123_SUBDOMAIN_PATTERN,
  objectName,
  secretKeyRef,
} from "./common-types.js";
import { coordinatorConfigSchema } from "./coordinator-config-types.js";
import type { API_VERSION, COORDINATOR } from "./group-version.js";
import { ANNOTATION_CONFIG_HASH, OPERATOR_LABELS } from "./well-known.js";

/** The port the coordinator serves HTTP on in its pods; the metrics port must be another. */
export const COORDINATOR_HTTP_PORT = 8080;

/** A resource quantity ("500m", "1Gi", 2), as controller-gen writes resource.Quantity's pattern. */
const quantity = s.intOrString({
  description: "A resource quantity such as 500m, 2 or 1Gi.",
  pattern:
    "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$",
});

const stringMap = (description: string, rules?: ValidationRule[]) =>
  s.map(s.string({ description: "A value." }), { description, ...(rules ? { rules } : {}) });

const port = (description: string, fallback: number) =>
  s.integer({ description, minimum: 1, maximum: 65_535, format: "int32", default: fallback });

export const coordinatorSpecSchema = s.object(
  {
    replicas: s.integer({
      description: "Number of coordinator replicas (the /scale subresource sets it).",
      minimum: 0,
      format: "int32",
      default: 2,
    }),
    image: s.string({
      description: "The coordinator's container image; a change runs the database migration Job first.",
      minLength: 1,
      maxLength: 1024,
      pattern: "^[^\\s]+$",
    }),
    imagePullPolicy: s.enum(["Always", "IfNotPresent", "Never"], {
      description: "Image pull policy of the coordinator's containers (Kubernetes' default when absent).",
    }),
    imagePullSecrets: s.array(
      s.object(
        { name: objectName("Name of a docker-registry Secret in the Coordinator's namespace.") },
        { description: "A Secret holding registry credentials.", required: ["name"] },
      ),
      { description: "Secrets to pull the image with.", maxItems: 32 },
    ),
    database: s.object(
      {
        secretRef: secretKeyRef(
          'The Secret key holding the PostgreSQL URL (postgres://…), default key "url".',
          "url",
        ),
      },
      { description: "The PostgreSQL database every replica shares.", required: ["secretRef"] },
    ),
    adminKeySecretRef: secretKeyRef(
      'The Secret key holding the admin API key, default key "admin-key".',
      "admin-key",
    ),
    config: coordinatorConfigSchema,
    resources: s.object(
      {
        requests: s.map(quantity, { description: "Minimum resources per replica (cpu, memory…)." }),
        limits: s.map(quantity, { description: "Maximum resources per replica (cpu, memory…)." }),
      },
      { description: "Compute resources of each coordinator container." },
    ),
    scheduling: s.object(
      {
        nodeSelector: stringMap("Node labels a replica's node must have."),
        tolerations: s.array(s.preserveUnknown<V1Toleration>({ description: "A core/v1 Toleration." }), {
          description: "Taints the replicas tolerate.",
        }),
        affinity: s.preserveUnknown<V1Affinity>({
          description: "A core/v1 Affinity for the replicas' pods.",
        }),
        topologySpreadConstraints: s.array(
          s.preserveUnknown<V1TopologySpreadConstraint>({
            description: "A core/v1 TopologySpreadConstraint.",
          }),
          { description: "How replicas spread across zones or nodes." },
        ),
        priorityClassName: s.string({ description: "PriorityClass of the replicas' pods.", maxLength: 253 }),
      },
      { description: "Where the replicas' pods run." },
    ),
    podAnnotations: stringMap("Annotations added to the replicas' pods.", [
      {
        rule: `!('${ANNOTATION_CONFIG_HASH}' in self)`,
        message: `podAnnotations may not set ${ANNOTATION_CONFIG_HASH}: the operator sets it`,
      },
    ]),
    podLabels: stringMap("Labels added to the replicas' pods.", [
      {
        rule: `[${OPERATOR_LABELS.map((label) => `'${label}'`).join(", ")}].all(k, !(k in self))`,
        message: "podLabels may not set the app.kubernetes.io labels the operator selects pods with",
      },
    ]),
    service: s.object(
      {
        type: s.enum(["ClusterIP", "NodePort", "LoadBalancer"], {
          description: "Type of the coordinator's Service.",
          default: "ClusterIP",
        }),
        port: port("Port of the Service's HTTP endpoint (consumers, providers, admin API).", 80),
        annotations: stringMap("Annotations of the Service (load balancer settings…)."),
      },
      { description: "The Service in front of the replicas.", default: {} },
    ),
    disruptionBudget: s.object(
      {
        enabled: s.boolean({ description: "Whether a PodDisruptionBudget is kept.", default: true }),
        maxUnavailable: s.integer({
          description: "Replicas a voluntary disruption (node drain) may take down at once.",
          minimum: 1,
          format: "int32",
          default: 1,
        }),
      },
      { description: "The PodDisruptionBudget of the replicas.", default: {} },
    ),
    drainSeconds: s.integer({
      description:
        "How long a replica drains on SIGTERM: in-flight requests finish and providers move to other replicas.",
      minimum: 1,
      maximum: 3600,
      format: "int32",
      default: 30,
    }),
    metrics: s.object(
      { port: port("Port of the replicas' Prometheus /metrics listener (no token needed).", 9090) },
      {
        description: "The replicas' metrics endpoint, exposed as the Service's `metrics` port.",
        default: {},
        rules: [
          {
            rule: `!has(self.port) || self.port != ${COORDINATOR_HTTP_PORT}`,
            message: `metrics.port must differ from ${COORDINATOR_HTTP_PORT}, the coordinator's HTTP port`,
            fieldPath: ".port",
          },
        ],
      },
    ),
    peerPort: s.integer({
      description:
        "When set, replicas serve their replica-to-replica PeerService on this port only (coordinator --peer-port), so a NetworkPolicy can admit only coordinator pods to it; unset, it shares the HTTP port.",
      minimum: 1,
      maximum: 65_535,
      format: "int32",
    }),
    tls: s.object(
      {
        secretName: objectName(
          "A kubernetes.io/tls Secret in the Coordinator's namespace: tls.crt and tls.key, mounted into the pods (a renewed certificate is served without a restart); its ca.crt, when present, is the only CA the operator trusts on its admin calls.",
        ),
        serverName: s.string({
          description:
            "The DNS name the operator verifies the certificate against when it calls the admin API through the Service (default <name>.<namespace>.svc): set it to a name the certificate holds when it does not name the Service, e.g. the public host name.",
          minLength: 1,
          maxLength: 253,
          pattern: DNS1123_SUBDOMAIN_PATTERN,
        }),
      },
      {
        description:
          "TLS served by the coordinators themselves on the HTTP port (HTTP/1.1 and HTTP/2 by ALPN; plaintext refused). Needs peerPort, which stays plaintext.",
        required: ["secretName"],
      },
    ),
    tpm: s.object(
      {
        ekCaConfigMap: objectName(
          "A ConfigMap in the Coordinator's namespace holding the TPM manufacturers' EK CA certificates (PEM; roots and intermediates, each an anchor), mounted into the pods and re-read when it changes: providers whose TPM endorsement certificate chains to one of them can earn trust tpm.",
        ),
        ekCaKey: s.string({
          description: "The ConfigMap key with the PEM bundle (default ca.pem).",
          minLength: 1,
          maxLength: 253,
          pattern: "^[-._a-zA-Z0-9]+$",
        }),
        pcrAllow: s.array(
          s.string({
            description:
              "An allowed boot state: the SHA-256 PCR digest GET /v1/providers/attestation publishes per TPM provider (tpm.pcr_digest).",
            pattern: "^[0-9a-f]{64}$",
            maxLength: 64,
          }),
          {
            description:
              "Boot states that earn trust tpm (others are held at self_signed); empty or absent: any.",
            maxItems: 1024,
            listType: "set",
          },
        ),
      },
      {
        description: "TPM 2.0 provider attestation (coordinator --tpm-ek-ca and --tpm-pcr-allow).",
        required: ["ekCaConfigMap"],
      },
    ),
  },
  {
    description: "The desired state of a coordinator cluster.",
    required: ["image", "database", "adminKeySecretRef"],
    rules: [
      {
        rule: `!has(self.peerPort) || (self.peerPort != ${COORDINATOR_HTTP_PORT} && self.peerPort != self.metrics.port)`,
        message: `peerPort must differ from ${COORDINATOR_HTTP_PORT}, the HTTP port, and from metrics.port`,
        fieldPath: ".peerPort",
      },
      {
        rule: "!has(self.tls) || has(self.peerPort)",
        message:
          "tls needs peerPort: replicas forward to each other by pod IP, which the certificate does not name, so they do it on a peer port of its own, in plaintext",
        fieldPath: ".tls",
      },
    ],
  },
);

export const coordinatorStatusSchema = s.object(
  {
    observedGeneration: s.integer({
      description: "The .metadata.generation this status was computed from.",
      format: "int64",
      minimum: 0,
    }),
    replicas: s.integer({ description: "Replicas that exist.", format: "int32", minimum: 0 }),
    readyReplicas: s.integer({ description: "Replicas that are ready.", format: "int32", minimum: 0 }),
    updatedReplicas: s.integer({
      description: "Replicas running the current pod template.",
      format: "int32",
      minimum: 0,
    }),
    selector: s.string({ description: "The label selector of the replicas' pods (for /scale)." }),
    currentImage: s.string({ description: "The image the replicas run, once rolled out." }),
    migratedImage: s.string({ description: "The image whose migration Job last completed." }),
    migratedDatabase: s.string({
      description:
        "A hash of the database URL migratedImage's migration ran against: a new database is migrated before replicas use it.",
    }),
    conditions: conditionsSchema("The latest observations of the coordinator's state."),
  },
  { description: "The observed state of a coordinator cluster." },
);

/**
 * A root rule: the name becomes the Service's name (a DNS-1035 label) and the value of the
 * app.kubernetes.io/instance label (at most 63 characters).
 */
export const coordinatorRootRules: ValidationRule[] = [
  {
    rule: `size(self.metadata.name) <= 63 && self.metadata.name.matches('${DNS1035_LABEL_PATTERN}')`,
    message:
      "the name must be a DNS-1035 label of at most 63 characters (lowercase letters, digits and '-', starting with a letter): it names the Service",
  },
];

export type CoordinatorSpec = Infer<typeof coordinatorSpecSchema>;
export type CoordinatorStatus = Infer<typeof coordinatorStatusSchema>;

/** A Coordinator as stored (defaults applied). */
export interface Coordinator {
  apiVersion: typeof API_VERSION;
  kind: typeof COORDINATOR.kind;
  metadata: V1ObjectMeta;
  spec: CoordinatorSpec;
  status?: CoordinatorStatus;
}

/** The condition types of a Coordinator's status. */
export const CoordinatorConditionType = {
  /** Available, migrated and not degraded: the summary `kubectl get` shows. */
  Ready: "Ready",
  /** At least the desired replicas minus the disruption budget serve. */
  Available: "Available",
  /** A rollout (or its migration) is under way. */
  Progressing: "Progressing",
  /** The database schema is migrated to the spec's image. */
  Migrated: "Migrated",
  /** Something needs a person: a missing Secret, a failed migration, an invalid spec. */
  Degraded: "Degraded",
} as const;
export type CoordinatorConditionType =
  (typeof CoordinatorConditionType)[keyof typeof CoordinatorConditionType];

/** The reasons of a Coordinator's conditions. */
export const CoordinatorReason = {
  MigrationPending: "MigrationPending",
  MigrationRunning: "MigrationRunning",
  MigrationFailed: "MigrationFailed",
  MigrationSucceeded: "MigrationSucceeded",
  SecretMissing: "SecretMissing",
  SecretKeyMissing: "SecretKeyMissing",
  InvalidSpec: "InvalidSpec",
  RollingOut: "RollingOut",
  RolloutStalled: "RolloutStalled",
  RolledOut: "RolledOut",
  ReplicasReady: "ReplicasReady",
  ReplicasUnavailable: "ReplicasUnavailable",
  ScaledToZero: "ScaledToZero",
  AsExpected: "AsExpected",
  /** An object the Coordinator would own exists and belongs to someone else: never adopted. */
  NotOwned: "NotOwned",
  /** The TLS Secret's tls.crt and tls.key are not a PEM certificate and its key. */
  CertificateInvalid: "CertificateInvalid",
} as const;
export type CoordinatorReason = (typeof CoordinatorReason)[keyof typeof CoordinatorReason];
