// The benchmarks' measured servers: each in a process of its own (coordinator-process.ts), so that
// it has a core to itself while the load generator and the providers use the other one.
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";

/** This checkout's server process script. */
export const OWN_PROCESS = fileURLToPath(new URL("./coordinator-process.js", import.meta.url));

export interface Server {
  url: string;
  apiKey: string;
  child: ChildProcess;
}

export async function spawnServer(args: string[], script = OWN_PROCESS): Promise<Server> {
  const child = fork(script, args, {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    // BENCH_CPU_PROFILE=dir writes a V8 CPU profile of the measured server there.
    execArgv: process.env.BENCH_CPU_PROFILE
      ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROFILE}`]
      : [],
  });
  const info = await new Promise<{ url: string; apiKey: string }>((resolve, reject) => {
    child.once("message", (m) => resolve(m as { url: string; apiKey: string }));
    child.once("exit", (code) => reject(new Error(`server process exited with ${code}`)));
  });
  return { ...info, child };
}

/** The server process's CPU time so far, in microseconds (user + system), and its main thread's. */
export function serverCpu(s: Server): Promise<{ cpuUs: number; mainThreadUs: number | undefined }> {
  return new Promise((resolve) => {
    const onMessage = (m: unknown) => {
      const { cpu, mainThreadUs } = m as { cpu?: NodeJS.CpuUsage; mainThreadUs?: number };
      if (!cpu) return;
      s.child.off("message", onMessage);
      resolve({ cpuUs: cpu.user + cpu.system, mainThreadUs });
    };
    s.child.on("message", onMessage);
    s.child.send("cpu");
  });
}

export async function stopServer(s: Server): Promise<void> {
  const exited = new Promise((r) => s.child.once("exit", r));
  s.child.send("stop");
  await exited;
}
