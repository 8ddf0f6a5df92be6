import { lstat, readdir, readFile } from "node:fs/promises";
import { join, posix, relative, sep } from "node:path";

// What an image's /app holds, checked against the lockfile on its own terms: the packages Node can
// load from the deployable (its dependencies, optional dependencies and required peers, followed
// through the lockfile's locations and workspace links) against the packages installed. This does
// not reuse images/assemble.mjs's walk: it reads package-lock.json, not the installed tree.

interface LockEntry {
  name?: string;
  version?: string;
  link?: boolean;
  resolved?: string;
  dev?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

export interface Lockfile {
  packages: Record<string, LockEntry>;
}

export interface Closure {
  /** Lockfile locations (node_modules/…) of the packages Node may load, links included. */
  packages: Set<string>;
  /** Of those, the ones reached only through optional dependencies (another platform's, say). */
  optionalOnly: Set<string>;
  /** Workspace and file: folders reached through links. */
  folders: Set<string>;
}

/** The location Node would find `name` at from `from`, walking up through node_modules folders. */
function locate(lock: Lockfile, from: string, name: string): string | undefined {
  for (let dir = from; ; dir = posix.dirname(dir)) {
    const base = dir === "." ? "" : `${dir}/`;
    const candidate = `${base}node_modules/${name}`;
    if (lock.packages[candidate]) return candidate;
    if (dir === "." || dir === "") return undefined;
  }
}

export function lockfileClosure(lock: Lockfile, workspace: string): Closure {
  const packages = new Set<string>();
  const required = new Set<string>();
  const folders = new Set<string>([workspace]);
  const seen = new Set<string>();
  const visit = (location: string, optionalPath: boolean) => {
    const key = `${location}\0${optionalPath}`;
    if (seen.has(key)) return;
    seen.add(key);
    const entry = lock.packages[location];
    if (!entry) throw new Error(`package-lock.json has no ${location}`);
    const peersOptional = entry.peerDependenciesMeta ?? {};
    const edges = [
      ...Object.keys(entry.dependencies ?? {}).map((name) => ({ name, optional: false })),
      ...Object.keys(entry.peerDependencies ?? {})
        .filter((name) => !peersOptional[name]?.optional)
        .map((name) => ({ name, optional: false })),
      ...Object.keys(entry.optionalDependencies ?? {}).map((name) => ({ name, optional: true })),
    ];
    for (const edge of edges) {
      const found = locate(lock, location, edge.name);
      if (!found) {
        if (edge.optional) continue;
        throw new Error(`${location} needs ${edge.name}, which the lockfile does not hold`);
      }
      const optional = optionalPath || edge.optional;
      packages.add(found);
      if (!optional) required.add(found);
      const link = lock.packages[found];
      if (link?.link && link.resolved) {
        folders.add(link.resolved);
        // A workspace has an entry of its own; a `file:` override's folder (the empty platform
        // stubs) has none, and no dependencies.
        if (lock.packages[link.resolved]) visit(link.resolved, optional);
      } else visit(found, optional);
    }
  };
  visit(workspace, false);
  return { packages, folders, optionalOnly: new Set([...packages].filter((p) => !required.has(p))) };
}

/** Package locations under `appRoot`'s node_modules folders (relative, / separated), links included. */
export async function installedPackages(appRoot: string): Promise<Set<string>> {
  const found = new Set<string>();
  const walk = async (modules: string) => {
    let entries: string[];
    try {
      entries = await readdir(modules);
    } catch {
      return;
    }
    for (const entry of entries) {
      if (entry.startsWith(".")) continue;
      const at = join(modules, entry);
      if (entry.startsWith("@")) {
        for (const scoped of await readdir(at)) await add(join(at, scoped));
      } else await add(at);
    }
  };
  const add = async (at: string) => {
    found.add(relative(appRoot, at).split(sep).join("/"));
    if (!(await lstat(at)).isSymbolicLink()) await walk(join(at, "node_modules"));
  };
  await walk(join(appRoot, "node_modules"));
  return found;
}

/** Every file under `dir` (relative, / separated), not descending into node_modules. */
export async function filesOutsideNodeModules(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (at: string) => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      if (entry.name === "node_modules") continue;
      const path = join(at, entry.name);
      if (entry.isDirectory()) await walk(path);
      else out.push(relative(dir, path).split(sep).join("/"));
    }
  };
  await walk(dir);
  return out.sort();
}

export async function readLockfile(repo: string): Promise<Lockfile> {
  return JSON.parse(await readFile(join(repo, "package-lock.json"), "utf8")) as Lockfile;
}

/** A package's name from its location (node_modules/a/node_modules/@s/b -> @s/b). */
export function packageName(location: string): string {
  const at = location.lastIndexOf("node_modules/");
  return location.slice(at + "node_modules/".length);
}

/** Every path, with size and mtime, under `root`: what a process wrote shows as a difference. */
export async function snapshot(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (at: string) => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      const info = await lstat(path);
      out.set(relative(root, path), `${info.size}:${info.mtimeMs}`);
      if (entry.isDirectory()) await walk(path);
    }
  };
  await walk(root);
  return out;
}

export function changedPaths(before: Map<string, string>, after: Map<string, string>): string[] {
  const changed = new Set<string>();
  for (const [path, stamp] of after) if (before.get(path) !== stamp) changed.add(path);
  for (const path of before.keys()) if (!after.has(path)) changed.add(path);
  return [...changed].sort();
}
