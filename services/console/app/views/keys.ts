import { ApiError, getJson, postJson } from "../api.js";
import { h, replace } from "../dom.js";
import { when } from "../format.js";
import { signOut } from "../session.js";
import { dataTable } from "../widgets.js";

interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  created_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

/**
 * The account's API keys: create one (its secret shown this once, in the page only), list them
 * (their first characters, never a secret), revoke one after a confirmation.
 */
export async function keysView(main: HTMLElement): Promise<void> {
  replace(main, h("h1", {}, "API keys"), h("p", { role: "status" }, "Loading…"));
  const { data } = await getJson<{ data: ApiKey[] }>("/v1/account/keys");
  const created = h("div", { id: "created-key", "aria-live": "polite" });
  const name = h("input", {
    id: "key-name",
    name: "key-name",
    type: "text",
    maxlength: "100",
    autocomplete: "off",
  });
  const submit = h("button", { type: "submit" }, "Create key");
  const form = h(
    "form",
    { "aria-labelledby": "create-title" },
    h("h2", { id: "create-title" }, "Create a key"),
    h("div", { class: "row" }, h("label", { for: "key-name" }, "Name (optional)"), name),
    submit,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit.disabled = true;
    postJson<ApiKey & { key: string }>("/v1/account/keys", { name: name.value.trim() }).then(
      (issued) => {
        keysView(main).then(() => {
          const shown = document.getElementById("created-key");
          if (!shown) return;
          replace(
            shown,
            h("h2", {}, "New key"),
            h("p", {}, "Copy it now: it is shown this once and cannot be shown again."),
            h("input", {
              id: "new-key",
              type: "text",
              readonly: true,
              value: issued.key,
              "aria-label": "New API key",
            }),
          );
          (document.getElementById("new-key") as HTMLInputElement | null)?.select();
        }, showError(main));
      },
      (error: unknown) => {
        submit.disabled = false;
        showError(main)(error);
      },
    );
  });
  replace(main, h("h1", {}, "API keys"), created, form, h("h2", {}, "Keys"), table(main, data));
}

function table(main: HTMLElement, keys: ApiKey[]): HTMLElement {
  if (keys.length === 0) return h("p", {}, "No keys.");
  return dataTable(
    "Newest first. A revoked key stops working at once.",
    ["Name", "Key", "Created", "Last used", "State"],
    keys.map((k) => [
      k.name || "—",
      h("code", {}, `${k.prefix}…`),
      when(k.created_at),
      k.last_used_at === null ? "never" : when(k.last_used_at),
      k.revoked_at === null ? revokeButton(main, k) : `revoked ${when(k.revoked_at)}`,
    ]),
  );
}

function revokeButton(main: HTMLElement, key: ApiKey): HTMLElement {
  const label = key.name ? `${key.name} (${key.prefix}…)` : `${key.prefix}…`;
  const button = h("button", { type: "button", class: "quiet", "aria-label": `Revoke ${label}` }, "Revoke");
  button.addEventListener("click", () => {
    if (!window.confirm(`Revoke ${label}? Requests made with it stop working at once.`)) return;
    button.disabled = true;
    postJson("/v1/account/keys/revoke", { id: key.id }).then(() => keysView(main), showError(main));
  });
  return button;
}

function showError(main: HTMLElement): (error: unknown) => void {
  return (error) => {
    if (error instanceof ApiError && error.status === 401) {
      // The key this tab signed in with was revoked (here or elsewhere): back to signing in.
      signOut();
      window.dispatchEvent(new HashChangeEvent("hashchange"));
      return;
    }
    const alert = h(
      "p",
      { class: "error", role: "alert" },
      error instanceof Error ? error.message : "It failed.",
    );
    main.prepend(alert);
  };
}
