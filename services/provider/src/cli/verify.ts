import { readFile } from "node:fs/promises";
import { verifyResponse } from "@darkbloom/protocol/verifiable-response";
import type { Command } from "commander";
import type { CliContext } from "./context.js";
import { CliFailure, ExitCode, UsageError } from "./io.js";

/**
 * `verify`: checks a saved response's `darkbloom` object (docs/ARCHITECTURE.md, "Verifiable
 * responses"): the response hash recomputed from the saved content, the signature with the provider's
 * signing key, and with --request the request hash. Exit 0 valid, 1 invalid (one line saying what
 * failed), 64 bad usage. Reads a non-streaming JSON body or a saved SSE stream.
 */
export function addVerifyCommand(program: Command, context: CliContext): void {
  program
    .command("verify")
    .description("check the provider signature on a saved response (JSON body or SSE stream)")
    .argument("<saved-response>", "a saved response: the JSON body, or the text/event-stream up to [DONE]")
    .option("--request <file>", "the request body exactly as sent; its hash must match request_sha256")
    .option("--signing-key <base64>", "require this provider signing key (SEC1, base64)")
    .action(async (savedPath: string, opts: { request?: string; signingKey?: string }) => {
      const saved = await readInput(savedPath, "saved response");
      const requestBody = opts.request === undefined ? undefined : await readInput(opts.request, "request");
      const result = verifyResponse(saved.toString("utf8"), {
        requestBody,
        signingKey: opts.signingKey,
      });
      if (!result.ok) throw new CliFailure(`invalid: ${result.reason}`, ExitCode.failure);
      const p = result.proof;
      context.io.stdout(
        `valid: signed by provider ${p.provider_id} (trust ${p.trust_level}), response_sha256 ` +
          `${p.response_sha256}${requestBody === undefined ? " (request not checked: pass --request)" : ", request matches"}\n`,
      );
    });
}

async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read the ${what} ${path}${code ? ` (${code})` : ""}`);
  }
}
