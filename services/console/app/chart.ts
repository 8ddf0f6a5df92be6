import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | number>,
  text?: string,
): SVGElementTagNameMap[K] {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/**
 * A bar chart of labelled values, drawn as SVG (no library, no inline style: the stylesheet colours
 * it), with the same figures in a table that screen readers read instead of the picture.
 */
export function barChart(title: string, bars: { label: string; value: number }[], unit: string): HTMLElement {
  const width = 640;
  const height = 200;
  const bottom = 24;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const slot = width / Math.max(1, bars.length);
  const picture = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", "aria-hidden": "true" });
  picture.appendChild(svg("line", { x1: 0, y1: height - bottom, x2: width, y2: height - bottom }));
  for (const [i, bar] of bars.entries()) {
    const barHeight = ((height - bottom - 8) * bar.value) / max;
    const x = i * slot + slot * 0.15;
    const rect = svg("rect", {
      class: "bar",
      x,
      y: height - bottom - barHeight,
      width: slot * 0.7,
      height: barHeight,
    });
    rect.appendChild(svg("title", {}, `${bar.label}: ${bar.value.toLocaleString("en-US")} ${unit}`));
    picture.appendChild(rect);
    picture.appendChild(
      svg("text", { x: x + slot * 0.35, y: height - 8, "text-anchor": "middle" }, bar.label),
    );
  }
  const table = h(
    "table",
    { class: "visually-hidden" },
    h("caption", {}, title),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Label"), h("th", { scope: "col" }, unit))),
    h(
      "tbody",
      {},
      ...bars.map((b) => h("tr", {}, h("td", {}, b.label), h("td", {}, b.value.toLocaleString("en-US")))),
    ),
  );
  return h("figure", {}, picture, table, h("figcaption", {}, title));
}
