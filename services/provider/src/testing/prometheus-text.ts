/**
 * A strict reader of the Prometheus text exposition format (version 0.0.4), for tests that scrape a
 * /metrics endpoint: every line must be a HELP, a TYPE or a sample of a family declared before it,
 * names and labels must be well formed, and nothing may be declared twice. It throws on the first
 * line that is not, naming it.
 */

export interface Sample {
  /** The sample's own name (a histogram's `_bucket`, `_sum`, `_count`). */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface MetricFamily {
  name: string;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);
const SUFFIXES: Record<MetricFamily["type"], string[]> = {
  counter: [""],
  gauge: [""],
  untyped: [""],
  histogram: ["_bucket", "_sum", "_count"],
  summary: ["", "_sum", "_count"],
};

export class ExpositionError extends Error {
  override readonly name = "ExpositionError";
}

/** The families of an exposition, by name. */
export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  const helps = new Set<string>();
  const seen = new Set<string>();
  if (text !== "" && !text.endsWith("\n"))
    throw new ExpositionError("the exposition must end with a newline");
  const lines = text.split("\n");
  lines.pop();
  for (const [index, line] of lines.entries()) {
    const fail = (why: string): never => {
      throw new ExpositionError(`line ${index + 1} ${JSON.stringify(line)}: ${why}`);
    };
    if (line.trim() === "") continue;
    if (line.startsWith("#")) {
      const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!meta) continue; // a plain comment
      const [, kind, name = "", rest = ""] = meta;
      if (!NAME.test(name)) fail("bad metric name");
      const family = families.get(name);
      if (kind === "HELP") {
        if (helps.has(name)) fail("a second HELP");
        helps.add(name);
        if (family) family.help = unescapeHelp(rest);
        else families.set(name, { name, type: "untyped", help: unescapeHelp(rest), samples: [] });
      } else {
        if (!TYPES.has(rest)) fail("unknown type");
        if (family && (family.type !== "untyped" || family.samples.length > 0))
          fail("TYPE after samples or twice");
        const type = rest as MetricFamily["type"];
        if (family) family.type = type;
        else families.set(name, { name, type, help: "", samples: [] });
      }
      continue;
    }
    const sample = parseSample(line, fail);
    const family = familyOf(families, sample.name);
    if (!family) fail("a sample of no declared family");
    const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (seen.has(key)) fail("a second sample of the same series");
    seen.add(key);
    family?.samples.push(sample);
  }
  return families;
}

function familyOf(families: Map<string, MetricFamily>, sample: string): MetricFamily | undefined {
  for (const family of families.values()) {
    for (const suffix of SUFFIXES[family.type]) if (sample === family.name + suffix) return family;
  }
  return undefined;
}

function parseSample(line: string, fail: (why: string) => never): Sample {
  const head = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
  if (!head?.[1]) return fail("bad sample name");
  const name = head[1];
  let at = name.length;
  const labels: Record<string, string> = {};
  if (line[at] === "{") {
    at++;
    while (line[at] !== "}") {
      const label = /^([^=]+)="/.exec(line.slice(at));
      if (!label?.[1] || !LABEL.test(label[1])) return fail("bad label");
      at += label[0].length;
      let value = "";
      for (;;) {
        const c = line[at];
        if (c === undefined) return fail("unterminated label value");
        at++;
        if (c === '"') break;
        if (c === "\\") {
          const e = line[at++];
          if (e === "n") value += "\n";
          else if (e === "\\" || e === '"') value += e;
          else return fail("bad escape in a label value");
        } else value += c;
      }
      if (label[1] in labels) return fail("a label given twice");
      labels[label[1]] = value;
      if (line[at] === ",") at++;
      else if (line[at] !== "}") return fail("expected , or } after a label");
    }
    at++;
  }
  const rest = /^ (\S+)(?: (-?\d+))?$/.exec(line.slice(at));
  if (!rest?.[1]) return fail("expected one space and a value");
  // Prometheus reads values with Go's ParseFloat: NaN and Inf in any case (prom-client writes "Nan").
  const text = rest[1].toLowerCase();
  const special: Record<string, number> = {
    nan: Number.NaN,
    "+inf": Number.POSITIVE_INFINITY,
    inf: Number.POSITIVE_INFINITY,
    "-inf": Number.NEGATIVE_INFINITY,
  };
  const value =
    special[text] ?? (/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/.test(text) ? Number(text) : Number.NaN);
  if (Number.isNaN(value) && text !== "nan") return fail("the value is not a number");
  return { name, labels, value };
}

function unescapeHelp(text: string): string {
  return text.replace(/\\(n|\\)/g, (_, e: string) => (e === "n" ? "\n" : "\\"));
}

/** The value of the sample `name` whose labels are exactly `labels`; undefined when there is none. */
export function sampleValue(
  families: Map<string, MetricFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const family = familyOf(families, name);
  const want = JSON.stringify(Object.entries(labels).sort());
  return family?.samples.find(
    (s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want,
  )?.value;
}
