import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { coordinatorCrd, providerReleaseCrd } from "./v1alpha1/crds.js";
import { CHART_CRD_DIRECTORY, chartCrdTemplates } from "./write-crds.js";

const REGENERATE = "npm run build && node operator/dist/api/write-crds.js";

describe("the Helm chart's CRD templates", () => {
  it.each(chartCrdTemplates().map((f) => [f.name, f.content]))(
    "has %s up to date in charts/darkbloom/templates/crds",
    async (name, content) => {
      const committed = await readFile(new URL(name, CHART_CRD_DIRECTORY), "utf8").catch(() => "(missing)");
      expect(
        committed,
        `charts/darkbloom/templates/crds/${name} is stale: regenerate with ${REGENERATE}`,
      ).toBe(content);
    },
  );

  it("wraps exactly the generated CRD in crds.create, adding the chart's labels and keep", () => {
    const templates = chartCrdTemplates();
    expect(templates.map((t) => t.name)).toEqual([
      "darkbloom.dev_coordinators.yaml",
      "darkbloom.dev_providerreleases.yaml",
    ]);
    for (const [template, crd] of [
      [templates[0], coordinatorCrd()],
      [templates[1], providerReleaseCrd()],
    ] as const) {
      const lines = template?.content.split("\n") ?? [];
      // The template comment, then the guard; the guard's end closes the file.
      expect(lines[0]).toBe("{{- /*");
      expect(lines[4]).toBe("{{- if .Values.crds.create }}");
      expect(lines.at(-2)).toBe("{{- end }}");
      // Without its template lines, the body is the CRD with the keep annotation and an empty
      // labels map (the include fills it).
      const body = lines
        .slice(5, -2)
        .filter((line) => !line.includes("{{"))
        .join("\n");
      expect(parse(body)).toEqual({
        ...crd,
        metadata: { ...crd.metadata, labels: null, annotations: { "helm.sh/resource-policy": "keep" } },
      });
      expect(template?.content).toContain('  labels:\n    {{- include "darkbloom.labels" . | nindent 4 }}\n');
    }
  });
});
