/**
 * Loads a GGUF in a child process before anything trusts it: llama.cpp answers many malformed files
 * with GGML_ASSERT → abort(), which would take down the process that loaded them (the daemon, or the
 * coordinator loading a tokenizer).
 */
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

export interface ValidationVerdict {
  ok: boolean;
  /** Why the file was refused (when !ok). */
  reason?: string;
}

function nodeLlamaCppUrl(): string {
  const require = createRequire(import.meta.url);
  return pathToFileURL(require.resolve("node-llama-cpp")).href;
}

function lastLines(text: string, n: number): string {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .slice(-n)
    .join(" / ");
}

/**
 * Runs `source` (CommonJS, read from stdin, so that no extra execArgv such as -e leaks into the
 * binding self-test process node-llama-cpp forks) in a throwaway Node process with
 * DARKBLOOM_NLC_URL (node-llama-cpp's entry) and DARKBLOOM_MODEL_PATH set. The child prints a JSON
 * line {ok, reason?}; a crash, an abort or running past `timeoutMs` is a refusal that says so.
 * `what` names the file in messages ("the model").
 */
export function checkInChildProcess(
  source: string,
  path: string,
  timeoutMs: number,
  what: string,
): Promise<ValidationVerdict> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, DARKBLOOM_NLC_URL: nodeLlamaCppUrl(), DARKBLOOM_MODEL_PATH: path },
    });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < 64 * 1024) stderr += d;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      resolve({ ok: false, reason: `could not start the validation process: ${err.message}` });
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      let report: ValidationVerdict | undefined;
      for (const line of stdout.split("\n").reverse()) {
        try {
          const parsed = JSON.parse(line) as ValidationVerdict;
          if (typeof parsed.ok === "boolean") {
            report = parsed;
            break;
          }
        } catch {
          // not the report line
        }
      }
      if (timedOut)
        resolve({
          ok: false,
          reason: `loading ${what} took longer than ${Math.round(timeoutMs / 1000)} s`,
        });
      else if (code === 0 && report?.ok) resolve({ ok: true });
      else if (report && !report.ok)
        resolve({ ok: false, reason: report.reason ?? `${what} failed to load` });
      else {
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        const detail = lastLines(stderr, 2);
        resolve({
          ok: false,
          reason: `loading ${what} crashed llama.cpp (process ${how})${detail ? `: ${detail}` : ""}`,
        });
      }
    });
    child.stdin.on("error", () => {});
    child.stdin.end(source);
  });
}
