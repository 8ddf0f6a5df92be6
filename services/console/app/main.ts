import { ApiError } from "./api.js";
import { h, replace } from "./dom.js";
import { apiKey, signOut } from "./session.js";
import { keysView } from "./views/keys.js";
import { overviewView } from "./views/overview.js";
import { providerView } from "./views/provider.js";
import { signInView } from "./views/sign-in.js";

/**
 * The console's shell: signed out it shows the sign-in form; signed in, the view the address's
 * fragment names (#/keys, #/provider, or the account), with the navigation and a sign-out button. Focus moves to
 * the main region on each view, so keyboard and screen-reader users land on what changed.
 */
const main = document.getElementById("main") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;

const VIEWS: Record<string, { title: string; show: (main: HTMLElement) => Promise<void> }> = {
  "#/": { title: "Account", show: overviewView },
  "#/keys": { title: "API keys", show: keysView },
  "#/provider": { title: "Providing", show: providerView },
};

function render(): void {
  if (apiKey() === undefined) {
    replace(nav);
    signInView(main, render);
    return;
  }
  const route = location.hash in VIEWS ? location.hash : "#/";
  const view = VIEWS[route] as (typeof VIEWS)[string];
  const out = h("button", { type: "button", class: "quiet" }, "Sign out");
  out.addEventListener("click", () => {
    signOut();
    render();
  });
  replace(
    nav,
    ...Object.entries(VIEWS).map(([hash, v]) =>
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
