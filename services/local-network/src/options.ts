import { parseArgs } from "node:util";
import { MAX_PROVIDERS } from "./plan.js";

/** A command-line mistake: reported as one line with exit code 64. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

export interface ParsedOptions {
  port: number;
  dataDir: string;
  /** Provider daemons, or "auto": as many as the model's thread count fits in the physical cores. */
  providers: number | "auto";
  model: string;
  /** A synthesized embedding model served beside it (POST /v1/embeddings), or undefined for none. */
  embeddingModel: string | undefined;
  help: boolean;
}

export const USAGE = `Usage: npm start -- [--port P] [--data-dir D] [--providers N] [--model NAME]
                 [--embedding-model NAME|none]

Runs the whole Darkbloom network on this machine: an embedded PostgreSQL, the coordinator on
127.0.0.1:P, N provider daemons serving a synthesized model, and a funded demo account, then prints
  READY base_url=<url> api_key=<key> admin_key=<key>
Ctrl-C stops everything.

  --port P        coordinator port (default 8080; 0 picks a free one)
  --data-dir D    where all state lives (default .darkbloom)
  --providers N   provider daemons to run, at most 16, or auto (the default): each daemon gets the
                  engine's thread count for the model (one thread per 64 MiB of weights, at most
                  the physical cores) and as many run as fit the physical cores, at most 4; with
                  N, each daemon's threads are capped at its share of the cores
  --model NAME    synthesized model shape: tiny, tiny-llama, qwen3-0.6b, llama-3.2-1b (default tiny)
  --embedding-model NAME
                  synthesized embedding model served beside it for /v1/embeddings (default
                  tiny-embed), or none
`;

const MODEL = /^[A-Za-z0-9._-]{1,64}$/;

export function parseOptions(argv: string[]): ParsedOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        port: { type: "string" },
        "data-dir": { type: "string" },
        providers: { type: "string" },
        model: { type: "string" },
        "embedding-model": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.split("\n")[0] : String(e));
  }
  const port = integer(values.port, "--port", 8080, 0, 65_535);
  const providers =
    values.providers === "auto" || values.providers === undefined
      ? "auto"
      : integer(values.providers, "--providers", 1, 1, MAX_PROVIDERS);
  const model = (values.model as string | undefined) ?? "tiny";
  if (!MODEL.test(model))
    throw new UsageError(
      `--model must be a model name like tiny or qwen3-0.6b, got ${JSON.stringify(model)}`,
    );
  const embedding = (values["embedding-model"] as string | undefined) ?? "tiny-embed";
  if (embedding !== "none" && !MODEL.test(embedding))
    throw new UsageError(
      `--embedding-model must be a model name like tiny-embed, or none, got ${JSON.stringify(embedding)}`,
    );
  if (embedding === model) throw new UsageError("--embedding-model must differ from --model");
  const dataDir = (values["data-dir"] as string | undefined) ?? ".darkbloom";
  if (dataDir.trim() === "") throw new UsageError("--data-dir must not be empty");
  return {
    port,
    dataDir,
    providers,
    model,
    embeddingModel: embedding === "none" ? undefined : embedding,
    help: values.help === true,
  };
}

function integer(
  raw: string | boolean | undefined,
  flag: string,
  fallback: number,
  min: number,
  max: number,
): number {
  if (raw === undefined) return fallback;
  const text = String(raw);
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max)
    throw new UsageError(`${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return n;
}
