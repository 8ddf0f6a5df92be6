/**
 * The Endpoints controller (pkg/controller/endpoint): for each Service with a selector, an Endpoints
 * object of the same name listing the selected pods' IPs, ready ones under `addresses` and others under
 * `notReadyAddresses` (all under `addresses` with publishNotReadyAddresses), grouped into subsets by
 * their resolved ports (a targetPort by name is looked up in each pod's container ports). Pods that are
 * finished, being deleted, or without an IP are left out. Services without a selector keep the
 * Endpoints their owners write.
 */
import { ENDPOINTS, isConflict, isNotFound, type KubeClient, PODS, SERVICES } from "./client.js";
import { Controller } from "./controller-base.js";
import type { InformerFactory } from "./informer.js";
import type { EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service } from "./types.js";
import { canonicalJson, deepEqual, isPodReady, mapSelectorMatches } from "./util.js";
import type { SyncResult } from "./workqueue.js";

/** The pod's port for a Service port: targetPort by number, by container port name, or the port itself. */
export function resolvePort(pod: Pod, target: number | string | undefined, port: number): number | undefined {
  if (target === undefined) return port;
  if (typeof target === "number") return target;
  if (/^\d+$/.test(target)) return Number(target);
  for (const c of pod.spec.containers) {
    const found = c.ports?.find((p) => p.name === target);
    if (found) return found.containerPort;
  }
  return undefined;
}

/** The Endpoints subsets for a Service and the pods it selects. */
export function computeSubsets(svc: Service, pods: Pod[]): EndpointSubset[] {
  const groups = new Map<string, EndpointSubset & { ports: EndpointPort[] }>();
  const sorted = [...pods].sort((a, b) => (a.status?.podIP ?? "").localeCompare(b.status?.podIP ?? ""));
  for (const pod of sorted) {
    const ip = pod.status?.podIP;
    if (!ip || pod.metadata.deletionTimestamp) continue;
    if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") continue;
    const ports: EndpointPort[] = [];
    for (const sp of svc.spec.ports ?? []) {
      const port = resolvePort(pod, sp.targetPort, sp.port);
      if (port === undefined) continue;
      const ep: EndpointPort = { port, protocol: sp.protocol ?? "TCP" };
      if (sp.name) ep.name = sp.name;
      ports.push(ep);
    }
    if ((svc.spec.ports ?? []).length > 0 && ports.length === 0) continue;
    const address: EndpointAddress = {
      ip,
      targetRef: {
        kind: "Pod",
        namespace: pod.metadata.namespace ?? "",
        name: pod.metadata.name ?? "",
        uid: pod.metadata.uid ?? "",
      },
    };
    if (pod.spec.nodeName) address.nodeName = pod.spec.nodeName;
    const key = canonicalJson(ports);
    let subset = groups.get(key);
    if (!subset) {
      subset = { ports };
      groups.set(key, subset);
    }
    if (isPodReady(pod) || svc.spec.publishNotReadyAddresses)
      subset.addresses = [...(subset.addresses ?? []), address];
    else subset.notReadyAddresses = [...(subset.notReadyAddresses ?? []), address];
  }
  return [...groups.values()].map((s) => (s.ports.length ? s : { ...s, ports: undefined }) as EndpointSubset);
}

export class EndpointsController extends Controller<Service> {
  private readonly pods = this.informers.get<Pod>(PODS);
  private readonly endpoints = this.informers.get<Endpoints>(ENDPOINTS);

  constructor(informers: InformerFactory, client: KubeClient, log: (line: string) => void) {
    super("endpoints-controller", SERVICES, informers, client, log);
    // Endpoints changed by someone else are put back; those of no Service are not this controller's.
    this.endpoints.onEvent((_e, ep) => {
      if (this.primary.get(ep.metadata.namespace ?? "", ep.metadata.name ?? "")) {
        this.queue.add(`${ep.metadata.namespace}/${ep.metadata.name}`);
      }
    });
    this.pods.onEvent((_e, pod, old) => {
      // A pod matters to the Services that select it now or selected it before the change.
      for (const svc of this.primary.list(pod.metadata.namespace)) {
        const selector = svc.spec.selector;
        if (!selector || Object.keys(selector).length === 0) continue;
        if (
          mapSelectorMatches(selector, pod.metadata.labels) ||
          (old && mapSelectorMatches(selector, old.metadata.labels))
        ) {
          this.queue.add(`${svc.metadata.namespace}/${svc.metadata.name}`);
        }
      }
    });
  }

  protected async sync(key: string): Promise<SyncResult> {
    const [namespace = "", name = ""] = key.split("/");
    const svc = this.primary.get(namespace, name);
    const current = this.endpoints.get(namespace, name);
    if (!svc) {
      // The Service is gone (only its deletion or a resync gets here): so are its Endpoints.
      if (current) {
        await this.client
          .delete(ENDPOINTS, namespace, name, { uid: current.metadata.uid ?? "" })
          .catch((err) => {
            if (!isNotFound(err) && !isConflict(err)) throw err;
          });
      }
      return undefined;
    }
    const selector = svc.spec.selector;
    if (!selector || Object.keys(selector).length === 0) return undefined;
    const pods = this.pods.list(namespace).filter((p) => mapSelectorMatches(selector, p.metadata.labels));
    const subsets = computeSubsets(svc, pods);
    const labels = { ...(svc.metadata.labels ?? {}) };
    if (
      current &&
      deepEqual(current.subsets ?? [], subsets) &&
      deepEqual(current.metadata.labels ?? {}, labels)
    ) {
      return undefined;
    }
    const desired: Endpoints = {
      apiVersion: "v1",
      kind: "Endpoints",
      metadata: { name, namespace, labels },
      subsets,
    };
    if (current) {
      desired.metadata = { ...current.metadata, labels };
      await this.client.update(ENDPOINTS, desired);
    } else {
      try {
        await this.client.create(ENDPOINTS, namespace, desired);
      } catch (err) {
        // Created meanwhile (our cache is behind): the next event brings it, and a retry fixes it.
        if (!isConflict(err)) throw err;
        throw new Error(`endpoints ${key} already exist; retrying`);
      }
    }
    return undefined;
  }
}
