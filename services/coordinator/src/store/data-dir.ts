import { chmod, mkdir, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";

/**
 * Creates the coordinator's data directory (mode 0700). As root, the embedded PostgreSQL server runs
 * as the "postgres" user, which must traverse (not list) the data directory and every directory
 * created on the way to it, so those get o+x and g+x; files inside stay private (0600).
 */
export async function ensureDataDir(path: string): Promise<string> {
  const dataDir = resolve(path);
  const firstCreated = await mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (process.getuid?.() !== 0) return dataDir;
  for (let dir = dataDir; ; dir = dirname(dir)) {
    const { mode } = await stat(dir);
    if ((mode & 0o011) !== 0o011) await chmod(dir, (mode & 0o7777) | 0o011);
    if (!firstCreated || dir === resolve(firstCreated) || dirname(dir) === dir) break;
  }
  return dataDir;
}
