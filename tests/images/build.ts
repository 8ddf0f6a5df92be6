import { spawn } from "node:child_process";
import { cp, lchown, lstat, mkdir, readdir, readFile, stat } from "node:fs/promises";
import { basename, dirname, join, posix, relative, sep } from "node:path";
import type { Chown, Dockerfile, Step } from "./dockerfile.js";

// Runs a parsed Dockerfile without Docker: each stage is a directory standing for its image's root
// filesystem. A stage FROM an image starts empty (there is no base image here: its Node is this
// machine's, its /bin/sh this machine's, and of its files only empty /etc and /tmp folders stand
// for it); a stage FROM an earlier stage starts as a copy of it.
// COPY copies from the build context (honouring .dockerignore) or an earlier stage's root; RUN runs
// `sh -c` in the stage's working directory with the stage's ARG and ENV values. RUN commands must
// not name absolute paths (they would touch this machine, not the stage): that is refused.

/** .dockerignore, read the way Docker reads it: a pattern excludes a path and everything below it. */
export class DockerIgnore {
  private readonly patterns: RegExp[];

  constructor(text: string) {
    this.patterns = text
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#"))
      .map((line) => {
        if (line.startsWith("!")) throw new Error(`.dockerignore: exceptions (${line}) are not read`);
        return DockerIgnore.compile(posix.normalize(line.replace(/^\/+/, "")));
      });
  }

  private static compile(pattern: string): RegExp {
    let source = "";
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i] as string;
      if (pattern.startsWith("**/", i)) {
        source += "(?:.*/)?";
        i += 2;
      } else if (pattern.startsWith("**", i)) {
        source += ".*";
        i += 1;
      } else if (c === "*") source += "[^/]*";
      else if (c === "?") source += "[^/]";
      else if (c === "[") throw new Error(`.dockerignore: character classes (${pattern}) are not read`);
      else source += c.replace(/[.+^${}()|\\]/g, "\\$&");
    }
    return new RegExp(`^${source}$`);
  }

  /** Whether `path` (relative to the context, / separated) or a folder above it is excluded. */
  ignores(path: string): boolean {
    const parts = path.split("/");
    for (let n = 1; n <= parts.length; n++) {
      const prefix = parts.slice(0, n).join("/");
      if (this.patterns.some((p) => p.test(prefix))) return true;
    }
    return false;
  }
}

export interface BuildOptions {
  /** The build context (the repository root). */
  context: string;
  /** Where the stages' roots are made, one folder per stage. */
  workDir: string;
  /** Added to every RUN's environment (the test's npm settings). */
  env?: Record<string, string>;
  log?: (line: string) => void;
}

export interface BuildResult {
  /** Each stage's root folder. */
  roots: Map<string, string>;
  /** Seconds each RUN took, by "stage:line". */
  timings: Map<string, number>;
  /** Whether --chown was applied (only root may give files away). */
  chowned: boolean;
}

/** A container path inside a stage's root. */
export function inRoot(root: string, containerPath: string): string {
  if (!containerPath.startsWith("/")) throw new Error(`not absolute: ${containerPath}`);
  return join(root, ...containerPath.split("/").filter(Boolean));
}

/** Absolute paths a RUN command names, outside single quotes (which the shell leaves as text). */
export function absolutePathsIn(command: string): string[] {
  const unquoted = command.replace(/'[^']*'/g, "''");
  return [...unquoted.matchAll(/(?:^|[\s=:"(<>|;&])(\/[^\s"')]*)/g)]
    .map((m) => m[1] as string)
    .filter((p) => p !== "/dev/null");
}

async function chownTree(path: string, owner: Chown): Promise<void> {
  await lchown(path, owner.uid, owner.gid);
  if ((await lstat(path)).isDirectory()) {
    for (const entry of await readdir(path)) await chownTree(join(path, entry), owner);
  }
}

function run(command: string, cwd: string, env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("sh", ["-c", command], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-8_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`exit ${code} from: ${command}\n${output}`)),
    );
  });
}

/**
 * Copies `source` to `dest` as COPY does: a folder's contents into `dest`, a file to `dest` (or
 * into it when `dest` ends in /). `skip` leaves out context paths .dockerignore excludes.
 */
async function copyOne(
  source: string,
  dest: string,
  destIsFolder: boolean,
  skip: (path: string) => boolean,
): Promise<void> {
  const info = await stat(source);
  const target = info.isDirectory() || !destIsFolder ? dest : join(dest, basename(source));
  await mkdir(info.isDirectory() ? target : dirname(target), { recursive: true });
  await cp(source, target, {
    recursive: true,
    verbatimSymlinks: true,
    preserveTimestamps: true,
    filter: (path) => !skip(path),
  });
}

async function copyStep(
  step: Extract<Step, { kind: "COPY" }>,
  root: string,
  roots: Map<string, string>,
  context: string,
  ignore: DockerIgnore,
): Promise<boolean> {
  const fromRoot = step.from === undefined ? undefined : roots.get(step.from);
  const destPath = posix.resolve(step.workdir, step.dest);
  const dest = inRoot(root, destPath);
  const destIsFolder = step.dest.endsWith("/") || step.sources.length > 1;
  for (const source of step.sources) {
    let from: string;
    let skip: (path: string) => boolean = () => false;
    if (fromRoot) from = inRoot(fromRoot, posix.resolve("/", source));
    else {
      const rel = posix
        .normalize(source)
        .replace(/^\.?\/?/, "")
        .replace(/\/$/, "");
      if (rel.startsWith("..")) throw new Error(`line ${step.line}: ${source} is outside the context`);
      if (rel !== "" && ignore.ignores(rel))
        throw new Error(`line ${step.line}: ${source} is .dockerignored`);
      from = join(context, rel);
      skip = (path) => {
        const inside = relative(context, path).split(sep).join("/");
        return inside !== "" && ignore.ignores(inside);
      };
    }
    await copyOne(from, dest, destIsFolder, skip);
    if (step.chown && process.getuid?.() === 0) {
      const copied = (await stat(from)).isDirectory() || !destIsFolder ? dest : join(dest, basename(from));
      await chownTree(copied, step.chown);
    }
  }
  return step.chown !== undefined && process.getuid?.() === 0;
}

/** Builds every stage of `dockerfile`, in order. */
export async function buildStages(dockerfile: Dockerfile, options: BuildOptions): Promise<BuildResult> {
  const ignore = new DockerIgnore(
    await readFile(join(options.context, ".dockerignore"), "utf8").catch(() => ""),
  );
  const roots = new Map<string, string>();
  const timings = new Map<string, number>();
  let chowned = false;
  for (const stage of dockerfile.stages) {
    const root = join(options.workDir, stage.name);
    if (stage.parent)
      await run(`cp -a '${roots.get(stage.parent)}' '${root}'`, options.workDir, {
        PATH: process.env.PATH ?? "",
      });
    // The base image's files are not here: only the folders every Debian image has that a RUN may
    // write into (/etc, /tmp) stand for it.
    else for (const folder of ["etc", "tmp"]) await mkdir(join(root, folder), { recursive: true });
    roots.set(stage.name, root);
    for (const step of stage.steps) {
      const started = performance.now();
      if (step.kind === "WORKDIR") await mkdir(inRoot(root, step.path), { recursive: true });
      else if (step.kind === "COPY")
        chowned = (await copyStep(step, root, roots, options.context, ignore)) || chowned;
      else {
        const absolute = absolutePathsIn(step.command);
        if (absolute.length > 0) {
          throw new Error(
            `line ${step.line}: RUN names absolute paths (${absolute.join(", ")}): use relative ones`,
          );
        }
        const cwd = inRoot(root, step.workdir);
        await mkdir(cwd, { recursive: true });
        // This machine's PATH (its Node and npm stand for the base image's) and HOME (npm's cache);
        // the stage's absolute ENV values point into the stage.
        const stageEnv = Object.fromEntries(
          Object.entries(step.env).map(([k, v]) => [k, v.startsWith("/") ? inRoot(root, v) : v]),
        );
        const env = {
          PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`,
          HOME: process.env.HOME ?? "",
          ...stageEnv,
          ...options.env,
        };
        await run(step.command, cwd, env);
        const seconds = (performance.now() - started) / 1000;
        timings.set(`${stage.name}:${step.line}`, seconds);
        options.log?.(
          `${stage.name} line ${step.line}: ${seconds.toFixed(1)} s: ${step.command.slice(0, 90)}`,
        );
      }
    }
  }
  return { roots, timings, chowned };
}
