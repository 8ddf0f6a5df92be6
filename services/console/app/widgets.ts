import { h } from "./dom.js";

/** A figure with its label, in a grid of cards (inside a <dl class="cards">). */
export function card(label: string, value: string): HTMLElement {
  return h("div", { class: "card" }, h("dt", {}, label), h("dd", {}, value));
}

/** A column of a table: its heading, and whether it holds numbers (right-aligned). */
export type Column = string | { label: string; numeric: true };

/** A captioned table in a horizontally scrolling wrapper; cells are text or nodes (a button). */
export function dataTable(caption: string, columns: Column[], rows: (string | Node)[][]): HTMLElement {
  const numeric = columns.map((c) => typeof c !== "string");
  const cls = (i: number) => (numeric[i] ? "num" : undefined);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ...columns.map((c, i) =>
            h("th", { scope: "col", class: cls(i) }, typeof c === "string" ? c : c.label),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        ...rows.map((r) => h("tr", {}, ...r.map((cell, i) => h("td", { class: cls(i) }, cell)))),
      ),
    ),
  );
}

/**
 * A button that asks `question` first, then runs `act` (disabled meanwhile) and shows the view
 * again with `reload`; when the action fails, the reason goes at the top of `main` as an alert and
 * the button can be pressed again.
 */
export function confirmedAction(
  main: HTMLElement,
  button: HTMLButtonElement,
  question: () => string,
  act: () => Promise<unknown>,
  reload: () => Promise<void>,
): HTMLButtonElement {
  button.addEventListener("click", () => {
    if (!window.confirm(question())) return;
    button.disabled = true;
    act().then(reload, (error: unknown) => {
      button.disabled = false;
      main.prepend(
        h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : "It failed."),
      );
    });
  });
  return button;
}
