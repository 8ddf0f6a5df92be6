import { Counter, Gauge, Histogram, Registry } from "prom-client";

/**
 * The operator's Prometheus metrics. Labels come from bounded sets only: controller names, resource
 * plurals and verbs the operator itself uses, HTTP codes, outcomes; never object names.
 */
export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({
    name: "darkbloom_operator_reconcile_total",
    help: "Reconciles by controller and outcome (success, error, requeue).",
    labelNames: ["controller", "result"] as const,
    registers: [this.registry],
  });
  readonly reconcileSeconds = new Histogram({
    name: "darkbloom_operator_reconcile_duration_seconds",
    help: "How long a reconcile took.",
    labelNames: ["controller"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: "darkbloom_operator_workqueue_depth",
    help: "Keys waiting in a controller's work queue.",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly apiRequests = new Counter({
    name: "darkbloom_operator_kube_api_requests_total",
    help: "Requests to the Kubernetes API by verb, resource and HTTP code (0: no answer).",
    labelNames: ["verb", "resource", "code"] as const,
    registers: [this.registry],
  });
  readonly informerRestarts = new Counter({
    name: "darkbloom_operator_informer_restarts_total",
    help: "Informers restarted after a watch or list error.",
    labelNames: ["resource"] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: "darkbloom_operator_leader",
    help: "1 while this process holds the leader lease.",
    registers: [this.registry],
  });
}
