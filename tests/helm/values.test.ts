// The chart's values, their documentation and their schema agree: every key of values.yaml has a
// "# --" comment, README.md's values table is generated from them (UPDATE_CHART_README=1 rewrites
// it), values.schema.json describes exactly those keys, refuses unknown ones at every level it
// defines, and is what operator/src/api/write-crds.ts generates: values.schema.base.json with
// coordinator.config checked by the Coordinator CRD's own schema for spec.config.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { renderValuesSchema, VALUES_SCHEMA_BASE } from "@darkbloom/operator";
import { describe, expect, it } from "vitest";
import { isMap, type Pair, parseDocument, type YAMLMap } from "yaml";
import { CHART, type Json } from "./helm.js";

interface Row {
  key: string;
  value: unknown;
  description: string | undefined;
}

/** The text of a "# -- ..." comment (what precedes it in the same comment block is a heading). */
function docComment(comment: string | null | undefined): string | undefined {
  const lines = (comment ?? "").split("\n");
  const start = lines.findLastIndex((line) => line.trimStart().startsWith("-- "));
  if (start < 0) return undefined;
  return lines
    .slice(start)
    .map((line, i) => (i === 0 ? line.trimStart().slice(3) : line.trim()))
    .join(" ")
    .trim();
}

/**
 * One row per documented value: a key whose map has no documented keys of its own is a value (its
 * default shown whole), the others are sections. The first key's comment sits on its map in `yaml`.
 */
function rows(map: YAMLMap, prefix = ""): Row[] {
  return map.items.flatMap((pair: Pair, index: number) => {
    const key = `${prefix}${String((pair.key as { value: unknown }).value)}`;
    const description = docComment(
      (pair.key as { commentBefore?: string }).commentBefore ?? (index === 0 ? map.commentBefore : undefined),
    );
    const value = pair.value;
    if (isMap(value) && value.items.length > 0) {
      const children = rows(value, `${key}.`);
      if (children.some((row) => row.description !== undefined)) return children;
    }
    return [{ key, value: (value as { toJSON(): unknown } | null)?.toJSON() ?? null, description }];
  });
}

async function valueRows(): Promise<Row[]> {
  const doc = parseDocument(await readFile(join(CHART, "values.yaml"), "utf8"));
  if (!isMap(doc.contents)) throw new Error("values.yaml is not a map");
  return rows(doc.contents);
}

function table(all: Row[]): string {
  const cell = (text: string) => text.replaceAll("|", "\\|");
  return [
    "| Key | Default | Description |",
    "|---|---|---|",
    ...all.map(
      (r) => `| \`${r.key}\` | \`${cell(JSON.stringify(r.value))}\` | ${cell(r.description ?? "")} |`,
    ),
  ].join("\n");
}

const schemaFile = join(CHART, "values.schema.json");
const REGENERATE = "npm run build && node operator/dist/api/write-crds.js";
const readSchema = async () => JSON.parse(await readFile(schemaFile, "utf8")) as Json;

/** Every property the schema defines, with its path, through its `#/definitions/` references. */
function* properties(node: Json, path: string, definitions: Record<string, Json>): Generator<[string, Json]> {
  const resolved =
    typeof node.$ref === "string" ? definitions[node.$ref.replace("#/definitions/", "")] : node;
  for (const [key, child] of Object.entries((resolved?.properties ?? {}) as Record<string, Json>)) {
    yield [`${path}${key}`, child];
    yield* properties(child, `${path}${key}.`, definitions);
  }
}

describe("the chart's values", () => {
  it("are each documented with a '# --' comment", async () => {
    const undocumented = (await valueRows()).filter((r) => r.description === undefined).map((r) => r.key);
    expect(undocumented).toEqual([]);
  });

  it("are tabled in README.md as values.yaml documents them", async () => {
    const readmePath = join(CHART, "README.md");
    const readme = await readFile(readmePath, "utf8");
    const [start, end] = ["<!-- values:start -->\n", "\n<!-- values:end -->"];
    const before = readme.slice(0, readme.indexOf(start) + start.length);
    const after = readme.slice(readme.indexOf(end));
    const expected = `${before}${table(await valueRows())}${after}`;
    if (process.env.UPDATE_CHART_README) await writeFile(readmePath, expected);
    expect(readme.includes(start) && readme.includes(end), "README.md has the values markers").toBe(true);
    expect(readme, "README.md's values table is stale: run this test with UPDATE_CHART_README=1").toBe(
      expected,
    );
  });

  it("are the keys values.schema.json describes, each with a description, in closed objects", async () => {
    const schema = await readSchema();
    const definitions = schema.definitions as Record<string, Json>;
    const described = [...properties(schema, "", definitions)];
    for (const [path, node] of described) {
      expect(node.description, `${path} has no description`).toMatch(/\S/);
      if (node.properties) expect(node.additionalProperties, `${path} is open`).toBe(false);
    }
    for (const [name, node] of Object.entries(definitions)) {
      for (const [path, child] of [
        [name, node] as [string, Json],
        ...properties(node, `${name}.`, definitions),
      ]) {
        if (child.properties) expect(child.additionalProperties, `definitions.${path} is open`).toBe(false);
      }
    }
    expect(schema.additionalProperties).toBe(false);
    // Every value has its schema, and every schema property (but the optional config fields) a value.
    const keys = (await valueRows()).map((r) => r.key);
    const paths = described.map(([path]) => path).filter((path) => !path.startsWith("coordinator.config."));
    expect(keys.filter((key) => !paths.includes(key))).toEqual([]);
    const covered = (path: string) =>
      keys.some((key) => key === path || key.startsWith(`${path}.`) || path.startsWith(`${key}.`));
    expect(paths.filter((path) => !covered(path))).toEqual([]);
  });

  it("are checked by values.schema.json as write-crds.ts generates it, config by the CRD's schema", async () => {
    const baseText = await readFile(join(CHART, VALUES_SCHEMA_BASE), "utf8");
    // coordinator.config stays the CRD's: the base must not copy it by hand.
    const base = JSON.parse(baseText) as Json;
    expect(base.properties.coordinator.properties.config).toEqual({ $generated: "Coordinator.spec.config" });
    expect(
      await readFile(schemaFile, "utf8"),
      `charts/darkbloom/values.schema.json is stale: regenerate with ${REGENERATE}`,
    ).toBe(renderValuesSchema(baseText));
  });
});
