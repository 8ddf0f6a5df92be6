// CPU pressure (Linux PSI) while a run measured: the share of the time some task waited for a CPU.
// On a shared two-core machine it says whether the figures are the system's or the neighbours'.
import { readFileSync } from "node:fs";

/** The "some" total of /proc/pressure/cpu in microseconds; undefined where PSI is not available. */
export function cpuPressureTotalMicros(): number | undefined {
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync("/proc/pressure/cpu", "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Starts a measurement; the function it returns gives the share (0..1) since then, if known. */
export function measureCpuPressure(): () => number | undefined {
  const startTotal = cpuPressureTotalMicros();
  const startedAt = performance.now();
  return () => {
    const endTotal = cpuPressureTotalMicros();
    const elapsedUs = (performance.now() - startedAt) * 1000;
    if (startTotal === undefined || endTotal === undefined || elapsedUs <= 0) return undefined;
    return Math.min(1, Math.max(0, (endTotal - startTotal) / elapsedUs));
  };
}

/** A share as a percentage with one decimal (undefined stays undefined). */
export function percentOf(share: number | undefined): number | undefined {
  return share === undefined ? undefined : Math.round(share * 1000) / 10;
}
