import { ApiError } from "./api.js";
import { h, replace } from "./dom.js";
import { apiKey, keyKind, signOut } from "./session.js";
import { accountsView } from "./views/accounts.js";
import { keysView } from "./views/keys.js";
import { fleetView, ledgerView, modelsView } from "./views/operator.js";
import { overviewView } from "./views/overview.js";
import { playgroundView } from "./views/playground.js";
import { providerView } from "./views/provider.js";
import { releasesView } from "./views/releases.js";
import { signInView } from "./views/sign-in.js";

/**
 * The console's shell: signed out it shows the sign-in form; signed in, the view the address's
 * fragment names among the key's (an account's, or the operator's with the admin key), with the
 * navigation and a sign-out button. Focus moves to
 * the main region on each view, so keyboard and screen-reader users land on what changed.
 */
const main = document.getElementById("main") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;

type Views = Record<string, { title: string; show: (main: HTMLElement) => Promise<void> }>;

/** What an account's API key sees: its own money, keys and machines. */
const ACCOUNT: Views = {
  "#/": { title: "Account", show: overviewView },
  "#/playground": { title: "Playground", show: playgroundView },
  "#/keys": { title: "API keys", show: keysView },
  "#/provider": { title: "Providing", show: providerView },
};

/** What the admin key sees: the network. */
const OPERATOR: Views = {
  "#/": { title: "Fleet", show: fleetView },
  "#/models": { title: "Models", show: modelsView },
  "#/releases": { title: "Releases", show: releasesView },
  "#/accounts": { title: "Accounts", show: accountsView },
  "#/ledger": { title: "Ledger", show: ledgerView },
};

function render(): void {
  if (apiKey() === undefined) {
    replace(nav);
    signInView(main, render);
    return;
  }
  const views = keyKind() === "admin" ? OPERATOR : ACCOUNT;
  const route = location.hash in views ? location.hash : "#/";
  const view = views[route] as Views[string];
  const out = h("button", { type: "button", class: "quiet" }, "Sign out");
  out.addEventListener("click", () => {
    signOut();
    render();
  });
  replace(
    nav,
    ...Object.entries(views).map(([hash, v]) =>
      h("a", { href: hash, "aria-current": hash === route ? "page" : undefined }, v.title),
    ),
    out,
  );
  document.title = `${view.title} · Darkbloom console`;
  view.show(main).then(
    () => main.focus(),
    (error: unknown) => {
      // A key revoked meanwhile: back to signing in.
      if (error instanceof ApiError && error.status === 401) {
        signOut();
        render();
        return;
      }
      replace(
        main,
        h("h1", {}, view.title),
        h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : "Loading failed."),
      );
    },
  );
}

window.addEventListener("hashchange", render);
render();
