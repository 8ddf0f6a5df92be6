import { mkdir, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { CommandRunner } from "./runner.js";
import {
  mustRun,
  ServiceError,
  type ServiceManager,
  type ServiceSpec,
  type ServiceStatus,
} from "./service-manager.js";

export const LAUNCHD_LABEL = "io.darkbloom.provider";
/** Seconds launchd waits after SIGTERM before SIGKILL: longer than the daemon's drain deadline. */
const EXIT_TIMEOUT_S = 45;

/** launchctl exit statuses that mean "no such service loaded". */
const NOT_LOADED = new Set([3, 113]);

export interface LaunchdOptions {
  home: string;
  uid: number;
  runner: CommandRunner;
}

/**
 * A per-user launchd agent `io.darkbloom.provider` in the `gui/<uid>` domain: the plist in
 * ~/Library/LaunchAgents, started with `launchctl bootstrap`, stopped with `bootout`, inspected with
 * `print`. launchd restarts the daemon when it crashes (KeepAlive unless it exited cleanly) and
 * appends its output to the log file in the data directory.
 */
export class LaunchdService implements ServiceManager {
  readonly kind = "launchd";
  readonly name = LAUNCHD_LABEL;
  readonly definitionPath: string;
  private readonly domain: string;
  private readonly target: string;

  constructor(private readonly options: LaunchdOptions) {
    this.definitionPath = join(options.home, "Library", "LaunchAgents", `${LAUNCHD_LABEL}.plist`);
    this.domain = `gui/${options.uid}`;
    this.target = `${this.domain}/${LAUNCHD_LABEL}`;
  }

  render(spec: ServiceSpec): string {
    const args = [spec.nodePath, spec.scriptPath, "serve", ...spec.serveArgs];
    return [
      '<?xml version="1.0" encoding="UTF-8"?>',
      '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
      '<plist version="1.0">',
      "<dict>",
      "  <key>Label</key>",
      `  <string>${xml(LAUNCHD_LABEL)}</string>`,
      "  <key>ProgramArguments</key>",
      "  <array>",
      ...args.map((a) => `    <string>${xml(a)}</string>`),
      "  </array>",
      "  <key>WorkingDirectory</key>",
      `  <string>${xml(spec.dataDir)}</string>`,
      "  <key>RunAtLoad</key>",
      "  <true/>",
      "  <key>KeepAlive</key>",
      "  <dict>",
      "    <key>SuccessfulExit</key>",
      "    <false/>",
      "  </dict>",
      "  <key>ThrottleInterval</key>",
      "  <integer>10</integer>",
      "  <key>ExitTimeOut</key>",
      `  <integer>${EXIT_TIMEOUT_S}</integer>`,
      "  <key>StandardOutPath</key>",
      `  <string>${xml(spec.logFile)}</string>`,
      "  <key>StandardErrorPath</key>",
      `  <string>${xml(spec.logFile)}</string>`,
      "</dict>",
      "</plist>",
      "",
    ].join("\n");
  }

  async start(spec: ServiceSpec): Promise<void> {
    const { runner } = this.options;
    await mkdir(dirname(this.definitionPath), { recursive: true });
    await mkdir(dirname(spec.logFile), { recursive: true });
    await writeFile(this.definitionPath, this.render(spec), { mode: 0o644 });
    // A loaded agent keeps its old definition: unload it first so the new plist takes effect.
    const loaded = await runner.run("launchctl", ["print", this.target]);
    if (loaded.code === 0) await mustRun(runner, "launchctl", ["bootout", this.target]);
    await mustRun(runner, "launchctl", ["enable", this.target]);
    await mustRun(runner, "launchctl", ["bootstrap", this.domain, this.definitionPath]);
  }

  async stop(): Promise<void> {
    // bootout sends SIGTERM (the daemon drains) and waits for the process to exit.
    const result = await this.options.runner.run("launchctl", ["bootout", this.target]);
    if (result.code !== 0 && !NOT_LOADED.has(result.code)) {
      const why = (result.stderr || result.stdout).trim().split("\n")[0] || `exit status ${result.code}`;
      throw new ServiceError(`launchctl bootout ${this.target} failed: ${why}`);
    }
  }

  async restart(): Promise<void> {
    const { runner } = this.options;
    if (!(await exists(this.definitionPath)))
      throw new ServiceError(`${this.definitionPath} does not exist; run darkbloom start first`);
    // bootout waits for the drain; bootstrap loads the installed plist again (RunAtLoad starts it).
    await this.stop();
    await mustRun(runner, "launchctl", ["enable", this.target]);
    await mustRun(runner, "launchctl", ["bootstrap", this.domain, this.definitionPath]);
  }

  async status(): Promise<ServiceStatus> {
    const installed = await exists(this.definitionPath);
    const result = await this.options.runner.run("launchctl", ["print", this.target]);
    if (result.code !== 0) {
      return {
        installed,
        loaded: false,
        running: false,
        pid: undefined,
        detail: `${this.target} is not loaded`,
      };
    }
    const state = /^\s*state = (\S+)/m.exec(result.stdout)?.[1];
    const pid = Number(/^\s*pid = (\d+)/m.exec(result.stdout)?.[1]);
    const lastExit = /^\s*last exit code = (.+)$/m.exec(result.stdout)?.[1]?.trim();
    const running = state === "running";
    const parts = [`${this.target} is ${state ?? "loaded"}`];
    if (running && pid) parts.push(`pid ${pid}`);
    if (lastExit) parts.push(`last exit code ${lastExit}`);
    return { installed, loaded: true, running, pid: pid || undefined, detail: parts.join(", ") };
  }
}

function xml(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
