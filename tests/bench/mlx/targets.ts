/**
 * The MLX benchmark's targets over token ids: the MLX batching core through its own scheduler (no
 * daemon around it), and mlx-lm's generation in a Python child (mlx_lm_generation.py). Both read the
 * prompts the daemon's engine would evaluate for the same raw text, so the three targets of a run
 * compute over the same tokens.
 */
import { type ChildProcessByStdio, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import type { MlxModel } from "@darkbloom/native/mlx";
import type { bench } from "@darkbloom/provider";

type BenchTarget = bench.BenchTarget;
type RowTiming = bench.RowTiming;

/** Raw text → the token ids the mlx engine evaluates for it (its tokenizer's rendering). */
export type PromptTokens = (text: string) => Int32Array;

/** A row's timings and the tokens it generated (compared across targets: same greedy tokens). */
export interface TokenRow extends RowTiming {
  tokens: number[];
}

/** Told each row's prompt text and generated tokens, once the row is done. */
export type OnRow = (prompt: string, tokens: readonly number[]) => void;

let requestSeq = 0;

/**
 * The MLX core's scheduler with `rows` rows of `contextPerRow` cells, greedy. Rows joining later
 * (`startAfter`) are submitted when that settles, as the engine target does.
 */
export async function coreTarget(
  model: MlxModel,
  promptTokens: PromptTokens,
  options: { name: string; rows: number; contextPerRow: number; prefillChunk: number; onRow?: OnRow },
): Promise<BenchTarget> {
  const scheduler = await model.createScheduler({
    rows: options.rows,
    contextPerRow: options.contextPerRow,
    prefillChunk: options.prefillChunk,
  });
  return {
    name: options.name,
    async runRows(rows) {
      const results = await Promise.all(
        rows.map(async ({ prompt, genTokens, startAfter, onToken }) => {
          await startAfter;
          const ids = promptTokens(prompt);
          return new Promise<TokenRow>((resolve, reject) => {
            const startMs = performance.now();
            const timing: TokenRow = {
              promptTokens: ids.length,
              completionTokens: 0,
              startMs,
              firstTokenMs: undefined,
              lastTokenMs: undefined,
              finishReason: "",
              tokenTimesMs: [],
              tokens: [],
            };
            scheduler.submit(
              {
                id: `mlx-bench-${++requestSeq}`,
                prompt: ids,
                maxTokens: genTokens,
                sampling: { temperature: 0 },
              },
              (event) => {
                const at = performance.now();
                if (event.kind === "tokens") {
                  timing.firstTokenMs ??= at;
                  timing.lastTokenMs = at;
                  for (const token of event.tokens) {
                    timing.tokens.push(token);
                    timing.tokenTimesMs?.push(at);
                  }
                  timing.completionTokens = timing.tokens.length;
                  onToken?.(at, event.tokens.length);
                } else if (event.kind === "done") {
                  timing.finishReason = event.reason;
                  resolve(timing);
                } else {
                  reject(new Error(`the MLX core failed a row: ${event.code}: ${event.message}`));
                }
              },
            );
          });
        }),
      );
      for (const [i, r] of rows.entries()) options.onRow?.(r.prompt, results[i]?.tokens ?? []);
      return results;
    },
    close: () => scheduler.close(),
  };
}

/** What the Python side says once its model is loaded. */
export interface MlxLmInfo {
  mlx: string;
  mlxLm: string;
  device: string;
}

/** Thrown when mlx-lm cannot run here (not importable, or the script failed): the message says why. */
export class MlxLmUnavailableError extends Error {
  override readonly name = "MlxLmUnavailableError";
}

const SCRIPT = fileURLToPath(new URL("../../../bench/mlx/mlx_lm_generation.py", import.meta.url));

/**
 * mlx-lm on the checkpoint in a Python child (`python`, with whatever PYTHONPATH the environment
 * gives it). Every batch is submitted together (no joins: startAfter is refused). Times are the
 * child's, from the batch's arrival there, so the pipe is not counted against mlx-lm.
 */
export async function mlxLmTarget(
  python: string,
  checkpointDir: string,
  promptTokens: PromptTokens,
  name: string,
  onRow?: OnRow,
): Promise<BenchTarget & { info: MlxLmInfo }> {
  const child: ChildProcessByStdio<Writable, Readable, Readable> = spawn(python, [SCRIPT, checkpointDir], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const lines: string[] = [];
  const waiting: ((line: string | undefined) => void)[] = [];
  let buffer = "";
  let ended = false;
  const endAll = () => {
    ended = true;
    for (const w of waiting.splice(0)) w(undefined);
  };
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    buffer += chunk;
    for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      const w = waiting.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  child.stdout.on("end", endAll);
  child.on("error", (error) => {
    stderr += `\n${error.message}`;
    endAll();
  });
  const nextLine = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const settle = (line: string | undefined) =>
        line === undefined
          ? reject(new MlxLmUnavailableError(`mlx-lm (${python}) stopped: ${lastLine(stderr)}`))
          : resolve(line);
      const queued = lines.shift();
      if (queued !== undefined) settle(queued);
      else if (ended) settle(undefined);
      else waiting.push(settle);
    });

  let info: MlxLmInfo;
  try {
    const ready = JSON.parse(await nextLine()) as {
      ready: boolean;
      mlx: string;
      mlx_lm: string;
      device: string;
    };
    info = { mlx: ready.mlx, mlxLm: ready.mlx_lm, device: ready.device };
  } catch (error) {
    child.kill();
    throw error instanceof MlxLmUnavailableError ? error : new MlxLmUnavailableError(String(error));
  }
  return {
    name,
    info,
    async runRows(rows) {
      if (rows.some((r) => r.startAfter !== undefined))
        throw new Error("the mlx-lm target runs whole batches only (no rows joining later)");
      const genTokens = Math.max(...rows.map((r) => r.genTokens));
      const prompts = rows.map((r) => [...promptTokens(r.prompt)]);
      child.stdin.write(`${JSON.stringify({ prompts, genTokens })}\n`);
      const answer = JSON.parse(await nextLine()) as {
        rows: (Omit<TokenRow, "firstTokenMs" | "lastTokenMs"> & {
          firstTokenMs: number | null;
          lastTokenMs: number | null;
        })[];
      };
      const out: TokenRow[] = answer.rows.map((r) => ({
        ...r,
        firstTokenMs: r.firstTokenMs ?? undefined,
        lastTokenMs: r.lastTokenMs ?? undefined,
      }));
      for (const [i, r] of rows.entries()) onRow?.(r.prompt, out[i]?.tokens ?? []);
      return out;
    },
    async close() {
      child.stdin.end();
      await new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve();
        else child.once("exit", () => resolve());
      });
    },
  };
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  return lines.at(-1) || "no output";
}
