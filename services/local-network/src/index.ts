export { coordinatorBin, freePort, providerBin } from "./binaries.js";
export { type Child, startChild } from "./child.js";
export { type LocalNetwork, type LocalNetworkOptions, startLocalNetwork } from "./local-network.js";
export { type ParsedOptions, parseOptions, USAGE, UsageError } from "./options.js";
