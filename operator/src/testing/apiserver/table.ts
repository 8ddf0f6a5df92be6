import { getDotted, isObject, type Json, type JsonObject, meta, str } from "./json.js";
import type { ResourceInfo } from "./resources.js";

// The `meta.k8s.io/v1` Table view that kubectl asks for (`Accept: application/json;as=Table;v=v1;
// g=meta.k8s.io`): its printer columns and one row per object.

interface Column {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

const NAME_COLUMN: Column = {
  name: "Name",
  type: "string",
  format: "name",
  description:
    "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
  priority: 0,
};

const AGE_COLUMN: Column = {
  name: "Age",
  type: "string",
  format: "",
  description:
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
  priority: 0,
};

/** Kubernetes' HumanDuration ("5s", "3m20s", "2d4h"), as kubectl shows ages. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return "<invalid>";
  if (seconds < 0) return "0s";
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8)
    return hours % 24 === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${hours % 24}h`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  const years = Math.floor(hours / 24 / 365);
  if (hours < 24 * 365 * 8) return `${years}y${Math.floor(hours / 24) % 365}d`;
  return `${years}y`;
}

function age(object: JsonObject): string {
  const created = str(meta(object).creationTimestamp);
  return created ? humanDuration(Date.now() - Date.parse(created)) : "<unknown>";
}

function num(object: JsonObject, path: string): number {
  const v = getDotted(object, path);
  return typeof v === "number" ? v : 0;
}

function column(name: string, type = "string", priority = 0): Column {
  return { name, type, format: "", description: "", priority };
}

type Printer = { columns: Column[]; cells: (o: JsonObject) => Json[] };

/** A few built-ins get kubectl's familiar columns; the others NAME and AGE. */
const PRINTERS: Record<string, Printer> = {
  "/Pod": {
    columns: [
      column("Ready"),
      column("Status"),
      column("Restarts", "string"),
      AGE_COLUMN,
      column("IP", "string", 1),
      column("Node", "string", 1),
    ],
    cells: (o) => {
      const statuses = (getDotted(o, "status.containerStatuses") ?? []) as JsonObject[];
      const containers = (getDotted(o, "spec.containers") ?? []) as JsonObject[];
      const ready = statuses.filter((s) => s.ready === true).length;
      const restarts = statuses.reduce(
        (n, s) => n + (typeof s.restartCount === "number" ? s.restartCount : 0),
        0,
      );
      const phase = meta(o).deletionTimestamp
        ? "Terminating"
        : String(getDotted(o, "status.phase") ?? "Pending");
      return [
        `${ready}/${containers.length}`,
        phase,
        String(restarts),
        age(o),
        String(getDotted(o, "status.podIP") ?? "<none>"),
        String(getDotted(o, "spec.nodeName") ?? "<none>"),
      ];
    },
  },
  "apps/Deployment": {
    columns: [column("Ready"), column("Up-to-date", "integer"), column("Available", "integer"), AGE_COLUMN],
    cells: (o) => [
      `${num(o, "status.readyReplicas")}/${num(o, "spec.replicas")}`,
      num(o, "status.updatedReplicas"),
      num(o, "status.availableReplicas"),
      age(o),
    ],
  },
  "apps/ReplicaSet": {
    columns: [
      column("Desired", "integer"),
      column("Current", "integer"),
      column("Ready", "integer"),
      AGE_COLUMN,
    ],
    cells: (o) => [
      num(o, "spec.replicas"),
      num(o, "status.replicas"),
      num(o, "status.readyReplicas"),
      age(o),
    ],
  },
  "/Service": {
    columns: [column("Type"), column("Cluster-IP"), column("External-IP"), column("Port(s)"), AGE_COLUMN],
    cells: (o) => {
      const ports = ((getDotted(o, "spec.ports") ?? []) as JsonObject[]).map(
        (p) => `${p.port}/${p.protocol ?? "TCP"}`,
      );
      return [
        String(getDotted(o, "spec.type") ?? ""),
        String(getDotted(o, "spec.clusterIP") ?? ""),
        "<none>",
        ports.join(",") || "<none>",
        age(o),
      ];
    },
  },
  "batch/Job": {
    columns: [column("Completions"), AGE_COLUMN],
    cells: (o) => [`${num(o, "status.succeeded")}/${num(o, "spec.completions")}`, age(o)],
  },
  "/Namespace": {
    columns: [column("Status"), AGE_COLUMN],
    cells: (o) => [String(getDotted(o, "status.phase") ?? ""), age(o)],
  },
  "/ConfigMap": {
    columns: [column("Data", "integer"), AGE_COLUMN],
    cells: (o) => [
      Object.keys(isObject(o.data) ? o.data : {}).length +
        Object.keys(isObject(o.binaryData) ? o.binaryData : {}).length,
      age(o),
    ],
  },
  "/Secret": {
    columns: [column("Type"), column("Data", "integer"), AGE_COLUMN],
    cells: (o) => [String(o.type ?? ""), Object.keys(isObject(o.data) ? o.data : {}).length, age(o)],
  },
};

function printer(r: ResourceInfo): Printer {
  if (r.custom) {
    const compiled = r.custom;
    if (compiled.printerColumns.length === 0) return { columns: [AGE_COLUMN], cells: (o) => [age(o)] };
    return {
      columns: compiled.printerColumns.map((c) => ({
        name: c.name,
        type: c.type,
        format: c.format ?? "",
        description: c.description ?? "",
        priority: c.priority,
      })),
      cells: (o) => compiled.cells(o),
    };
  }
  return PRINTERS[`${r.group}/${r.kind}`] ?? { columns: [AGE_COLUMN], cells: (o) => [age(o)] };
}

export type IncludeObject = "None" | "Metadata" | "Object";

/** A Table of the objects; `columns: false` leaves out the column definitions (watch events after the first). */
export function toTable(
  r: ResourceInfo,
  objects: JsonObject[],
  resourceVersion: string,
  include: IncludeObject,
  columns = true,
): JsonObject {
  const p = printer(r);
  const rows = objects.map((o) => {
    const row: JsonObject = { cells: [str(meta(o).name) ?? "", ...p.cells(o)] };
    if (include === "Object") row.object = o;
    else if (include === "Metadata") {
      row.object = { kind: "PartialObjectMetadata", apiVersion: "meta.k8s.io/v1", metadata: meta(o) };
    }
    return row;
  });
  return {
    kind: "Table",
    apiVersion: "meta.k8s.io/v1",
    metadata: { resourceVersion },
    columnDefinitions: columns ? ([NAME_COLUMN, ...p.columns] as unknown as Json[]) : [],
    rows,
  };
}

/** Whether an Accept header asks for the Table view. */
export function wantsTable(accept: string | undefined): boolean {
  return (accept ?? "").split(",").some((part) => /;\s*as=Table/.test(part) && /g=meta\.k8s\.io/.test(part));
}
