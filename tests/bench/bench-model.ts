/**
 * The benchmarks' models: a synthesized model of a real shape, written once into a cache folder
 * (seed 0, Q8_0, as `darkbloom models synth` writes it) and reused by every later run.
 */
import { mkdir, rename, stat } from "node:fs/promises";
import {
  type ModelFile,
  type ModelShapeName,
  modelPath,
  readModelFile,
  synthesizeModel,
} from "@darkbloom/provider";

export async function benchModel(
  cacheDir: string,
  shape: ModelShapeName,
  progress: (line: string) => void,
): Promise<ModelFile> {
  const path = modelPath(cacheDir, shape);
  const present = await stat(path).then(
    () => true,
    () => false,
  );
  if (!present) {
    await mkdir(cacheDir, { recursive: true });
    progress(`synthesizing ${shape} (Q8_0) into ${cacheDir}`);
    const partial = `${path}.partial`;
    await synthesizeModel({ shape, seed: 0, outPath: partial, quantization: "Q8_0" });
    await rename(partial, path);
  }
  const model = await readModelFile(path);
  progress(`model ${model.id}: ${(model.sizeBytes / 2 ** 20).toFixed(0)} MiB ${model.quantization}`);
  return model;
}
