import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * scripts/llama-gpu.mjs: which backend build-llama.mjs compiles llama.cpp with, and what the addon
 * then links. The GPU and the toolkit are given (a toolkit folder of the real layout, made here);
 * whether CUDA's kernels compile is the build's own business (a machine with the toolkit, see
 * docs/ARCHITECTURE.md).
 */
type Choice =
  | { backend: "cpu"; note?: string; error?: undefined }
  | { backend: "cuda"; root: string; architectures: string; vmm: boolean; error?: undefined }
  | { backend: "metal"; error?: undefined }
  | { error: string; backend?: undefined };
interface Probe {
  platform: string;
  arch: string;
  gpu: () => boolean;
  toolkit: () => string | undefined;
}
interface LlamaGpuScript {
  chooseLlamaGpu(env: Record<string, string | undefined>, probe: Probe): Choice;
  gpuCmakeArgs(choice: Choice, platform: string): string[];
  gpuArchives(choice: Choice, platform: string): string[];
  gpuLinkFlags(choice: Choice, libsDir: string, platform: string): string[];
}

const script = join(dirname(fileURLToPath(import.meta.url)), "..", "scripts", "llama-gpu.mjs");
let gpu: LlamaGpuScript;
let dir: string;
let toolkit: string;
let bare: string;

beforeAll(async () => {
  gpu = (await import(pathToFileURL(script).href)) as LlamaGpuScript;
  dir = await mkdtemp(join(tmpdir(), "darkbloom-llama-gpu-"));
  const layout = async (root: string, files: string[]) => {
    for (const file of files) {
      await mkdir(dirname(join(root, file)), { recursive: true });
      await writeFile(join(root, file), "");
    }
  };
  toolkit = join(dir, "cuda");
  await layout(toolkit, [
    "bin/nvcc",
    "include/cuda_runtime.h",
    "include/cublas_v2.h",
    "lib64/stubs/libcuda.so",
  ]);
  bare = join(dir, "cuda-without-cublas");
  await layout(bare, ["bin/nvcc", "include/cuda_runtime.h"]);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const probe = (o: { gpu: boolean; toolkit?: string; platform?: string; arch?: string }): Probe => ({
  platform: o.platform ?? "linux",
  arch: o.arch ?? "x64",
  gpu: () => o.gpu,
  toolkit: () => o.toolkit,
});

describe("the backend build-llama.mjs compiles", () => {
  it("auto: the CPU without a GPU, CUDA for the GPU there is when the toolkit has cuBLAS", () => {
    expect(gpu.chooseLlamaGpu({}, probe({ gpu: false, toolkit }))).toEqual({ backend: "cpu" });
    expect(gpu.chooseLlamaGpu({ DARKBLOOM_LLAMA_GPU: "auto" }, probe({ gpu: true, toolkit }))).toEqual({
      backend: "cuda",
      root: toolkit,
      architectures: "native",
      vmm: true,
    });
  });

  it("auto with a GPU but no usable toolkit: the CPU, and a note naming what is missing", () => {
    const none = gpu.chooseLlamaGpu({}, probe({ gpu: true }));
    expect(none).toMatchObject({ backend: "cpu" });
    expect(none.backend === "cpu" && none.note).toBe(
      "an NVIDIA GPU is present but the CUDA toolkit (nvcc) is not found (set CUDA_PATH, or install it): building for the CPU",
    );
    const noBlas = gpu.chooseLlamaGpu({}, probe({ gpu: true, toolkit: bare }));
    expect(noBlas.backend === "cpu" && noBlas.note).toBe(
      `an NVIDIA GPU is present but cuBLAS is not installed in the CUDA toolkit at ${bare}: building for the CPU`,
    );
  });

  it("cuda: a failure that says what is missing, and the architectures it must be told without a GPU", () => {
    const forced = { DARKBLOOM_LLAMA_GPU: "cuda" };
    expect(gpu.chooseLlamaGpu(forced, probe({ gpu: true, toolkit: bare })).error).toBe(
      `DARKBLOOM_LLAMA_GPU=cuda: cuBLAS is not installed in the CUDA toolkit at ${bare}`,
    );
    expect(gpu.chooseLlamaGpu(forced, probe({ gpu: false, toolkit })).error).toBe(
      "DARKBLOOM_LLAMA_GPU=cuda: no GPU to build for here: set DARKBLOOM_CUDA_ARCHITECTURES (e.g. 90-real)",
    );
    expect(
      gpu.chooseLlamaGpu(
        { ...forced, DARKBLOOM_CUDA_ARCHITECTURES: "86;89" },
        probe({ gpu: false, toolkit }),
      ),
    ).toEqual({ backend: "cuda", root: toolkit, architectures: "86;89", vmm: true });
  });

  it("cpu builds the CPU whatever is present; anything else is refused", () => {
    expect(gpu.chooseLlamaGpu({ DARKBLOOM_LLAMA_GPU: "cpu" }, probe({ gpu: true, toolkit }))).toEqual({
      backend: "cpu",
    });
    expect(gpu.chooseLlamaGpu({ DARKBLOOM_LLAMA_GPU: "rocm" }, probe({ gpu: true, toolkit })).error).toBe(
      'DARKBLOOM_LLAMA_GPU must be one of auto, cpu, cuda, metal, not "rocm"',
    );
  });

  it("macOS: Metal on Apple silicon (llama.cpp's default there), the CPU on Intel or when asked", () => {
    const mac = (arch: string) => probe({ gpu: false, platform: "darwin", arch });
    expect(gpu.chooseLlamaGpu({}, mac("arm64"))).toEqual({ backend: "metal" });
    expect(gpu.chooseLlamaGpu({ DARKBLOOM_LLAMA_GPU: "metal" }, mac("arm64"))).toEqual({ backend: "metal" });
    expect(gpu.chooseLlamaGpu({}, mac("x64"))).toEqual({ backend: "cpu" });
    expect(gpu.chooseLlamaGpu({ DARKBLOOM_LLAMA_GPU: "cpu" }, mac("arm64"))).toEqual({ backend: "cpu" });
    expect(gpu.chooseLlamaGpu({ DARKBLOOM_LLAMA_GPU: "cuda" }, mac("arm64")).error).toBe(
      "DARKBLOOM_LLAMA_GPU=cuda: CUDA is built on Linux only",
    );
    expect(gpu.chooseLlamaGpu({ DARKBLOOM_LLAMA_GPU: "metal" }, probe({ gpu: true, toolkit })).error).toBe(
      "DARKBLOOM_LLAMA_GPU=metal: Metal is macOS's",
    );
  });

  it("macOS builds: Metal embedded, BLAS through Accelerate, the frameworks ggml uses", () => {
    const metal: Choice = { backend: "metal" };
    const cpu: Choice = { backend: "cpu" };
    expect(gpu.gpuCmakeArgs(metal, "darwin")).toEqual(["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"]);
    // llama.cpp turns Metal on by default on a Mac: a CPU build says otherwise.
    expect(gpu.gpuCmakeArgs(cpu, "darwin")).toEqual(["-DGGML_METAL=OFF"]);
    expect(gpu.gpuArchives(metal, "darwin")).toEqual([
      "ggml/src/ggml-metal/libggml-metal.a",
      "ggml/src/ggml-blas/libggml-blas.a",
    ]);
    expect(gpu.gpuArchives(cpu, "darwin")).toEqual(["ggml/src/ggml-blas/libggml-blas.a"]);
    expect(gpu.gpuLinkFlags(metal, dir, "darwin")).toEqual([
      "-framework Accelerate",
      "-framework Foundation",
      "-framework Metal",
      "-framework MetalKit",
    ]);
    expect(gpu.gpuLinkFlags(cpu, dir, "darwin")).toEqual(["-framework Accelerate", "-framework Foundation"]);
  });

  it("a CUDA build's cmake options, archives and links: the driver only with VMM, never its stub's rpath", async () => {
    const cuda = gpu.chooseLlamaGpu({}, probe({ gpu: true, toolkit }));
    expect(gpu.gpuCmakeArgs(cuda, "linux")).toEqual([
      "-DGGML_CUDA=ON",
      `-DCUDAToolkit_ROOT=${toolkit}`,
      `-DCMAKE_CUDA_COMPILER=${join(toolkit, "bin", "nvcc")}`,
      "-DCMAKE_CUDA_ARCHITECTURES=native",
      "-DGGML_CUDA_NCCL=OFF",
    ]);
    expect(gpu.gpuArchives(cuda, "linux")).toEqual(["ggml/src/ggml-cuda/libggml-cuda.a"]);
    const libs = join(dir, "build");
    await mkdir(libs, { recursive: true });
    const lib = join(toolkit, "lib64");
    await writeFile(
      join(libs, "CMakeCache.txt"),
      [
        `CUDA_cudart_LIBRARY:FILEPATH=${lib}/libcudart.so`,
        `CUDA_cublas_LIBRARY:FILEPATH=${lib}/libcublas.so`,
        `CUDA_cublasLt_LIBRARY:FILEPATH=${lib}/libcublasLt.so`,
        `CUDA_cuda_driver_LIBRARY:FILEPATH=${lib}/stubs/libcuda.so`,
        "",
      ].join("\n"),
    );
    expect(gpu.gpuLinkFlags(cuda, libs, "linux")).toEqual([
      `${lib}/libcudart.so`,
      `${lib}/libcublas.so`,
      `${lib}/libcublasLt.so`,
      `${lib}/stubs/libcuda.so`,
      `-Wl,-rpath,${lib}`,
    ]);
    const noVmm = { ...cuda, vmm: false } as Choice;
    expect(gpu.gpuCmakeArgs(noVmm, "linux")).toContain("-DGGML_CUDA_NO_VMM=ON");
    expect(gpu.gpuLinkFlags(noVmm, libs, "linux")).not.toContain(`${lib}/stubs/libcuda.so`);
    // A library cmake did not find is the build's failure, not a link that fails later.
    await writeFile(
      join(libs, "CMakeCache.txt"),
      "CUDA_cublas_LIBRARY:FILEPATH=CUDA_cublas_LIBRARY-NOTFOUND\n",
    );
    expect(() => gpu.gpuLinkFlags(cuda, libs, "linux")).toThrow(
      "cmake did not find CUDA_cudart_LIBRARY in the CUDA toolkit",
    );
    // The CPU build links nothing more.
    expect(gpu.gpuCmakeArgs({ backend: "cpu" }, "linux")).toEqual([]);
    expect(gpu.gpuArchives({ backend: "cpu" }, "linux")).toEqual([]);
    expect(gpu.gpuLinkFlags({ backend: "cpu" }, libs, "linux")).toEqual([]);
  });
});
