import { ApiError, admin, getJson } from "../api.js";
import { h, replace } from "../dom.js";
import { type KeyKind, signIn } from "../session.js";

/**
 * What the key is: an account's API key (GET /v1/account accepts it), else the admin key (the admin
 * service accepts it); any other key is refused with the 401.
 */
async function kindOf(key: string): Promise<KeyKind> {
  try {
    await getJson("/v1/account", key);
    return "account";
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    await admin("listModels", {}, key);
    return "admin";
  }
}

/** The sign-in form: an API key, checked against the coordinator before it is kept. */
export function signInView(main: HTMLElement, done: () => void): void {
  const input = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "api-key-hint",
  });
  const status = h("p", { id: "sign-in-status", role: "status", "aria-live": "polite" });
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { "aria-labelledby": "sign-in-title" },
    h(
      "div",
      { class: "row" },
      h("label", { for: "api-key" }, "API key"),
      input,
      h(
        "p",
        { id: "api-key-hint", class: "hint" },
        "An account's API key, or the coordinator's admin key. Kept in this tab only, and sent to this coordinator only. Closing the tab signs you out.",
      ),
    ),
    submit,
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (key === "") return;
    submit.disabled = true;
    replace(status, "Checking…");
    status.className = "";
    kindOf(key).then(
      (kind) => {
        signIn(key, kind);
        input.value = "";
        done();
      },
      (error: unknown) => {
        submit.disabled = false;
        status.className = "error";
        replace(
          status,
          error instanceof ApiError && error.status === 401
            ? "That API key was not accepted."
            : error instanceof Error
              ? error.message
              : "Signing in failed.",
        );
        input.focus();
      },
    );
  });
  replace(main, h("h1", { id: "sign-in-title" }, "Sign in"), form);
  input.focus();
}
