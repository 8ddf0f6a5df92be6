import { mkdir, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { CommandRunner } from "./runner.js";
import { mustRun, type ServiceManager, type ServiceSpec, type ServiceStatus } from "./service-manager.js";

export const SYSTEMD_UNIT = "darkbloom-provider.service";
/** Seconds systemd waits after SIGTERM before SIGKILL: longer than the daemon's drain deadline. */
const STOP_TIMEOUT_S = 45;

export interface SystemdOptions {
  home: string;
  runner: CommandRunner;
}

/**
 * A systemd user unit `darkbloom-provider.service` in ~/.config/systemd/user, enabled and started
 * with `systemctl --user enable --now`. systemd restarts the daemon when it fails, except after a
 * configuration error (exit 64), and appends its output to the log file in the data directory.
 */
export class SystemdService implements ServiceManager {
  readonly kind = "systemd";
  readonly name = SYSTEMD_UNIT;
  readonly definitionPath: string;

  constructor(private readonly options: SystemdOptions) {
    this.definitionPath = join(options.home, ".config", "systemd", "user", SYSTEMD_UNIT);
  }

  render(spec: ServiceSpec): string {
    const exec = [spec.nodePath, spec.scriptPath, "serve", ...spec.serveArgs].map(execArg).join(" ");
    return [
      "[Unit]",
      "Description=Darkbloom provider daemon",
      "After=network-online.target",
      "Wants=network-online.target",
      "",
      "[Service]",
      "Type=simple",
      `ExecStart=${exec}`,
      `WorkingDirectory=${specifiers(spec.dataDir)}`,
      "Restart=on-failure",
      "RestartSec=10",
      "RestartPreventExitStatus=64",
      "KillSignal=SIGTERM",
      `TimeoutStopSec=${STOP_TIMEOUT_S}`,
      `StandardOutput=append:${specifiers(spec.logFile)}`,
      `StandardError=append:${specifiers(spec.logFile)}`,
      "",
      "[Install]",
      "WantedBy=default.target",
      "",
    ].join("\n");
  }

  async start(spec: ServiceSpec): Promise<void> {
    const { runner } = this.options;
    await mkdir(dirname(this.definitionPath), { recursive: true });
    await mkdir(dirname(spec.logFile), { recursive: true });
    await writeFile(this.definitionPath, this.render(spec), { mode: 0o644 });
    await mustRun(runner, "systemctl", ["--user", "daemon-reload"]);
    await mustRun(runner, "systemctl", ["--user", "enable", "--now", SYSTEMD_UNIT]);
  }

  async stop(): Promise<void> {
    await mustRun(this.options.runner, "systemctl", ["--user", "stop", SYSTEMD_UNIT]);
  }

  async restart(): Promise<void> {
    // systemd stops with SIGTERM (the daemon drains, up to TimeoutStopSec) and starts the unit again.
    await mustRun(this.options.runner, "systemctl", ["--user", "restart", SYSTEMD_UNIT]);
  }

  async status(): Promise<ServiceStatus> {
    const installed = await stat(this.definitionPath).then(
      () => true,
      () => false,
    );
    // Exit status: 0 active, 3 inactive or failed, 4 no such unit.
    const result = await this.options.runner.run("systemctl", [
      "--user",
      "status",
      SYSTEMD_UNIT,
      "--no-pager",
    ]);
    const active = /^\s*Active: (.+)$/m.exec(result.stdout)?.[1]?.trim();
    const pid = Number(/^\s*Main PID: (\d+)/m.exec(result.stdout)?.[1]);
    const loaded = result.code === 0 || result.code === 3;
    const detail = active
      ? `${SYSTEMD_UNIT}: ${active}`
      : (result.stderr || result.stdout).trim().split("\n")[0] || `${SYSTEMD_UNIT} is not loaded`;
    return {
      installed,
      loaded,
      running: result.code === 0,
      pid: result.code === 0 && pid ? pid : undefined,
      detail,
    };
  }
}

/** One ExecStart word: quoted when it holds whitespace, quotes or backslashes; `%` and `$` escaped. */
function execArg(word: string): string {
  const escaped = specifiers(word).replace(/\$/g, "$$$$");
  if (!/[\s"'\\]/.test(escaped) && escaped !== "") return escaped;
  return `"${escaped.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** Escapes systemd's `%` specifiers. */
function specifiers(text: string): string {
  return text.replace(/%/g, "%%");
}
