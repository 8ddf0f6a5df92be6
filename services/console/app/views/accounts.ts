import type { AccountJson } from "@darkbloom/protocol/admin/v1";
import { admin } from "../api.js";
import { h, replace } from "../dom.js";
import { usd } from "../format.js";
import { dataTable } from "../widgets.js";

type Account = AccountJson;

const PAGE = 100;
/** The largest credit the form takes at once, in dollars (a typo guard, not a policy). */
const MAX_CREDIT_USD = 1_000_000;

/**
 * The accounts and their balances (a page at a time), and crediting one: the credit goes through
 * the ledger with an idempotency key made when the form is shown, so a double submit or a retry
 * after a lost answer credits once.
 */
export async function accountsView(main: HTMLElement): Promise<void> {
  replace(main, h("h1", {}, "Accounts"), h("p", { role: "status" }, "Loading…"));
  const accounts: Account[] = [];
  const first = await admin("listAccounts", {
    pageSize: PAGE,
  });
  accounts.push(...(first.accounts ?? []));
  const list = h("div", { id: "accounts" });
  const more = h("button", { type: "button", class: "quiet" }, "Show more accounts");
  let token = first.nextPageToken ?? "";
  const show = () => {
    replace(list, table(accounts), token ? more : null);
  };
  more.addEventListener("click", () => {
    more.disabled = true;
    admin("listAccounts", {
      pageSize: PAGE,
      pageToken: token,
    }).then(
      (page) => {
        accounts.push(...(page.accounts ?? []));
        token = page.nextPageToken ?? "";
        more.disabled = false;
        show();
      },
      () => {
        more.disabled = false;
      },
    );
  });
  show();
  replace(main, h("h1", {}, "Accounts"), creditForm(main, accounts), h("h2", {}, "Accounts"), list);
}

function table(accounts: Account[]): HTMLElement {
  if (accounts.length === 0) return h("p", {}, "No accounts.");
  return dataTable(
    "Oldest first.",
    ["Account", "Name", { label: "Balance", numeric: true }, "Created", "State"],
    accounts.map((a) => [
      h("code", {}, a.id),
      a.name ?? "",
      usd(Number(a.balanceMicroUsd ?? 0)),
      a.createdAt ? new Date(a.createdAt).toLocaleString("en-US") : "",
      a.disabled ? "disabled" : "active",
    ]),
  );
}

function creditForm(main: HTMLElement, accounts: Account[]): HTMLElement {
  const account = h("input", {
    id: "credit-account",
    name: "credit-account",
    type: "text",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    list: "account-ids",
  });
  const ids = h(
    "datalist",
    { id: "account-ids" },
    ...accounts.map((a) => h("option", { value: a.id }, a.name ?? "")),
  );
  const amount = h("input", {
    id: "credit-amount",
    name: "credit-amount",
    type: "text",
    inputmode: "decimal",
    required: true,
    autocomplete: "off",
    "aria-describedby": "credit-amount-hint",
  });
  const note = h("input", { id: "credit-note", name: "credit-note", type: "text", maxlength: "200" });
  const status = h("p", { id: "credit-status", role: "status", "aria-live": "polite" });
  const submit = h("button", { type: "submit" }, "Credit");
  let idempotencyKey = crypto.randomUUID();
  const form = h(
    "form",
    { "aria-labelledby": "credit-title" },
    h("h2", { id: "credit-title" }, "Credit an account"),
    h("div", { class: "row" }, h("label", { for: "credit-account" }, "Account id"), account, ids),
    h(
      "div",
      { class: "row" },
      h("label", { for: "credit-amount" }, "Amount (USD)"),
      amount,
      h("p", { id: "credit-amount-hint", class: "hint" }, "Dollars, up to six decimals: 25 or 0.000125."),
    ),
    h("div", { class: "row" }, h("label", { for: "credit-note" }, "Note for the ledger"), note),
    submit,
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const micro = microUsd(amount.value);
    if (micro === undefined) {
      status.className = "error";
      replace(
        status,
        `The amount must be more than $0 and at most $${MAX_CREDIT_USD.toLocaleString("en-US")}.`,
      );
      amount.focus();
      return;
    }
    submit.disabled = true;
    admin("creditAccount", {
      accountId: account.value.trim(),
      amountMicroUsd: String(micro),
      idempotencyKey,
      note: note.value.trim(),
    }).then(
      (answer) => {
        idempotencyKey = crypto.randomUUID();
        const balance = usd(Number(answer.account?.balanceMicroUsd ?? 0));
        const done = answer.applied === false ? "Already credited (the same submission)." : "Credited.";
        accountsView(main).then(() => {
          const shown = document.getElementById("credit-status");
          if (shown) replace(shown, `${done} ${answer.account?.id ?? ""} now holds ${balance}.`);
        });
      },
      (error: unknown) => {
        submit.disabled = false;
        status.className = "error";
        replace(status, error instanceof Error ? error.message : "It failed.");
      },
    );
  });
  return form;
}

/** Dollars typed as "25", "25.5" or "0.000125" as micro-dollars; undefined unless in (0, MAX]. */
function microUsd(text: string): number | undefined {
  const match = /^\s*\$?(\d{1,7})(?:\.(\d{1,6}))?\s*$/.exec(text);
  if (!match) return undefined;
  const micro = Number(match[1]) * 1_000_000 + Number((match[2] ?? "").padEnd(6, "0"));
  return micro > 0 && micro <= MAX_CREDIT_USD * 1_000_000 ? micro : undefined;
}
