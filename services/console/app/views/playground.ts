import {
  isPublishedKey,
  type PublishedKey,
  readPublishedKey,
  sseData,
  type VerifyResult,
  verifyResponseWeb,
} from "@darkbloom/protocol/web-verify";
import { getJson, openStream } from "../api.js";
import { h, replace } from "../dom.js";
import { count } from "../format.js";

interface Model {
  id: string;
}

/** The most a playground answer may cost in tokens (the consumer can ask for fewer). */
const MAX_TOKENS_LIMIT = 4096;

/**
 * Try a model: a streamed chat whose answer is then checked here, in the browser, exactly as
 * `darkbloom verify --coordinator` checks a saved response (the same code: @darkbloom/protocol's
 * portable verifier, with WebCrypto): the record rebuilt from the stream as received, the request
 * hash from the body as sent, and the signing key pinned to the one this coordinator publishes for
 * the provider that answered (GET /v1/providers/attestation), whose trust level is shown with it.
 */
export async function playgroundView(main: HTMLElement): Promise<void> {
  replace(main, h("h1", {}, "Playground"), h("p", { role: "status" }, "Loading…"));
  const { data } = await getJson<{ data: Model[] }>("/v1/models");
  if (data.length === 0) {
    replace(main, h("h1", {}, "Playground"), h("p", {}, "No model is being served right now."));
    return;
  }
  const model = h(
    "select",
    { id: "model", name: "model" },
    ...data.map((m) => h("option", { value: m.id }, m.id)),
  );
  const prompt = h("textarea", { id: "prompt", name: "prompt", rows: "4", required: true });
  const maxTokens = h("input", {
    id: "max-tokens",
    name: "max-tokens",
    type: "number",
    min: "1",
    max: String(MAX_TOKENS_LIMIT),
    value: "128",
    inputmode: "numeric",
  });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", class: "quiet", disabled: true }, "Stop");
  const answer = h("div", { id: "answer", class: "answer", "aria-live": "off" });
  const status = h("p", { id: "chat-status", role: "status" });
  const verdict = h("div", { id: "verdict", "aria-live": "polite" });
  // Checked here rather than by the browser, so the reason is in the status line like every other.
  const form = h(
    "form",
    { "aria-labelledby": "playground-title", novalidate: true },
    h("div", { class: "row" }, h("label", { for: "model" }, "Model"), model),
    h("div", { class: "row" }, h("label", { for: "prompt" }, "Message"), prompt),
    h("div", { class: "row" }, h("label", { for: "max-tokens" }, "Most tokens in the answer"), maxTokens),
    send,
    " ",
    stop,
  );
  let running: AbortController | undefined;
  stop.addEventListener("click", () => running?.abort());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const tokens = Number(maxTokens.value);
    if (!Number.isInteger(tokens) || tokens < 1 || tokens > MAX_TOKENS_LIMIT) {
      fail(status, `Most tokens must be a whole number from 1 to ${MAX_TOKENS_LIMIT}.`);
      maxTokens.focus();
      return;
    }
    if (prompt.value.trim() === "") return;
    running = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    replace(answer);
    replace(verdict);
    const body = JSON.stringify({
      model: model.value,
      messages: [{ role: "user", content: prompt.value }],
      max_tokens: tokens,
      stream: true,
      stream_options: { include_usage: true },
    });
    chat(body, answer, status, verdict, running.signal).finally(() => {
      send.disabled = false;
      stop.disabled = true;
      running = undefined;
    });
  });
  replace(main, h("h1", { id: "playground-title" }, "Playground"), form, status, answer, verdict);
}

/** Streams one chat into `answer`, then verifies what arrived. */
async function chat(
  body: string,
  answer: HTMLElement,
  status: HTMLElement,
  verdict: HTMLElement,
  signal: AbortSignal,
): Promise<void> {
  status.className = "";
  replace(status, "Waiting for a provider…");
  answer.setAttribute("aria-busy", "true");
  let transcript = "";
  let shown = 0;
  try {
    // (The request goes out on the first read: its refusal is thrown in the loop.)
    const stream = openStream("/v1/chat/completions", body, signal);
    const decoder = new TextDecoder();
    for await (const bytes of stream) {
      transcript += decoder.decode(bytes, { stream: true });
      // Complete events only: the text up to the last blank line.
      const end = transcript.lastIndexOf("\n\n");
      if (end < shown) continue;
      for (const data of sseData(transcript.slice(shown, end))) showEvent(data, answer, status);
      shown = end + 2;
    }
    transcript += decoder.decode();
  } catch (error) {
    answer.removeAttribute("aria-busy");
    if (signal.aborted) fail(status, "Stopped: a stopped answer is not signed, so it cannot be verified.");
    else fail(status, error instanceof Error ? error.message : "The request failed.");
    return;
  }
  answer.removeAttribute("aria-busy");
  if (status.className === "error") return;
  replace(status, "Answered. Verifying…");
  const result = await verify(transcript, body).catch(
    (error: unknown): Verdict => ({
      kind: "invalid",
      reason: `the check could not run: ${error instanceof Error ? error.message : String(error)}`,
    }),
  );
  replace(status, "Answered.");
  showVerdict(verdict, result);
}

/** Shows one event of the stream: its content, its usage; an error event ends it. */
function showEvent(data: string, answer: HTMLElement, status: HTMLElement): void {
  if (data === "[DONE]") return;
  let event: {
    choices?: { delta?: { content?: string | null } }[];
    usage?: { prompt_tokens: number; completion_tokens: number } | null;
    error?: { message?: string };
  };
  try {
    event = JSON.parse(data);
  } catch {
    fail(status, "The stream carried an event that is not JSON.");
    return;
  }
  if (event.error) {
    fail(status, event.error.message ?? "The request failed.");
    return;
  }
  const text = event.choices?.[0]?.delta?.content;
  if (text) answer.append(text);
  if (event.usage) {
    replace(
      status,
      `Streaming… ${count(event.usage.prompt_tokens)} prompt and ${count(event.usage.completion_tokens)} answer tokens.`,
    );
  } else if (text) replace(status, "Streaming…");
}

type Verdict =
  | { kind: "verified"; result: Extract<VerifyResult, { ok: true }>; trust: string }
  | { kind: "not-pinned"; why: string }
  | { kind: "invalid"; reason: string };

/**
 * `darkbloom verify --coordinator <this origin> --request <body>` on the stream as received: the
 * key pinned to the one published for the provider that signed, or no better than "not pinned".
 */
async function verify(transcript: string, requestBody: string): Promise<Verdict> {
  // WebCrypto exists only in a secure context (https, or this machine itself).
  if (!window.isSecureContext || crypto.subtle === undefined) {
    return {
      kind: "invalid",
      reason:
        "this page is not served over https, and browsers give WebCrypto only to secure pages: " +
        "save the stream and run darkbloom verify instead",
    };
  }
  const unpinned = await verifyResponseWeb(transcript, { requestBody }, crypto.subtle);
  if (!unpinned.ok) return { kind: "invalid", reason: unpinned.reason };
  const published = await publishedKey(unpinned.proof.provider_id);
  if (published.kind === "unknown") return { kind: "not-pinned", why: published.why };
  if (published.key === null) {
    return {
      kind: "invalid",
      reason: `the coordinator publishes no signing key for provider ${unpinned.proof.provider_id}`,
    };
  }
  // The signature already holds: what is left is whether its key is the published one.
  if (!isPublishedKey(published.key, unpinned.proof.signing_key)) {
    return {
      kind: "invalid",
      reason: `the response is signed with a key that is not the key the coordinator publishes for provider ${unpinned.proof.provider_id}`,
    };
  }
  return { kind: "verified", result: unpinned, trust: published.trustLevel };
}

async function publishedKey(providerId: string): Promise<PublishedKey> {
  const url = `${location.origin}/v1/providers/attestation`;
  try {
    return readPublishedKey(await getJson<unknown>("/v1/providers/attestation"), providerId, url);
  } catch (error) {
    return { kind: "unknown", why: `cannot fetch ${url}: ${(error as Error).message}` };
  }
}

function showVerdict(verdict: HTMLElement, v: Verdict): void {
  if (v.kind === "verified") {
    const { proof } = v.result;
    replace(
      verdict,
      h("h2", {}, "Verified"),
      h(
        "p",
        { class: "verified" },
        `Provider ${proof.provider_id} (trust ${v.trust}) signed this answer with the key this ` +
          "coordinator publishes for it, for exactly the request sent.",
      ),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Trust level"),
        h("dd", { id: "verdict-trust" }, v.trust),
        h("dt", {}, "Tokens signed"),
        h(
          "dd",
          {},
          `${count(proof.usage.prompt_tokens)} prompt, ${count(proof.usage.completion_tokens)} answer`,
        ),
        h("dt", {}, "Request SHA-256"),
        h("dd", {}, h("code", {}, proof.request_sha256)),
        h("dt", {}, "Response SHA-256"),
        h("dd", {}, h("code", {}, proof.response_sha256)),
      ),
    );
    return;
  }
  if (v.kind === "not-pinned") {
    replace(
      verdict,
      h("h2", {}, "Signature valid, key not pinned"),
      h(
        "p",
        { class: "error" },
        `${v.why}: this proves only that whoever holds the key in the answer signed it.`,
      ),
    );
    return;
  }
  replace(verdict, h("h2", {}, "Not verified"), h("p", { class: "error", role: "alert" }, v.reason));
}

function fail(status: HTMLElement, message: string): void {
  status.className = "error";
  replace(status, message);
}
