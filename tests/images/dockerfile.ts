import { readFileSync } from "node:fs";
import { join, posix } from "node:path";
import { fileURLToPath } from "node:url";

// A strict reader of images/Dockerfile: the instructions that file uses, with Docker's semantics
// for them, and an error for anything else (another instruction, a shell-form ENTRYPOINT, a COPY
// wildcard, an unset variable), so that the test executing the file never silently skips a part of
// it. Its output is what a build would make of each stage: the filesystem steps in order (WORKDIR,
// COPY, RUN with the variables in effect) and the image configuration the stage ends with.

export const REPO = fileURLToPath(new URL("../../", import.meta.url));
export const DOCKERFILE = join(REPO, "images/Dockerfile");

export interface Chown {
  uid: number;
  gid: number;
}

export type Step =
  | { kind: "WORKDIR"; path: string; line: number }
  | {
      kind: "COPY";
      from?: string;
      chown?: Chown;
      sources: string[];
      dest: string;
      workdir: string;
      line: number;
    }
  | { kind: "RUN"; command: string; env: Record<string, string>; workdir: string; line: number };

export interface HealthCheck {
  options: Record<string, string>;
  argv: string[];
}

/** An image's configuration, as `docker inspect` would show it. */
export interface ImageConfig {
  env: Record<string, string>;
  workdir: string;
  user?: string;
  labels: Record<string, string>;
  exposed: number[];
  entrypoint?: string[];
  cmd?: string[];
  healthcheck?: HealthCheck;
}

export interface Stage {
  name: string;
  /** The base: an image reference, or an earlier stage's name (then `parent` is set). */
  from: string;
  parent?: string;
  steps: Step[];
  config: ImageConfig;
}

export interface Dockerfile {
  stages: Stage[];
  stage(name: string): Stage;
}

export class DockerfileError extends Error {}

const KEYWORDS = new Set([
  "FROM",
  "ARG",
  "ENV",
  "WORKDIR",
  "COPY",
  "RUN",
  "USER",
  "LABEL",
  "EXPOSE",
  "ENTRYPOINT",
  "CMD",
  "HEALTHCHECK",
]);
const HEALTHCHECK_OPTIONS = new Set(["interval", "timeout", "start-period", "retries"]);

/** Joins continuation lines (a trailing backslash) and drops comments and blank lines. */
function logicalLines(text: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  let pending: { line: number; text: string } | undefined;
  text.split("\n").forEach((raw, index) => {
    const trimmed = raw.trim();
    // Docker drops comment lines, also inside a continued instruction.
    if (trimmed.startsWith("#") || (trimmed === "" && !pending)) return;
    const continued = trimmed.endsWith("\\");
    const part = continued ? trimmed.slice(0, -1).trimEnd() : trimmed;
    pending = pending
      ? { line: pending.line, text: `${pending.text} ${part}` }
      : { line: index + 1, text: part };
    if (!continued) {
      out.push(pending);
      pending = undefined;
    }
  });
  if (pending) throw new DockerfileError(`line ${pending.line}: the file ends inside a continued line`);
  return out;
}

/** Splits on unquoted whitespace; double quotes allow \" and \\, single quotes are literal. */
export function words(text: string): string[] {
  const out: string[] = [];
  let current: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (/\s/.test(c)) {
      if (current !== undefined) out.push(current);
      current = undefined;
    } else if (c === '"' || c === "'") {
      const end = text.indexOf(c, i + 1);
      if (end < 0) throw new DockerfileError(`unterminated ${c} in: ${text}`);
      const inner = text.slice(i + 1, end);
      current = (current ?? "") + (c === '"' ? inner.replace(/\\(["\\])/g, "$1") : inner);
      i = end;
    } else current = (current ?? "") + c;
  }
  if (current !== undefined) out.push(current);
  return out;
}

/** `$NAME` and `${NAME}` from `scope`; an unset name is an error, not Docker's empty string. */
function substitute(text: string, scope: Record<string, string | undefined>, line: number): string {
  return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, braced, bare) => {
    const name = (braced ?? bare) as string;
    const value = scope[name];
    if (value === undefined) throw new DockerfileError(`line ${line}: $${name} is not set`);
    return value;
  });
}

function pairs(text: string, line: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const word of words(text)) {
    const at = word.indexOf("=");
    if (at <= 0) throw new DockerfileError(`line ${line}: expected key=value, got ${word}`);
    out[word.slice(0, at)] = word.slice(at + 1);
  }
  if (Object.keys(out).length === 0) throw new DockerfileError(`line ${line}: no key=value`);
  return out;
}

function execForm(text: string, line: number): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new DockerfileError(`line ${line}: only the exec form (a JSON array) is read, got: ${text}`);
  }
  if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((w) => typeof w === "string")) {
    throw new DockerfileError(`line ${line}: expected a non-empty JSON array of strings`);
  }
  return parsed as string[];
}

/** Leading `--name=value` flags, each of which must be allowed. */
function flags(
  rest: string[],
  allowed: readonly string[],
  line: number,
): { flags: Record<string, string[]>; rest: string[] } {
  const found: Record<string, string[]> = {};
  let i = 0;
  for (; i < rest.length && rest[i]?.startsWith("--"); i++) {
    const match = /^--([a-z-]+)=(.+)$/.exec(rest[i] as string);
    if (!match || !allowed.includes(match[1] as string)) {
      throw new DockerfileError(`line ${line}: unsupported flag ${rest[i]}`);
    }
    const name = match[1] as string;
    found[name] = [...(found[name] ?? []), match[2] as string];
  }
  return { flags: found, rest: rest.slice(i) };
}

function chown(value: string, line: number): Chown {
  const match = /^(\d+):(\d+)$/.exec(value);
  if (!match) throw new DockerfileError(`line ${line}: --chown takes numeric uid:gid, got ${value}`);
  return { uid: Number(match[1]), gid: Number(match[2]) };
}

export function parseDockerfile(text: string): Dockerfile {
  const globalArgs: Record<string, string | undefined> = {};
  const stages: Stage[] = [];
  let stage: Stage | undefined;
  let scope: Record<string, string | undefined> = {};
  for (const { line, text: instruction } of logicalLines(text)) {
    const space = instruction.search(/\s/);
    const keyword = (space < 0 ? instruction : instruction.slice(0, space)).toUpperCase();
    const body = space < 0 ? "" : instruction.slice(space + 1).trim();
    if (!KEYWORDS.has(keyword))
      throw new DockerfileError(`line ${line}: ${keyword} is not read by this parser`);
    if (keyword === "ARG") {
      const [word, ...extra] = words(body);
      const match = /^([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$/.exec(word ?? "");
      if (!match || extra.length > 0) throw new DockerfileError(`line ${line}: ARG takes one name[=default]`);
      const name = match[1] as string;
      if (!stage) globalArgs[name] = match[2];
      else scope[name] = match[2] !== undefined ? substitute(match[2], scope, line) : globalArgs[name];
      continue;
    }
    if (keyword === "FROM") {
      const parts = words(body);
      if (parts.length !== 3 || parts[1]?.toUpperCase() !== "AS") {
        throw new DockerfileError(`line ${line}: FROM must name its stage (FROM <image> AS <name>)`);
      }
      const from = substitute(parts[0] as string, globalArgs, line);
      const name = parts[2] as string;
      if (stages.some((s) => s.name === name)) throw new DockerfileError(`line ${line}: stage ${name} twice`);
      const parent = stages.find((s) => s.name === from);
      stage = {
        name,
        from,
        ...(parent ? { parent: parent.name } : {}),
        steps: [],
        config: parent ? structuredClone(parent.config) : { env: {}, workdir: "/", labels: {}, exposed: [] },
      };
      stages.push(stage);
      // A stage sees its base's ENV; ARGs must be declared again inside it.
      scope = { ...stage.config.env };
      continue;
    }
    if (!stage) throw new DockerfileError(`line ${line}: ${keyword} before the first FROM`);
    const config = stage.config;
    switch (keyword) {
      case "ENV": {
        const vars = pairs(body, line);
        for (const [key, value] of Object.entries(vars)) {
          config.env[key] = substitute(value, scope, line);
          scope[key] = config.env[key];
        }
        break;
      }
      case "LABEL":
        for (const [key, value] of Object.entries(pairs(body, line))) {
          config.labels[key] = substitute(value, scope, line);
        }
        break;
      case "WORKDIR": {
        const path = posix.resolve(config.workdir, substitute(body, scope, line));
        config.workdir = path;
        stage.steps.push({ kind: "WORKDIR", path, line });
        break;
      }
      case "USER":
        if (!/^\d+(:\d+)?$/.test(body)) {
          throw new DockerfileError(`line ${line}: USER must be numeric (uid[:gid]), for runAsNonRoot`);
        }
        config.user = body;
        break;
      case "EXPOSE":
        config.exposed = words(body).map((p) => {
          if (!/^\d+$/.test(p)) throw new DockerfileError(`line ${line}: EXPOSE takes port numbers`);
          return Number(p);
        });
        break;
      case "ENTRYPOINT":
        config.entrypoint = execForm(body, line);
        // Docker resets CMD when a stage sets ENTRYPOINT.
        delete config.cmd;
        break;
      case "CMD":
        config.cmd = execForm(body, line);
        break;
      case "HEALTHCHECK": {
        const cmdAt = body.search(/\bCMD\b/);
        if (cmdAt < 0)
          throw new DockerfileError(`line ${line}: HEALTHCHECK [--option=value…] CMD [exec form]`);
        const parsed = flags(words(body.slice(0, cmdAt)), [...HEALTHCHECK_OPTIONS], line);
        if (parsed.rest.length > 0) {
          throw new DockerfileError(`line ${line}: HEALTHCHECK [--option=value…] CMD [exec form]`);
        }
        const options = Object.fromEntries(Object.entries(parsed.flags).map(([k, v]) => [k, v[0] as string]));
        config.healthcheck = { options, argv: execForm(body.slice(cmdAt + 3).trim(), line) };
        break;
      }
      case "COPY": {
        const parsed = flags(words(body), ["from", "chown"], line);
        const paths = parsed.rest.map((p) => substitute(p, scope, line));
        if (paths.length < 2) throw new DockerfileError(`line ${line}: COPY <src>… <dest>`);
        const dest = paths.pop() as string;
        if (paths.length > 1 && !dest.endsWith("/")) {
          throw new DockerfileError(`line ${line}: COPY of several sources needs a destination ending in /`);
        }
        if (paths.some((p) => /[*?[]/.test(p)))
          throw new DockerfileError(`line ${line}: no wildcards in COPY`);
        const from = parsed.flags.from?.[0];
        if (from !== undefined && !stages.some((s) => s.name === from && s !== stage)) {
          throw new DockerfileError(`line ${line}: COPY --from=${from} names no earlier stage`);
        }
        const owner = parsed.flags.chown?.[0];
        stage.steps.push({
          kind: "COPY",
          ...(from !== undefined ? { from } : {}),
          ...(owner !== undefined ? { chown: chown(owner, line) } : {}),
          sources: paths,
          dest,
          workdir: config.workdir,
          line,
        });
        break;
      }
      case "RUN": {
        // Cache mounts change how fast a build is, not what it makes: read and set aside.
        const mount = /^--mount=(\S+)\s+/.exec(body);
        if (mount && !/^type=cache,target=\/[^,\s]+(,sharing=locked)?$/.test(mount[1] as string)) {
          throw new DockerfileError(`line ${line}: only --mount=type=cache,target=… is read`);
        }
        const command = mount ? body.slice(mount[0].length) : body;
        if (command.startsWith("[") || command.startsWith("--")) {
          throw new DockerfileError(`line ${line}: RUN is read in shell form only, without other flags`);
        }
        const env = Object.fromEntries(
          Object.entries(scope).filter((e): e is [string, string] => e[1] !== undefined),
        );
        stage.steps.push({ kind: "RUN", command, env, workdir: config.workdir, line });
        break;
      }
    }
  }
  if (stages.length === 0) throw new DockerfileError("no FROM");
  return {
    stages,
    stage: (name) => {
      const found = stages.find((s) => s.name === name);
      if (!found) throw new DockerfileError(`no stage ${name}`);
      return found;
    },
  };
}

export function readDockerfile(path = DOCKERFILE): Dockerfile {
  return parseDockerfile(readFileSync(path, "utf8"));
}

/**
 * A target's ENTRYPOINT as a command on this machine, for the tests that run what the image runs
 * without Docker: `node` is this Node, and `/app/…` is the same path in this checkout (the images'
 * /app mirrors the repository's layout).
 */
export function entrypointOnHost(target: string, dockerfile: Dockerfile = readDockerfile()): string[] {
  const entrypoint = dockerfile.stage(target).config.entrypoint;
  if (!entrypoint) throw new DockerfileError(`stage ${target} has no ENTRYPOINT`);
  return entrypoint.map((word, i) => {
    if (i === 0 && word === "node") return process.execPath;
    if (word.startsWith("/app/")) return join(REPO, word.slice("/app/".length));
    return word;
  });
}
