// Which GPU backend build-llama.mjs compiles llama.cpp with, and what the addon then links.
//
// DARKBLOOM_LLAMA_GPU picks it: "auto" (the default), "cpu", "cuda" or "metal".
// - auto: Metal on Apple silicon (llama.cpp's own default there: Metal, and Accelerate for the CPU's
//   BLAS). On Linux, CUDA where an NVIDIA GPU is present (nvidia-smi lists one, or the driver's /proc
//   entry does) and the CUDA toolkit with cuBLAS is installed; otherwise the CPU. A GPU without the
//   toolkit is one line naming what to install, and a CPU build: the daemon's `auto` engine then
//   serves on node-llama-cpp's GPU binaries (npm run install:gpu -- cuda) rather than the core on the
//   CPU.
// - cuda (Linux): the CUDA build or a failure that says what is missing. Without a GPU to build for
//   ("native" architectures), DARKBLOOM_CUDA_ARCHITECTURES must name them (CMake's syntax, e.g.
//   "90-real" for an H100, "86;89" for RTX 3000 and 4000 cards).
// - metal (macOS): Metal, on a Mac only.
// - cpu: the CPU libraries only.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";

export const GPU_CHOICES = ["auto", "cpu", "cuda", "metal"];

const ok = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  return !r.error && r.status === 0 ? r.stdout : undefined;
};

/** Whether this machine has an NVIDIA GPU its driver sees. */
export function nvidiaGpuPresent() {
  if (/^GPU \d+:/m.test(ok("nvidia-smi", ["-L"]) ?? "")) return true;
  try {
    return readdirSync("/proc/driver/nvidia/gpus").length > 0;
  } catch {
    return false;
  }
}

/**
 * The CUDA toolkit's root (bin/nvcc beside the runtime's headers), found from CUDA_PATH, CUDA_HOME,
 * nvcc on PATH (a wrapper script there is passed over), /usr/local/cuda or Debian's /usr; undefined
 * without one.
 */
export function cudaToolkitRoot(env = process.env) {
  const candidates = [env.CUDA_PATH, env.CUDA_HOME];
  const nvcc = ok("sh", ["-c", "command -v nvcc"])?.trim();
  if (nvcc) {
    try {
      candidates.push(dirname(dirname(realpathSync(nvcc))));
    } catch {}
  }
  candidates.push("/usr/local/cuda", "/usr");
  const headers = (root) =>
    ["include", "targets/x86_64-linux/include"].some((dir) => existsSync(join(root, dir, "cuda_runtime.h")));
  return candidates.find((root) => root && existsSync(join(root, "bin", "nvcc")) && headers(root));
}

/** The directory holding cuBLAS's header in the toolkit (Debian's packages put it in /usr/include). */
function cublasHeader(root) {
  return [join(root, "include"), join(root, "targets", "x86_64-linux", "include"), "/usr/include"].find(
    (dir) => existsSync(join(dir, "cublas_v2.h")),
  );
}

/**
 * The driver library to link CUDA's virtual memory management (VMM) against: the toolkit's stub or
 * the installed driver's libcuda.so. Without it ggml is built with GGML_CUDA_NO_VMM, which needs only
 * the runtime (the driver is still what runs it).
 */
function driverLibrary(root) {
  const stubs = [
    "lib64/stubs/libcuda.so",
    "lib/stubs/libcuda.so",
    "targets/x86_64-linux/lib/stubs/libcuda.so",
  ];
  if (stubs.some((p) => existsSync(join(root, p)))) return true;
  return /\slibcuda\.so\s/.test(ok("ldconfig", ["-p"]) ?? "");
}

/**
 * The backend to build: `{ backend: "cpu", note? }`, `{ backend: "cuda", root, architectures, vmm }`,
 * `{ backend: "metal" }` or `{ error }` (a one-line reason the build fails). `probe` finds the
 * platform, the GPU and the toolkit (tests give their own).
 */
export function chooseLlamaGpu(
  env = process.env,
  probe = {
    platform: process.platform,
    arch: process.arch,
    gpu: nvidiaGpuPresent,
    toolkit: () => cudaToolkitRoot(env),
  },
) {
  const choice = env.DARKBLOOM_LLAMA_GPU || "auto";
  if (!GPU_CHOICES.includes(choice))
    return { error: `DARKBLOOM_LLAMA_GPU must be one of ${GPU_CHOICES.join(", ")}, not "${choice}"` };
  const mac = probe.platform === "darwin";
  if (choice === "metal" && !mac) return { error: "DARKBLOOM_LLAMA_GPU=metal: Metal is macOS's" };
  if (choice === "cuda" && mac) return { error: "DARKBLOOM_LLAMA_GPU=cuda: CUDA is built on Linux only" };
  if (mac)
    return choice === "metal" || (choice === "auto" && probe.arch === "arm64")
      ? { backend: "metal" }
      : { backend: "cpu" };
  if (choice === "cpu" || probe.platform !== "linux") return { backend: "cpu" };
  const gpu = probe.gpu();
  if (choice === "auto" && !gpu) return { backend: "cpu" };
  const missing = (what) =>
    choice === "cuda"
      ? { error: `DARKBLOOM_LLAMA_GPU=cuda: ${what}` }
      : { backend: "cpu", note: `an NVIDIA GPU is present but ${what}: building for the CPU` };
  const root = probe.toolkit();
  if (!root) return missing("the CUDA toolkit (nvcc) is not found (set CUDA_PATH, or install it)");
  if (!cublasHeader(root)) return missing(`cuBLAS is not installed in the CUDA toolkit at ${root}`);
  const architectures = env.DARKBLOOM_CUDA_ARCHITECTURES || (gpu ? "native" : undefined);
  if (!architectures)
    return missing("no GPU to build for here: set DARKBLOOM_CUDA_ARCHITECTURES (e.g. 90-real)");
  return { backend: "cuda", root, architectures, vmm: driverLibrary(root) };
}

/**
 * llama.cpp's cmake options for the choice (beside build-llama.mjs's own). On macOS llama.cpp turns
 * Metal on by default, and BLAS through Accelerate: a CPU build turns Metal off.
 */
export function gpuCmakeArgs(gpu, platform = process.platform) {
  if (gpu.backend === "metal") return ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"];
  if (gpu.backend === "cpu") return platform === "darwin" ? ["-DGGML_METAL=OFF"] : [];
  return [
    "-DGGML_CUDA=ON",
    `-DCUDAToolkit_ROOT=${gpu.root}`,
    `-DCMAKE_CUDA_COMPILER=${join(gpu.root, "bin", "nvcc")}`,
    `-DCMAKE_CUDA_ARCHITECTURES=${gpu.architectures}`,
    // One daemon serves on one machine's GPUs: no collective library to find or link.
    "-DGGML_CUDA_NCCL=OFF",
    ...(gpu.vmm ? [] : ["-DGGML_CUDA_NO_VMM=ON"]),
  ];
}

/**
 * The static archives of the build beside the CPU's, in link order (before ggml-base, which they
 * use): ggml-cuda; on macOS ggml-metal and ggml-blas (Accelerate).
 */
export function gpuArchives(gpu, platform = process.platform) {
  if (gpu.backend === "cuda") return ["ggml/src/ggml-cuda/libggml-cuda.a"];
  const blas = platform === "darwin" ? ["ggml/src/ggml-blas/libggml-blas.a"] : [];
  return gpu.backend === "metal" ? ["ggml/src/ggml-metal/libggml-metal.a", ...blas] : blas;
}

/**
 * What the addon links beyond the archives: on macOS the frameworks ggml uses (Accelerate and
 * Foundation; Metal and MetalKit for Metal); for CUDA the runtime, cuBLAS and (with VMM) the driver,
 * by the paths cmake found (its cache), with an rpath to the runtime's directory so that a toolkit
 * outside the loader's path still loads. Never the driver stub's directory: at run time libcuda.so.1
 * must be the installed driver's.
 */
export function gpuLinkFlags(gpu, libsDir, platform = process.platform) {
  if (platform === "darwin") {
    const frameworks = [
      "Accelerate",
      "Foundation",
      ...(gpu.backend === "metal" ? ["Metal", "MetalKit"] : []),
    ];
    return frameworks.map((name) => `-framework ${name}`);
  }
  if (gpu.backend !== "cuda") return [];
  const cache = readFileSync(join(libsDir, "CMakeCache.txt"), "utf8");
  const cached = (name) => cache.match(new RegExp(`^${name}:FILEPATH=(.+)$`, "m"))?.[1]?.trim();
  const names = ["CUDA_cudart_LIBRARY", "CUDA_cublas_LIBRARY", "CUDA_cublasLt_LIBRARY"];
  if (gpu.vmm) names.push("CUDA_cuda_driver_LIBRARY");
  const paths = names.map((name) => {
    const path = cached(name);
    if (!path || path.endsWith("-NOTFOUND"))
      throw new Error(`cmake did not find ${name} in the CUDA toolkit`);
    return path;
  });
  const rpaths = [...new Set(paths.filter((p) => !p.includes("/stubs/")).map((p) => dirname(p)))];
  return [...paths, ...rpaths.map((dir) => `-Wl,-rpath,${dir}`)];
}
