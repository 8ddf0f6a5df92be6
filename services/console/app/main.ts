import { ApiError } from "./api.js";
import { h, replace } from "./dom.js";
import { apiKey, signOut } from "./session.js";
import { overviewView } from "./views/overview.js";
import { signInView } from "./views/sign-in.js";

/**
 * The console's shell: signed out it shows the sign-in form, signed in the account overview, with a
 * sign-out button in the navigation. Focus moves to the main region on each view, so keyboard and
 * screen-reader users land on what changed.
 */
const main = document.getElementById("main") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;

function render(): void {
  if (apiKey() === undefined) {
    replace(nav);
    signInView(main, render);
    return;
  }
  const out = h("button", { type: "button", class: "quiet" }, "Sign out");
  out.addEventListener("click", () => {
    signOut();
    render();
  });
  replace(nav, out);
  overviewView(main).then(
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
        h("h1", {}, "Account"),
        h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : "Loading failed."),
      );
    },
  );
}

render();
