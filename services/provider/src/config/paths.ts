import { join } from "node:path";

/** Where the daemon keeps everything of one installation, relative to its data directory. */
export const DataDirLayout = {
  models: "models",
  logs: "logs",
  logFile: join("logs", "provider.log"),
  pidFile: "darkbloom.pid",
  encryptionKey: "encryption-key.pem",
  machineId: "machine-id",
  accountToken: "account-token",
  /** The software attestation key (P-256, PKCS#8 PEM), alone in a 0700 directory. */
  attestationKey: join("keys", "attestation.pem"),
  /** Installed release bundles (`releases/<version>/`) and the `current` symlink. */
  releases: "releases",
} as const;

/** The YAML config file read unless --config (or DARKBLOOM_CONFIG) names another. */
export function defaultConfigPath(home: string): string {
  return join(home, ".config", "darkbloom", "provider.yaml");
}

/** The data directory used unless configured otherwise. */
export function defaultDataDir(home: string): string {
  return join(home, ".darkbloom", "provider");
}

export function modelsDirOf(dataDir: string): string {
  return join(dataDir, DataDirLayout.models);
}

export function logFileOf(dataDir: string): string {
  return join(dataDir, DataDirLayout.logFile);
}

export function pidFileOf(dataDir: string): string {
  return join(dataDir, DataDirLayout.pidFile);
}
