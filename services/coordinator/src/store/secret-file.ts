import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";

/**
 * Returns the secret stored in `path`, creating the file (mode 0600) with a fresh random secret when
 * it does not exist. Concurrent callers agree on one secret: the first to create the file wins.
 */
export async function readOrCreateSecretFile(
  path: string,
  generate: () => string = () => randomBytes(32).toString("base64url"),
): Promise<string> {
  const existing = await readSecretFile(path);
  if (existing !== undefined) return existing;
  try {
    await writeFile(path, `${generate()}\n`, { mode: 0o600, flag: "wx" });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  const created = await readSecretFile(path);
  if (created === undefined) throw new Error(`${path} is empty`);
  return created;
}

/** The trimmed contents of a secret file; undefined when it does not exist or is blank. */
export async function readSecretFile(path: string): Promise<string | undefined> {
  try {
    const secret = (await readFile(path, "utf8")).trim();
    return secret === "" ? undefined : secret;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}
