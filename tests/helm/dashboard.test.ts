// The Grafana dashboard the chart ships (charts/darkbloom/dashboards): every query parsed by
// Prometheus' own PromQL grammar (@prometheus-io/lezer-promql), and every metric, label matcher,
// grouping label and legend label in it checked against what the coordinator and the operator export.
// A renamed metric or label fails here instead of leaving an empty panel in production.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CoordinatorMetrics } from "@darkbloom/coordinator";
import { OperatorMetrics } from "@darkbloom/operator";
import { parser } from "@prometheus-io/lezer-promql";
import type { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { CHART, type Json } from "./helm.js";

const DASHBOARD: Json = JSON.parse(readFileSync(join(CHART, "dashboards/darkbloom-fleet.json"), "utf8"));

/** Labels Prometheus adds to every series a ServiceMonitor scrapes. */
const TARGET_LABELS = new Set(["namespace", "pod", "job", "instance", "service", "container", "endpoint"]);

interface Family {
  labels: Set<string>;
  /** The family's own name (a histogram's series carry suffixes). */
  family: string;
}

/** Every series name the two components export, with its labels (histograms: _bucket/_sum/_count). */
function exported(): Map<string, Family> {
  const registries: Registry[] = [
    new CoordinatorMetrics({ defaultMetrics: false }).registry,
    new OperatorMetrics().registry,
  ];
  const out = new Map<string, Family>();
  for (const registry of registries) {
    for (const metric of registry.getMetricsAsArray()) {
      const m = metric as unknown as { name: string; labelNames?: string[]; constructor: { name: string } };
      const labels = new Set(m.labelNames ?? []);
      if (m.constructor.name === "Histogram") {
        out.set(`${m.name}_bucket`, { labels: new Set([...labels, "le"]), family: m.name });
        out.set(`${m.name}_sum`, { labels, family: m.name });
        out.set(`${m.name}_count`, { labels, family: m.name });
      } else out.set(m.name, { labels, family: m.name });
    }
  }
  return out;
}

interface Query {
  where: string;
  expr: string;
  legend?: string;
}

function queries(): Query[] {
  const out: Query[] = [];
  for (const panel of DASHBOARD.panels as Json[]) {
    for (const t of (panel.targets ?? []) as Json[]) {
      out.push({ where: `panel "${panel.title}" ${t.refId}`, expr: t.expr, legend: t.legendFormat });
    }
  }
  for (const v of DASHBOARD.templating.list as Json[]) {
    if (v.type !== "query") continue;
    const m = /^label_values\((.*),\s*(\w+)\)$/.exec(v.query.query);
    if (!m?.[1] || !m[2]) throw new Error(`variable ${v.name}: not a label_values() query`);
    out.push({ where: `variable ${v.name}`, expr: `sum by (${m[2]}) (${m[1]})` });
  }
  return out;
}

/** Grafana's variables, replaced by values PromQL accepts where they stand. */
function substitute(expr: string): string {
  return expr.replaceAll("$__rate_interval", "5m").replaceAll("$__interval", "1m");
}

/** Problems of one query; empty when every name in it is exported. */
function problems(q: Query, families: Map<string, Family>): string[] {
  const text = substitute(q.expr);
  const tree = parser.parse(text);
  const found: string[] = [];
  const at = (from: number, to: number) => text.slice(from, to);
  /** The labels a subtree's series carry: its selectors' labels and the target labels. */
  const labelsUnder = (from: number, to: number): Set<string> => {
    const labels = new Set(TARGET_LABELS);
    tree.iterate({
      from,
      to,
      enter: (n) => {
        if (n.name === "VectorSelector" && n.from >= from && n.to <= to) {
          const name = n.node.getChild("Identifier");
          const family = name ? families.get(at(name.from, name.to)) : undefined;
          for (const l of family?.labels ?? []) labels.add(l);
        }
      },
    });
    return labels;
  };
  let outerGrouping: string[] | undefined;
  tree.iterate({
    enter: (n) => {
      if (n.type.isError)
        found.push(`${q.where}: PromQL syntax error at ${n.from}: ${text.slice(n.from, n.from + 20)}`);
      if (n.name === "VectorSelector") {
        const id = n.node.getChild("Identifier");
        const name = id ? at(id.from, id.to) : "";
        const family = families.get(name);
        if (!family) {
          found.push(`${q.where}: metric ${name || "(none)"} is not exported`);
          return;
        }
        const matchers = n.node.getChild("LabelMatchers");
        for (const matcher of matchers?.getChildren("UnquotedLabelMatcher") ?? []) {
          const label = matcher.getChild("LabelName");
          const l = label ? at(label.from, label.to) : "";
          if (!family.labels.has(l) && !TARGET_LABELS.has(l)) {
            found.push(`${q.where}: ${name} has no label ${l}`);
          }
        }
      }
      if (n.name === "AggregateExpr") {
        const modifier = n.node.getChild("AggregateModifier");
        const grouping = modifier?.getChild("GroupingLabels");
        if (!modifier || !grouping) return;
        const labels = grouping.getChildren("LabelName").map((l) => at(l.from, l.to));
        const available = labelsUnder(n.from, n.to);
        for (const l of labels)
          if (!available.has(l)) found.push(`${q.where}: grouping by ${l}, which no series has`);
        // The legend names the outermost aggregation's labels (a histogram quantile consumes `le`).
        if (outerGrouping === undefined && modifier.getChild("By"))
          outerGrouping = labels.filter((l) => l !== "le");
      }
    },
  });
  for (const [, label] of (q.legend ?? "").matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
    if (!outerGrouping?.includes(label as string)) {
      found.push(`${q.where}: legend {{${label}}} is not a label the query keeps`);
    }
  }
  return found;
}

describe("the Grafana dashboard", () => {
  const families = exported();

  it("queries only metrics and labels the coordinator and the operator export", () => {
    const all = queries();
    expect(all.length).toBeGreaterThan(25);
    expect(all.flatMap((q) => problems(q, families))).toEqual([]);
  });

  it("shows every darkbloom metric family at least once", () => {
    const used = new Set<string>();
    for (const q of queries()) {
      for (const m of substitute(q.expr).matchAll(/\bdarkbloom_\w+/g)) {
        const family = families.get(m[0]);
        if (family) used.add(family.family);
      }
    }
    const everyFamily = new Set([...families.values()].map((f) => f.family));
    expect([...everyFamily].filter((f) => !used.has(f))).toEqual([]);
  });

  it("finds the mistakes it is there to find", () => {
    const q = (expr: string, legend?: string) => problems({ where: "q", expr, legend }, families);
    expect(q("sum by (model) (rate(darkbloom_completion_tokens_total[5m]))", "{{model}}")).toEqual([]);
    expect(q("rate(darkbloom_no_such_metric_total[5m])")).toEqual([
      "q: metric darkbloom_no_such_metric_total is not exported",
    ]);
    expect(q('darkbloom_queue_depth{modle="a"}')).toEqual(["q: darkbloom_queue_depth has no label modle"]);
    expect(q("sum by (status) (darkbloom_queue_depth)")).toEqual([
      "q: grouping by status, which no series has",
    ]);
    expect(q("sum by (model) (darkbloom_queue_depth)", "{{status}}")).toEqual([
      "q: legend {{status}} is not a label the query keeps",
    ]);
    expect(q("sum by (model (darkbloom_queue_depth)").some((p) => p.includes("syntax error"))).toBe(true);
  });

  it("is a well-formed Grafana dashboard: unique ids, panels inside the 24-column grid and not overlapping", () => {
    expect(DASHBOARD.uid).toMatch(/^[a-z0-9-]{1,40}$/);
    const panels = DASHBOARD.panels as Json[];
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    const cells = new Set<string>();
    for (const p of panels) {
      const { x, y, w, h } = p.gridPos;
      expect(x + w, p.title).toBeLessThanOrEqual(24);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          const cell = `${i},${j}`;
          expect(cells.has(cell), `${p.title} overlaps at ${cell}`).toBe(false);
          cells.add(cell);
        }
      }
      if (p.type !== "row") expect(p.datasource.uid, p.title).toBe(["$", "{datasource}"].join("")); // Grafana's variable, literally
    }
  });
});
