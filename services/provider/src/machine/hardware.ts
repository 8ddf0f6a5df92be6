import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import * as os from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { AcceleratorKind, type HardwareSchema, MemoryPressure } from "@darkbloom/protocol/provider/v1";
import type { AcceleratorName, EngineDevice } from "../engine/engine.js";

export type HardwareInit = MessageInitShape<typeof HardwareSchema>;

const ACCELERATORS: Record<AcceleratorName, AcceleratorKind> = {
  cpu: AcceleratorKind.CPU,
  metal: AcceleratorKind.METAL,
  cuda: AcceleratorKind.CUDA,
  vulkan: AcceleratorKind.VULKAN,
};

/**
 * The GPU this machine has, whatever an engine makes of it: Apple silicon's (Metal), an NVIDIA
 * driver's device (CUDA), else none ("cpu"). What `doctor` holds the engine's device against, and
 * what `engine: auto` matches the native core's device with (a CPU build stays off a GPU machine).
 */
export function machineAccelerator(
  platform: NodeJS.Platform = process.platform,
  arch: string = process.arch,
): AcceleratorName {
  if (platform === "darwin" && arch === "arm64") return "metal";
  if (platform === "linux" && (existsSync("/dev/nvidia0") || existsSync("/proc/driver/nvidia/version")))
    return "cuda";
  return "cpu";
}

/**
 * The machine as Register describes it: the device is the engine's (what it computes on, as its
 * runtime reports); chip is the CPU model; memory, cores and OS from `os`.
 */
export function describeHardware(device: EngineDevice = { accelerator: "cpu", gpus: [] }): HardwareInit {
  const { accelerator, gpus } = device;
  return {
    machineModel: machineModel(),
    chip: os.cpus()[0]?.model.trim() || os.arch(),
    memoryBytes: BigInt(os.totalmem()),
    cpuCores: os.availableParallelism(),
    gpus: gpus.map((g) => ({ name: g.name, memoryBytes: BigInt(g.memoryBytes) })),
    accelerator: ACCELERATORS[accelerator],
    os: process.platform,
    osVersion: osVersion(),
  };
}

/**
 * Memory pressure from the share of memory free (os.freemem is MemAvailable on Linux): below 5%
 * critical, below 15% warn, else normal.
 */
export function memoryPressure(free = os.freemem(), total = os.totalmem()): MemoryPressure {
  if (total <= 0) return MemoryPressure.UNSPECIFIED;
  const ratio = free / total;
  if (ratio < 0.05) return MemoryPressure.CRITICAL;
  if (ratio < 0.15) return MemoryPressure.WARN;
  return MemoryPressure.NORMAL;
}

function machineModel(): string {
  try {
    if (process.platform === "darwin") {
      return execFileSync("sysctl", ["-n", "hw.model"], { encoding: "utf8", timeout: 2_000 }).trim();
    }
    if (process.platform === "linux") {
      return readFileSync("/sys/class/dmi/id/product_name", "utf8").trim();
    }
  } catch {
    // Not available (containers, permissions): fall through.
  }
  return os.machine();
}

function osVersion(): string {
  if (process.platform === "darwin") {
    try {
      return execFileSync("sw_vers", ["-productVersion"], { encoding: "utf8", timeout: 2_000 }).trim();
    } catch {
      // fall through
    }
  }
  return os.release();
}
