/**
 * The rest of a small Kubernetes around the fake API server, for tests: the Deployment, ReplicaSet, Job
 * and Endpoints controllers (one "kube-controller-manager" with shared informers), a scheduler and
 * kubelet for one node, `fake-node`, that runs pods as local processes, and a kube-proxy per Service
 * port. Every component is a plain client of the API server (list, watch, writes with
 * resourceVersion), so what an operator sees through the API is what a real cluster would show.
 *
 * Deviations from a real cluster, all forced by running on one machine without containers:
 * - an image is a name for a command line (`images`); pods share this machine's filesystem, so a
 *   volumeMount's mountPath in command, args, env values and workingDir is rewritten to the volume's
 *   directory under the pod's sandbox in `workDir`;
 * - a container's environment is the image's env, the pod's env, HOSTNAME and this machine's PATH
 *   (nothing else of the host's), with no Service link variables;
 * - pod IPs are loopback addresses 127.0.0.2-254 (a server in a pod should listen on $(POD_IP), not on
 *   0.0.0.0); a Service is reached through `serviceAddress`, not through its ClusterIP or DNS;
 * - time runs as in Kubernetes for everything the API carries (probe periods, grace periods,
 *   minReadySeconds, deadlines), but the kubelet's and Job controller's back-offs are short.
 * Not modelled: Node objects and their heartbeats, Events, EndpointSlices, DNS, resource limits, exec
 * and attach, Indexed Jobs, adoption of orphaned pods and ReplicaSets, the ReplicaFailure condition.
 */
import { KubeClient } from "./client.js";
import { DeploymentController } from "./deployment-controller.js";
import { EndpointsController } from "./endpoints-controller.js";
import { InformerFactory } from "./informer.js";
import { JobController } from "./job-controller.js";
import { Kubelet } from "./kubelet.js";
import { ReplicaSetController } from "./replicaset-controller.js";
import { ServiceProxy } from "./service-proxy.js";

export { NODE_NAME } from "./kubelet.js";

/** What the "image" runs: entrypoint + the container's args (container.command replaces the entrypoint). */
export interface ImageSpec {
  entrypoint: string[];
  env?: Record<string, string>;
}

export interface FakeClusterOptions {
  /** The fake API server, and a superuser token for it. */
  apiServerUrl: string;
  token: string;
  /** Image reference → what runs. An unknown image leaves the container waiting (ErrImagePull / ImagePullBackOff). */
  images: Record<string, ImageSpec>;
  /** Where pod sandboxes (volumes) go. */
  workDir: string;
  log?: (line: string) => void;
  /** Kubelet CrashLoopBackOff: first restart at once, then this, doubling up to crashLoopMaxMs (500 / 5000). */
  crashLoopInitialMs?: number;
  crashLoopMaxMs?: number;
  /** How often a container that cannot be created yet is retried (missing Secret, unknown image, volumes): 500 ms. */
  kubeletRetryMs?: number;
  /** How often the kubelet brings Secret and ConfigMap volumes up to date (2000; real: about a minute). */
  volumeRefreshMs?: number;
  /** Job controller: the wait before the pod after the n-th failure is base * 2^(n-1), capped (200 / 2000). */
  jobBackoffBaseMs?: number;
  jobBackoffMaxMs?: number;
  /** On close, how long processes get after SIGTERM before SIGKILL (1000). */
  closeGraceMs?: number;
}

export interface FakeCluster {
  /** A TCP address on 127.0.0.1 that forwards to the ready endpoints of a Service port (round robin per connection), like kube-proxy; follows endpoint changes. */
  serviceAddress(
    namespace: string,
    service: string,
    port: string | number,
  ): Promise<{ host: string; port: number }>;
  /** The pod's captured stdout+stderr so far (of its latest incarnation by that name). */
  podLog(namespace: string, pod: string): string;
  /** Stops every controller, kills every process (SIGKILL after a short grace). */
  close(): Promise<void>;
}

export async function startFakeCluster(options: FakeClusterOptions): Promise<FakeCluster> {
  const log = options.log ?? (() => {});
  // kube-controller-manager: one client, shared informers.
  const controllerInformers = new InformerFactory(new KubeClient(options.apiServerUrl, options.token), log);
  const client = controllerInformers.client;
  const controllers = [
    new DeploymentController(controllerInformers, client, log),
    new ReplicaSetController(controllerInformers, client, log),
    new JobController(controllerInformers, client, log, {
      ...(options.jobBackoffBaseMs !== undefined ? { backoffBaseMs: options.jobBackoffBaseMs } : {}),
      ...(options.jobBackoffMaxMs !== undefined ? { backoffMaxMs: options.jobBackoffMaxMs } : {}),
    }),
    new EndpointsController(controllerInformers, client, log),
  ];
  // kube-proxy: its own client and informers.
  const proxyInformers = new InformerFactory(new KubeClient(options.apiServerUrl, options.token), log);
  const proxy = new ServiceProxy(proxyInformers, log);
  // kubelet (and scheduler): its own client.
  const kubelet = new Kubelet({
    client: new KubeClient(options.apiServerUrl, options.token),
    images: options.images,
    workDir: options.workDir,
    timing: {
      crashLoopInitialMs: options.crashLoopInitialMs ?? 500,
      crashLoopMaxMs: options.crashLoopMaxMs ?? 5000,
      retryMs: options.kubeletRetryMs ?? 500,
      volumeRefreshMs: options.volumeRefreshMs ?? 2000,
    },
    log,
  });

  await Promise.all([controllerInformers.start(), proxyInformers.start(), kubelet.start()]);
  for (const c of controllers) c.start();

  let closing: Promise<void> | undefined;
  return {
    serviceAddress: (namespace, service, port) => proxy.address(namespace, service, port),
    podLog: (namespace, pod) => kubelet.podLog(namespace, pod),
    close() {
      closing ??= (async () => {
        await Promise.all(controllers.map((c) => c.stop()));
        await controllerInformers.stop();
        await kubelet.close(options.closeGraceMs ?? 1000);
        await proxy.close();
        await proxyInformers.stop();
      })();
      return closing;
    },
  };
}
