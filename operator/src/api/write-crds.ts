// Writes the generated CRDs to operator/config/crd/ (a test fails while they are stale):
//   npm run build && node operator/dist/api/write-crds.js
import { mkdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { CRD_DIRECTORY, crdFiles } from "./v1alpha1/crds.js";

await mkdir(CRD_DIRECTORY, { recursive: true });
for (const file of crdFiles()) {
  const url = new URL(file.name, CRD_DIRECTORY);
  await writeFile(url, file.content);
  process.stdout.write(`wrote ${fileURLToPath(url)}\n`);
}
