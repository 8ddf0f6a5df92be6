import { readFile } from "node:fs/promises";
import { isEmbeddingsResponse, verifyEmbeddingsResponse } from "@darkbloom/protocol/verifiable-embeddings";
import {
  isPublishedKey,
  type PublishedKey,
  type ResponseProof,
  readPublishedKey,
  type VerifyOptions,
  verifyResponse,
} from "@darkbloom/protocol/verifiable-response";
import type { Command } from "commander";
import type { CliContext } from "./context.js";
import { CliFailure, ExitCode, UsageError } from "./io.js";

/**
 * Exit statuses of `darkbloom verify`: 0 valid and pinned, 1 invalid, 2 the signature is valid but
 * its key is not pinned (anyone can sign a response with a key of their own, so this proves nothing
 * about which provider served it), 64 bad usage.
 */
export const VerifyExit = { valid: 0, invalid: 1, notPinned: 2, usage: ExitCode.usage } as const;

const FETCH_TIMEOUT_MS = 10_000;

/**
 * `verify`: checks a saved response's `darkbloom` object (docs/ARCHITECTURE.md, "Verifiable
 * responses"): everything signed read back from the saved response (choices, indices, model, usage,
 * provider id), the signature, with --request the request hash, and the key pinned, with
 * --coordinator to the one the coordinator publishes for the proof's provider id, or with
 * --signing-key to a key the consumer holds. Prints one line saying which of the VerifyExit cases
 * it is (invalid on stderr, the others on stdout). Reads a non-streaming JSON body, a saved SSE
 * stream, or an embeddings response (its own record: verifiable-embeddings.ts).
 */
export function addVerifyCommand(program: Command, context: CliContext): void {
  program
    .command("verify")
    .description(
      "check the provider signature on a saved response (a completion's JSON body or SSE stream, or an embeddings list)",
    )
    .argument("<saved-response>", "a saved response: the JSON body, or the text/event-stream up to [DONE]")
    .option("--request <file>", "the request body exactly as sent; its hash must match request_sha256")
    .option(
      "--coordinator <url>",
      "pin the key to the one this coordinator publishes for the provider (GET /v1/providers/attestation; use https)",
    )
    .option("--signing-key <base64>", "pin the key to this provider signing key (SEC1, base64)")
    .addHelpText(
      "after",
      "\nExit status: 0 valid and pinned, 1 invalid, 2 signature valid but key not pinned, 64 bad usage.",
    )
    .action(
      async (savedPath: string, opts: { request?: string; coordinator?: string; signingKey?: string }) => {
        if (opts.coordinator !== undefined && opts.signingKey !== undefined) {
          throw new UsageError("pass --coordinator or --signing-key, not both");
        }
        const coordinator = opts.coordinator === undefined ? undefined : baseUrl(opts.coordinator);
        const saved = await readInput(savedPath, "saved response");
        const requestBody = opts.request === undefined ? undefined : await readInput(opts.request, "request");
        const result = verifySaved(saved.toString("utf8"), { requestBody, signingKey: opts.signingKey });
        if (!result.ok) throw new CliFailure(`invalid: ${result.reason}`, VerifyExit.invalid);
        const { proof } = result;
        const request = requestBody === undefined ? "request not checked: pass --request" : "request matches";
        if (result.pinned) {
          context.io.stdout(
            `valid: provider ${proof.provider_id} signed it with the given key; ${request}\n`,
          );
          return;
        }
        if (coordinator === undefined) {
          notPinned(context, proof, "neither --coordinator nor --signing-key was given");
        }
        const published = await publishedKey(context, coordinator, proof.provider_id);
        if (published.kind === "unknown") notPinned(context, proof, published.why);
        if (published.key === null) {
          throw new CliFailure(
            `invalid: the coordinator publishes no signing key for provider ${proof.provider_id}`,
            VerifyExit.invalid,
          );
        }
        if (!isPublishedKey(published.key, proof.signing_key)) {
          throw new CliFailure(
            `invalid: the response is signed with a key that is not the key the coordinator publishes for provider ${proof.provider_id}`,
            VerifyExit.invalid,
          );
        }
        context.io.stdout(
          `valid: provider ${proof.provider_id} (trust ${published.trustLevel}) signed it with the key ` +
            `${coordinator} publishes for it; ${request}\n`,
        );
      },
    );
}

/** A completion (JSON body or SSE stream) or an embeddings list, each checked against its own record. */
function verifySaved(
  text: string,
  options: VerifyOptions,
): { ok: true; pinned: boolean; proof: ResponseProof } | { ok: false; reason: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON: a saved SSE stream, which only completions are.
  }
  return isEmbeddingsResponse(json) ? verifyEmbeddingsResponse(json, options) : verifyResponse(text, options);
}

/** Prints the not-pinned line and exits 2. */
function notPinned(context: CliContext, proof: ResponseProof, why: string): never {
  context.io.stdout(
    `signature valid, key NOT pinned: ${why}; this proves only that whoever holds the key in the ` +
      `response signed it, not that provider ${proof.provider_id} did\n`,
  );
  throw new CliFailure("", VerifyExit.notPinned);
}

/** The key the coordinator publishes now for a provider id (it lists connected providers only). */
async function publishedKey(context: CliContext, base: string, providerId: string): Promise<PublishedKey> {
  const url = `${base}/v1/providers/attestation`;
  let body: unknown;
  try {
    const res = await context.fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (!res.ok) return { kind: "unknown", why: `cannot fetch ${url}: HTTP ${res.status}` };
    body = await res.json();
  } catch (error) {
    return { kind: "unknown", why: `cannot fetch ${url}: ${(error as Error).message}` };
  }
  return readPublishedKey(body, providerId, url);
}

/** The coordinator's base URL, without a trailing slash or /v1 (both are accepted). */
function baseUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--coordinator ${JSON.stringify(raw)} is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError("--coordinator must be an http:// or https:// URL");
  }
  return url.toString().replace(/\/+$/, "").replace(/\/v1$/, "");
}

async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read the ${what} ${path}${code ? ` (${code})` : ""}`);
  }
}
