// Writes the generated CRDs to operator/config/crd/ and, as templates, to the Helm chart's
// charts/darkbloom/templates/crds/, and the chart's values.schema.json (its values.schema.base.json
// with the CRD fields it passes through, chart-values-schema.ts); tests fail while any is stale:
//   npm run build && node operator/dist/api/write-crds.js
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { stringify } from "yaml";
import {
  CHART_DIRECTORY,
  renderValuesSchema,
  VALUES_SCHEMA,
  VALUES_SCHEMA_BASE,
} from "./chart-values-schema.js";
import { CRD_DIRECTORY, coordinatorCrd, crdFiles, providerReleaseCrd } from "./v1alpha1/crds.js";

/** charts/darkbloom/templates/crds/, from src/api and from dist/api alike. */
export const CHART_CRD_DIRECTORY = new URL("../../../charts/darkbloom/templates/crds/", import.meta.url);

/** A template comment: it renders nothing, so a file rendered with `crds.create` off stays empty. */
const CHART_HEADER =
  "{{- /*\n" +
  "Generated from operator/src/api/v1alpha1 (crds.ts) by operator/src/api/write-crds.ts: do not edit.\n" +
  "Regenerate with: npm run build && node operator/dist/api/write-crds.js\n" +
  "*/}}\n";

/**
 * The CRDs as the chart's templates: the generated YAML, rendered only with `crds.create`, with the
 * chart's labels and `helm.sh/resource-policy: keep` (so that `helm upgrade` updates a CRD, and
 * `helm uninstall` leaves it, and with it every Coordinator and ProviderRelease in the cluster).
 */
export function chartCrdTemplates(): { name: string; content: string }[] {
  return [coordinatorCrd(), providerReleaseCrd()].map((crd) => {
    const body = stringify(crd, { lineWidth: 0 });
    // Helm reads the body as a template: a generated "{{" would be taken for an action.
    if (body.includes("{{") || body.includes("}}")) {
      throw new Error(`${crd.metadata.name}: the CRD contains "{{" or "}}", which Helm would expand`);
    }
    const nameLine = `metadata:\n  name: ${crd.metadata.name}\n`;
    if (!body.includes(nameLine))
      throw new Error(`${crd.metadata.name}: no "${nameLine}" to add labels after`);
    const metadata =
      nameLine +
      "  labels:\n" +
      '    {{- include "darkbloom.labels" . | nindent 4 }}\n' +
      "  annotations:\n" +
      "    helm.sh/resource-policy: keep\n";
    return {
      name: `${crd.spec.group}_${crd.spec.names.plural}.yaml`,
      content: `${CHART_HEADER}{{- if .Values.crds.create }}\n${body.replace(nameLine, metadata)}{{- end }}\n`,
    };
  });
}

async function writeAll(directory: URL, files: { name: string; content: string }[]): Promise<void> {
  await mkdir(directory, { recursive: true });
  for (const file of files) {
    const url = new URL(file.name, directory);
    await writeFile(url, file.content);
    process.stdout.write(`wrote ${fileURLToPath(url)}\n`);
  }
}

// Run as a script (tests import chartCrdTemplates without writing anything).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await writeAll(CRD_DIRECTORY, crdFiles());
  await writeAll(CHART_CRD_DIRECTORY, chartCrdTemplates());
  const base = await readFile(new URL(VALUES_SCHEMA_BASE, CHART_DIRECTORY), "utf8");
  await writeAll(CHART_DIRECTORY, [{ name: VALUES_SCHEMA, content: renderValuesSchema(base) }]);
}
