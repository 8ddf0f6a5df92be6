export { DISCONNECT_REASONS, LOAD_RESULTS, ModelLabels, OTHER } from "./labels.js";
export {
  DEFAULT_METRICS_LISTEN,
  formatListenAddress,
  type ListenAddress,
  ListenAddressError,
  METRICS_LISTEN_OFF,
  parseListenAddress,
} from "./listen-address.js";
export {
  listenForMetrics,
  MetricsListenError,
  type MetricsListenOptions,
  type MetricsServer,
  type MetricsSource,
  serveMetrics,
} from "./metrics-server.js";
export { type LinkSource, ProviderMetrics, type ProviderMetricsOptions } from "./provider-metrics.js";
