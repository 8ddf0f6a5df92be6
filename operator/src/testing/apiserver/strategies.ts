import { isObject, type Json, type JsonObject, meta, str } from "./json.js";
import { invalidValue } from "./names.js";
import type { ResourceInfo } from "./resources.js";
import { invalid } from "./status-errors.js";

// What the real strategies do to an object on create and update besides defaulting and validation
// (PrepareForCreate/PrepareForUpdate, and the allocators behind them): resetting status, generating a
// Job's selector, allocating a Service's cluster IP and node ports, labelling namespaces.

/** Service cluster IPs come from 10.96.0.0/12, skipping the first ones as kube-apiserver and kube-dns take them. */
const SERVICE_CIDR_BASE = (10 << 24) | (96 << 16);
const SERVICE_CIDR_SIZE = 1 << 20;

function ipString(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

function sub(object: JsonObject, key: string): JsonObject {
  if (!isObject(object[key])) object[key] = {};
  return object[key] as JsonObject;
}

function list(value: Json | undefined): JsonObject[] {
  return Array.isArray(value) ? value.filter(isObject) : [];
}

/** Pod QoS class from the containers' requests and limits (the real helper, for cpu and memory). */
function qosClass(spec: JsonObject): string {
  const all = [...list(spec.containers), ...list(spec.initContainers)];
  let any = false;
  let guaranteed = true;
  for (const c of all) {
    const r = isObject(c.resources) ? c.resources : {};
    const requests = isObject(r.requests) ? r.requests : {};
    const limits = isObject(r.limits) ? r.limits : {};
    for (const res of ["cpu", "memory"]) {
      if (requests[res] !== undefined || limits[res] !== undefined) any = true;
      const request = requests[res] ?? limits[res];
      if (limits[res] === undefined || String(request) !== String(limits[res])) guaranteed = false;
    }
  }
  if (!any) return "BestEffort";
  return guaranteed ? "Guaranteed" : "Burstable";
}

export class Strategies {
  private nextIp = 11;
  private nextNodePort = 30000;
  private readonly usedIps = new Set<string>();

  prepareForCreate(resource: ResourceInfo, object: JsonObject): void {
    const groupKind = `${resource.group}/${resource.kind}`;
    if (
      resource.status &&
      !resource.custom &&
      groupKind !== "apiextensions.k8s.io/CustomResourceDefinition"
    ) {
      object.status = {};
    }
    switch (groupKind) {
      case "/Pod":
        object.status = { phase: "Pending", qosClass: qosClass(sub(object, "spec")) };
        break;
      case "/Namespace":
        object.status = { phase: "Active" };
        break;
      case "/Service":
        object.status = { loadBalancer: {} };
        this.allocateService(object);
        break;
      case "batch/Job":
        this.generateJobSelector(object);
        break;
    }
    if (groupKind === "/Namespace") this.labelNamespace(object);
  }

  prepareForUpdate(resource: ResourceInfo, object: JsonObject, old: JsonObject): void {
    switch (`${resource.group}/${resource.kind}`) {
      case "/Namespace":
        this.labelNamespace(object);
        break;
      case "/Service":
        this.keepAllocated(sub(object, "spec"), sub(old, "spec"));
        break;
    }
  }

  /** The real server labels every namespace with its name, so namespace selectors can pick one. */
  private labelNamespace(object: JsonObject): void {
    const m = meta(object);
    m.labels = { ...(isObject(m.labels) ? m.labels : {}), "kubernetes.io/metadata.name": str(m.name) ?? "" };
  }

  /** Without manualSelector, a Job selects its pods by its own uid (labels added to the template too). */
  private generateJobSelector(object: JsonObject): void {
    const spec = sub(object, "spec");
    if (spec.manualSelector === true) return;
    const m = meta(object);
    const uid = str(m.uid) ?? "";
    const name = str(m.name) ?? "";
    const template = sub(spec, "template");
    const templateMeta = sub(template, "metadata");
    templateMeta.labels = {
      ...(isObject(templateMeta.labels) ? templateMeta.labels : {}),
      "batch.kubernetes.io/controller-uid": uid,
      "batch.kubernetes.io/job-name": name,
      "controller-uid": uid,
      "job-name": name,
    };
    spec.selector = { matchLabels: { "batch.kubernetes.io/controller-uid": uid } };
  }

  private allocateService(object: JsonObject): void {
    const spec = sub(object, "spec");
    const name = str(meta(object).name) ?? "";
    if (spec.type !== "ExternalName") {
      if (spec.clusterIP === undefined || spec.clusterIP === "") spec.clusterIP = this.allocateIp();
      else if (spec.clusterIP !== "None") {
        const ip = String(spec.clusterIP);
        if (this.usedIps.has(ip)) {
          throw invalid("", "Service", name, [
            invalidValue(
              "spec.clusterIPs",
              [ip],
              `failed to allocate IP ${ip}: provided IP is already allocated`,
            ),
          ]);
        }
        this.usedIps.add(ip);
      }
      spec.clusterIPs = [spec.clusterIP as string];
      spec.ipFamilies ??= ["IPv4"];
      spec.ipFamilyPolicy ??= "SingleStack";
    }
    if (spec.type === "NodePort" || spec.type === "LoadBalancer") {
      for (const port of list(spec.ports)) port.nodePort ??= this.nextNodePort++;
    }
  }

  private allocateIp(): string {
    for (;;) {
      const ip = ipString(SERVICE_CIDR_BASE + (this.nextIp++ % SERVICE_CIDR_SIZE));
      if (!this.usedIps.has(ip)) {
        this.usedIps.add(ip);
        return ip;
      }
    }
  }

  /** A Service update that omits what was allocated keeps it (the real patchAllocatedValues). */
  private keepAllocated(spec: JsonObject, old: JsonObject): void {
    if (spec.type === "ExternalName") return;
    for (const key of ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"]) {
      if ((spec[key] === undefined || spec[key] === "") && old[key] !== undefined) spec[key] = old[key]!;
    }
    const oldPorts = list(old.ports);
    for (const port of list(spec.ports)) {
      const before = oldPorts.find(
        (p) => p.port === port.port && (p.protocol ?? "TCP") === (port.protocol ?? "TCP"),
      );
      if (port.nodePort === undefined && before?.nodePort !== undefined) port.nodePort = before.nodePort;
    }
  }
}
