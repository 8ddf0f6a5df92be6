import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DataDirLayout } from "./paths.js";

/** The provider token `darkbloom login` obtained, or undefined when this installation is not linked. */
export async function readAccountToken(dataDir: string): Promise<string | undefined> {
  try {
    const token = (await readFile(join(dataDir, DataDirLayout.accountToken), "utf8")).trim();
    return token === "" ? undefined : token;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/** Stores the provider token, readable by this user only. */
export async function writeAccountToken(dataDir: string, token: string): Promise<void> {
  await writeFile(join(dataDir, DataDirLayout.accountToken), `${token}\n`, { mode: 0o600 });
}

export async function removeAccountToken(dataDir: string): Promise<void> {
  await rm(join(dataDir, DataDirLayout.accountToken), { force: true });
}
