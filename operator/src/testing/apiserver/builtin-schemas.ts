import {
  ANY,
  atomicList,
  BOOL,
  BYTES,
  fieldsOf,
  INT,
  INT_OR_STRING,
  keyedList,
  map,
  object,
  QUANTITY,
  type Schema,
  STRING,
  stringSet,
  TIME,
} from "./schema.js";

// The fields of the built-in kinds this fake serves, transcribed from the Kubernetes 1.35 Go types
// (k8s.io/api): names, JSON types, patchMergeKey/patchStrategy and listType/listMapKeys/mapType.
// Parts nobody in this project sends in detail (volume sources, probes, affinity, security contexts,
// statuses) are ANY or open: their unknown fields go unreported rather than wrongly rejected.

const strings = atomicList(STRING);
const stringMap = map(STRING);

const ownerReference = object("OwnerReference", {
  apiVersion: STRING,
  kind: STRING,
  name: STRING,
  uid: STRING,
  controller: BOOL,
  blockOwnerDeletion: BOOL,
});

export const OBJECT_META = object("ObjectMeta", {
  name: STRING,
  generateName: STRING,
  namespace: STRING,
  selfLink: STRING,
  uid: STRING,
  resourceVersion: STRING,
  generation: INT,
  creationTimestamp: TIME,
  deletionTimestamp: TIME,
  deletionGracePeriodSeconds: INT,
  labels: stringMap,
  annotations: stringMap,
  ownerReferences: keyedList(ownerReference, "uid"),
  finalizers: stringSet(),
  managedFields: atomicList(ANY),
});

const labelSelector = object(
  "LabelSelector",
  {
    matchLabels: stringMap,
    matchExpressions: atomicList(
      object("LabelSelectorRequirement", { key: STRING, operator: STRING, values: strings }),
    ),
  },
  { atomic: true },
);

const condition = object("Condition", fieldsOf("type status reason message", STRING), { open: true });
const conditions = keyedList(condition, "type");

const containerPort = object("ContainerPort", {
  name: STRING,
  hostPort: INT,
  containerPort: INT,
  protocol: STRING,
  hostIP: STRING,
});

const envVar = object("EnvVar", { name: STRING, value: STRING, valueFrom: ANY });

const volumeMount = object("VolumeMount", {
  name: STRING,
  readOnly: BOOL,
  recursiveReadOnly: STRING,
  mountPath: STRING,
  subPath: STRING,
  mountPropagation: STRING,
  subPathExpr: STRING,
});

const resources = object("ResourceRequirements", {
  limits: map(QUANTITY),
  requests: map(QUANTITY),
  claims: keyedList(ANY, "name"),
});

const container = object("Container", {
  name: STRING,
  image: STRING,
  command: strings,
  args: strings,
  workingDir: STRING,
  ports: keyedList(containerPort, "containerPort", ["containerPort", "protocol"], { protocol: "TCP" }),
  envFrom: atomicList(ANY),
  env: keyedList(envVar, "name"),
  resources,
  resizePolicy: atomicList(ANY),
  restartPolicy: STRING,
  restartPolicyRules: atomicList(ANY),
  volumeMounts: keyedList(volumeMount, "mountPath"),
  volumeDevices: keyedList(ANY, "devicePath"),
  ...fieldsOf("livenessProbe readinessProbe startupProbe lifecycle securityContext", ANY),
  ...fieldsOf("terminationMessagePath terminationMessagePolicy imagePullPolicy", STRING),
  ...fieldsOf("stdin stdinOnce tty", BOOL),
});

const volumeSources =
  "hostPath emptyDir gcePersistentDisk awsElasticBlockStore gitRepo secret nfs iscsi glusterfs " +
  "persistentVolumeClaim rbd flexVolume cinder cephfs flocker downwardAPI fc azureFile configMap " +
  "vsphereVolume quobyte azureDisk photonPersistentDisk projected portworxVolume scaleIO storageos csi " +
  "ephemeral image";

const volume = object("Volume", { name: STRING, ...fieldsOf(volumeSources, ANY) });

const nameRef = object("LocalObjectReference", { name: STRING });

export const POD_SPEC = object("PodSpec", {
  volumes: keyedList(volume, "name"),
  initContainers: keyedList(container, "name"),
  containers: keyedList(container, "name"),
  ephemeralContainers: keyedList(ANY, "name"),
  ...fieldsOf(
    "restartPolicy dnsPolicy serviceAccountName serviceAccount nodeName hostname subdomain schedulerName " +
      "priorityClassName runtimeClassName preemptionPolicy hostnameOverride",
    STRING,
  ),
  ...fieldsOf("terminationGracePeriodSeconds activeDeadlineSeconds priority", INT),
  ...fieldsOf(
    "automountServiceAccountToken hostNetwork hostPID hostIPC shareProcessNamespace enableServiceLinks " +
      "setHostnameAsFQDN hostUsers",
    BOOL,
  ),
  nodeSelector: map(STRING, { atomic: true }),
  ...fieldsOf("securityContext affinity dnsConfig os resources", ANY),
  imagePullSecrets: keyedList(nameRef, "name"),
  tolerations: atomicList(ANY),
  hostAliases: keyedList(ANY, "ip"),
  readinessGates: atomicList(ANY),
  overhead: map(QUANTITY),
  topologySpreadConstraints: keyedList(ANY, "topologyKey", ["topologyKey", "whenUnsatisfiable"]),
  schedulingGates: keyedList(ANY, "name"),
  resourceClaims: keyedList(ANY, "name"),
});

const podTemplate = object("PodTemplateSpec", { metadata: OBJECT_META, spec: POD_SPEC });

const podStatus = object(
  "PodStatus",
  { conditions, podIPs: keyedList(ANY, "ip"), hostIPs: keyedList(ANY, "ip") },
  { open: true },
);
const openStatus = (name: string) => object(name, { conditions }, { open: true });
const nodeStatus = object("NodeStatus", { conditions, addresses: keyedList(ANY, "type") }, { open: true });

function kind(name: string, fields: Record<string, Schema>, options: { open?: boolean } = {}): Schema {
  return object(name, { apiVersion: STRING, kind: STRING, metadata: OBJECT_META, ...fields }, options);
}

const deploymentSpec = object("DeploymentSpec", {
  replicas: INT,
  selector: labelSelector,
  template: podTemplate,
  strategy: object("DeploymentStrategy", {
    type: STRING,
    rollingUpdate: object("RollingUpdateDeployment", {
      maxUnavailable: INT_OR_STRING,
      maxSurge: INT_OR_STRING,
    }),
  }),
  minReadySeconds: INT,
  revisionHistoryLimit: INT,
  paused: BOOL,
  progressDeadlineSeconds: INT,
});

const replicaSetSpec = object("ReplicaSetSpec", {
  replicas: INT,
  minReadySeconds: INT,
  selector: labelSelector,
  template: podTemplate,
});

const jobSpec = object("JobSpec", {
  ...fieldsOf(
    "parallelism completions activeDeadlineSeconds backoffLimit backoffLimitPerIndex maxFailedIndexes " +
      "ttlSecondsAfterFinished",
    INT,
  ),
  ...fieldsOf("podFailurePolicy successPolicy", ANY),
  selector: labelSelector,
  manualSelector: BOOL,
  template: podTemplate,
  ...fieldsOf("completionMode podReplacementPolicy managedBy", STRING),
  suspend: BOOL,
});

const servicePort = object("ServicePort", {
  name: STRING,
  protocol: STRING,
  appProtocol: STRING,
  port: INT,
  targetPort: INT_OR_STRING,
  nodePort: INT,
});

const serviceSpec = object("ServiceSpec", {
  ports: keyedList(servicePort, "port", ["port", "protocol"], { protocol: "TCP" }),
  selector: map(STRING, { atomic: true }),
  ...fieldsOf(
    "clusterIP type sessionAffinity loadBalancerIP externalName externalTrafficPolicy ipFamilyPolicy " +
      "loadBalancerClass internalTrafficPolicy trafficDistribution",
    STRING,
  ),
  clusterIPs: strings,
  externalIPs: strings,
  loadBalancerSourceRanges: strings,
  ipFamilies: strings,
  healthCheckNodePort: INT,
  publishNotReadyAddresses: BOOL,
  allocateLoadBalancerNodePorts: BOOL,
  sessionAffinityConfig: ANY,
});

const policyRule = object("PolicyRule", {
  verbs: strings,
  apiGroups: strings,
  resources: strings,
  resourceNames: strings,
  nonResourceURLs: strings,
});

const subject = object("Subject", { kind: STRING, apiGroup: STRING, name: STRING, namespace: STRING });
const roleRef = object("RoleRef", { apiGroup: STRING, kind: STRING, name: STRING }, { atomic: true });
const binding = (name: string) => kind(name, { subjects: atomicList(subject), roleRef });

const microTime = TIME;

/** The schema of each built-in kind, by `group/Kind` ("/Pod" for the core group). */
export const BUILTIN_SCHEMAS: Record<string, Schema> = {
  "/Namespace": kind("Namespace", {
    spec: object("NamespaceSpec", { finalizers: strings }),
    status: openStatus("NamespaceStatus"),
  }),
  "/Pod": kind("Pod", { spec: POD_SPEC, status: podStatus }),
  "/Service": kind("Service", { spec: serviceSpec, status: openStatus("ServiceStatus") }),
  "/Endpoints": kind("Endpoints", { subsets: atomicList(ANY) }),
  "/Secret": kind("Secret", { data: map(BYTES), stringData: stringMap, type: STRING, immutable: BOOL }),
  "/ConfigMap": kind("ConfigMap", { data: stringMap, binaryData: map(BYTES), immutable: BOOL }),
  "/Event": kind("Event", {}, { open: true }),
  "/ServiceAccount": kind("ServiceAccount", {
    secrets: keyedList(ANY, "name"),
    imagePullSecrets: atomicList(nameRef),
    automountServiceAccountToken: BOOL,
  }),
  "/Node": kind("Node", { spec: object("NodeSpec", {}, { open: true }), status: nodeStatus }),
  "apps/Deployment": kind("Deployment", { spec: deploymentSpec, status: openStatus("DeploymentStatus") }),
  "apps/ReplicaSet": kind("ReplicaSet", { spec: replicaSetSpec, status: openStatus("ReplicaSetStatus") }),
  "batch/Job": kind("Job", { spec: jobSpec, status: openStatus("JobStatus") }),
  "policy/PodDisruptionBudget": kind("PodDisruptionBudget", {
    spec: object("PodDisruptionBudgetSpec", {
      minAvailable: INT_OR_STRING,
      maxUnavailable: INT_OR_STRING,
      selector: labelSelector,
      unhealthyPodEvictionPolicy: STRING,
    }),
    status: openStatus("PodDisruptionBudgetStatus"),
  }),
  "coordination.k8s.io/Lease": kind("Lease", {
    spec: object("LeaseSpec", {
      holderIdentity: STRING,
      leaseDurationSeconds: INT,
      acquireTime: microTime,
      renewTime: microTime,
      leaseTransitions: INT,
      strategy: STRING,
      preferredHolder: STRING,
    }),
  }),
  "events.k8s.io/Event": kind("Event", {}, { open: true }),
  "rbac.authorization.k8s.io/Role": kind("Role", { rules: atomicList(policyRule) }),
  "rbac.authorization.k8s.io/ClusterRole": kind("ClusterRole", {
    rules: atomicList(policyRule),
    aggregationRule: ANY,
  }),
  "rbac.authorization.k8s.io/RoleBinding": binding("RoleBinding"),
  "rbac.authorization.k8s.io/ClusterRoleBinding": binding("ClusterRoleBinding"),
  "networking.k8s.io/NetworkPolicy": kind("NetworkPolicy", {
    spec: object("NetworkPolicySpec", {
      podSelector: labelSelector,
      ingress: atomicList(ANY),
      egress: atomicList(ANY),
      policyTypes: strings,
    }),
  }),
  "networking.k8s.io/Ingress": kind("Ingress", {
    spec: object("IngressSpec", {
      ingressClassName: STRING,
      defaultBackend: ANY,
      tls: atomicList(ANY),
      rules: atomicList(ANY),
    }),
    status: openStatus("IngressStatus"),
  }),
  "discovery.k8s.io/EndpointSlice": kind("EndpointSlice", {
    addressType: STRING,
    endpoints: atomicList(ANY),
    ports: atomicList(ANY),
  }),
  "apiextensions.k8s.io/CustomResourceDefinition": kind("CustomResourceDefinition", {
    spec: object("CustomResourceDefinitionSpec", {
      group: STRING,
      names: object("CustomResourceDefinitionNames", {
        ...fieldsOf("plural singular kind listKind", STRING),
        shortNames: strings,
        categories: strings,
      }),
      scope: STRING,
      versions: keyedList(ANY, "name"),
      conversion: ANY,
      preserveUnknownFields: BOOL,
    }),
    status: openStatus("CustomResourceDefinitionStatus"),
  }),
};
