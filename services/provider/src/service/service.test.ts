import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type CommandResult, type CommandRunner, ServiceError, serviceManagerFor } from "./index.js";

/** Records every command and answers from a table (default: success with no output). */
class FakeRunner implements CommandRunner {
  readonly calls: string[] = [];
  private readonly answers = new Map<string, Partial<CommandResult>>();

  answer(commandLine: string, result: Partial<CommandResult>): this {
    this.answers.set(commandLine, result);
    return this;
  }

  async run(command: string, args: readonly string[]): Promise<CommandResult> {
    const line = [command, ...args].join(" ");
    this.calls.push(line);
    return { code: 0, stdout: "", stderr: "", ...this.answers.get(line) };
  }
}

let home: string;
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-service-"));
});
afterEach(async () => {
  await rm(home, { recursive: true, force: true });
});

const spec = () => ({
  nodePath: "/usr/local/bin/node",
  scriptPath: "/opt/darkbloom/dist/bin/darkbloom.js",
  serveArgs: ["--data-dir", join(home, "data & more"), "--config", join(home, "p.yaml")],
  dataDir: join(home, "data & more"),
  logFile: join(home, "data & more", "logs", "provider.log"),
});

describe("launchd agent", () => {
  it("writes the plist and bootstraps it in gui/<uid>", async () => {
    const runner = new FakeRunner().answer("launchctl print gui/501/io.darkbloom.provider", { code: 113 });
    const service = serviceManagerFor({ platform: "darwin", home, uid: 501, runner });
    expect(service.kind).toBe("launchd");
    expect(service.definitionPath).toBe(join(home, "Library", "LaunchAgents", "io.darkbloom.provider.plist"));
    await service.start(spec());
    const plist = await readFile(service.definitionPath, "utf8");
    expect(plist).toBe(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>io.darkbloom.provider</string>
  <key>ProgramArguments</key>
  <array>
    <string>/usr/local/bin/node</string>
    <string>/opt/darkbloom/dist/bin/darkbloom.js</string>
    <string>serve</string>
    <string>--data-dir</string>
    <string>${home}/data &amp; more</string>
    <string>--config</string>
    <string>${home}/p.yaml</string>
  </array>
  <key>WorkingDirectory</key>
  <string>${home}/data &amp; more</string>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ThrottleInterval</key>
  <integer>10</integer>
  <key>ExitTimeOut</key>
  <integer>45</integer>
  <key>StandardOutPath</key>
  <string>${home}/data &amp; more/logs/provider.log</string>
  <key>StandardErrorPath</key>
  <string>${home}/data &amp; more/logs/provider.log</string>
</dict>
</plist>
`);
    expect(runner.calls).toEqual([
      "launchctl print gui/501/io.darkbloom.provider",
      "launchctl enable gui/501/io.darkbloom.provider",
      `launchctl bootstrap gui/501 ${service.definitionPath}`,
    ]);
    // The log directory exists for launchd to open the log file in.
    expect((await stat(join(home, "data & more", "logs"))).isDirectory()).toBe(true);
  });

  it("boots out a loaded agent before bootstrapping the new plist", async () => {
    const runner = new FakeRunner();
    const service = serviceManagerFor({ platform: "darwin", home, uid: 502, runner });
    await service.start(spec());
    expect(runner.calls).toEqual([
      "launchctl print gui/502/io.darkbloom.provider",
      "launchctl bootout gui/502/io.darkbloom.provider",
      "launchctl enable gui/502/io.darkbloom.provider",
      `launchctl bootstrap gui/502 ${service.definitionPath}`,
    ]);
  });

  it("reports a failed bootstrap with launchctl's message", async () => {
    const service = serviceManagerFor({
      platform: "darwin",
      home,
      uid: 501,
      runner: new FakeRunner()
        .answer("launchctl print gui/501/io.darkbloom.provider", { code: 113 })
        .answer(
          `launchctl bootstrap gui/501 ${join(home, "Library", "LaunchAgents", "io.darkbloom.provider.plist")}`,
          {
            code: 5,
            stderr: "Bootstrap failed: 5: Input/output error\n",
          },
        ),
    });
    await expect(service.start(spec())).rejects.toThrow(
      /^launchctl bootstrap gui\/501 .*io\.darkbloom\.provider\.plist failed: Bootstrap failed: 5: Input\/output error$/,
    );
  });

  it("stops with bootout; an agent that is not loaded is already stopped", async () => {
    const runner = new FakeRunner().answer("launchctl bootout gui/501/io.darkbloom.provider", { code: 3 });
    const service = serviceManagerFor({ platform: "darwin", home, uid: 501, runner });
    await service.stop();
    expect(runner.calls).toEqual(["launchctl bootout gui/501/io.darkbloom.provider"]);
    const failing = serviceManagerFor({
      platform: "darwin",
      home,
      uid: 501,
      runner: new FakeRunner().answer("launchctl bootout gui/501/io.darkbloom.provider", {
        code: 1,
        stderr: "Operation not permitted",
      }),
    });
    await expect(failing.stop()).rejects.toBeInstanceOf(ServiceError);
  });

  it("reads the status from launchctl print", async () => {
    const runner = new FakeRunner().answer("launchctl print gui/501/io.darkbloom.provider", {
      stdout:
        "gui/501/io.darkbloom.provider = {\n\tactive count = 1\n\tstate = running\n\tpid = 4242\n\tlast exit code = 0\n}\n",
    });
    const service = serviceManagerFor({ platform: "darwin", home, uid: 501, runner });
    expect(await service.status()).toEqual({
      installed: false,
      loaded: true,
      running: true,
      pid: 4242,
      detail: "gui/501/io.darkbloom.provider is running, pid 4242, last exit code 0",
    });
    const stopped = serviceManagerFor({
      platform: "darwin",
      home,
      uid: 501,
      runner: new FakeRunner().answer("launchctl print gui/501/io.darkbloom.provider", { code: 113 }),
    });
    expect(await stopped.status()).toMatchObject({ loaded: false, running: false, pid: undefined });
  });
});

describe("systemd user unit", () => {
  it("writes the unit, reloads systemd and enables it now", async () => {
    const runner = new FakeRunner();
    const service = serviceManagerFor({ platform: "linux", home, runner });
    expect(service.kind).toBe("systemd");
    expect(service.definitionPath).toBe(
      join(home, ".config", "systemd", "user", "darkbloom-provider.service"),
    );
    await service.start({
      ...spec(),
      serveArgs: ["--data-dir", join(home, "data & more"), "--config", "/x/100%.yaml"],
    });
    expect(await readFile(service.definitionPath, "utf8")).toBe(`[Unit]
Description=Darkbloom provider daemon
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/usr/local/bin/node /opt/darkbloom/dist/bin/darkbloom.js serve --data-dir "${home}/data & more" --config /x/100%%.yaml
WorkingDirectory=${home}/data & more
Restart=on-failure
RestartSec=10
RestartPreventExitStatus=64
KillSignal=SIGTERM
TimeoutStopSec=45
StandardOutput=append:${home}/data & more/logs/provider.log
StandardError=append:${home}/data & more/logs/provider.log

[Install]
WantedBy=default.target
`);
    expect(runner.calls).toEqual([
      "systemctl --user daemon-reload",
      "systemctl --user enable --now darkbloom-provider.service",
    ]);
  });

  it("stops and reports status", async () => {
    const runner = new FakeRunner().answer("systemctl --user status darkbloom-provider.service --no-pager", {
      stdout:
        "● darkbloom-provider.service - Darkbloom provider daemon\n     Loaded: loaded\n     Active: active (running) since Mon 2025-01-06 10:00:00 UTC; 5min ago\n   Main PID: 777 (node)\n",
    });
    const service = serviceManagerFor({ platform: "linux", home, runner });
    await service.stop();
    expect(await service.status()).toEqual({
      installed: false,
      loaded: true,
      running: true,
      pid: 777,
      detail: "darkbloom-provider.service: active (running) since Mon 2025-01-06 10:00:00 UTC; 5min ago",
    });
    expect(runner.calls).toEqual([
      "systemctl --user stop darkbloom-provider.service",
      "systemctl --user status darkbloom-provider.service --no-pager",
    ]);
    const inactive = serviceManagerFor({
      platform: "linux",
      home,
      runner: new FakeRunner().answer("systemctl --user status darkbloom-provider.service --no-pager", {
        code: 3,
        stdout: "     Active: inactive (dead)\n",
      }),
    });
    expect(await inactive.status()).toMatchObject({ running: false, loaded: true, pid: undefined });
  });

  it("fails with systemctl's message", async () => {
    const service = serviceManagerFor({
      platform: "linux",
      home,
      runner: new FakeRunner().answer("systemctl --user daemon-reload", {
        code: 1,
        stderr: "Failed to connect to bus: No medium found\n",
      }),
    });
    await expect(service.start(spec())).rejects.toThrow(
      "systemctl --user daemon-reload failed: Failed to connect to bus: No medium found",
    );
  });
});

it("refuses other platforms", () => {
  expect(() => serviceManagerFor({ platform: "win32", home })).toThrow(ServiceError);
});
describe("restart (autotune --apply)", () => {
  it("launchd: boots out (the daemon drains) and bootstraps the installed plist again", async () => {
    const runner = new FakeRunner();
    const service = serviceManagerFor({ platform: "darwin", home, uid: 501, runner });
    await expect(service.restart()).rejects.toThrow(ServiceError);
    await service.start(spec());
    runner.calls.length = 0;
    await service.restart();
    expect(runner.calls).toEqual([
      "launchctl bootout gui/501/io.darkbloom.provider",
      "launchctl enable gui/501/io.darkbloom.provider",
      `launchctl bootstrap gui/501 ${service.definitionPath}`,
    ]);
  });

  it("systemd: systemctl --user restart", async () => {
    const runner = new FakeRunner();
    const service = serviceManagerFor({ platform: "linux", home, runner });
    await service.restart();
    expect(runner.calls).toEqual(["systemctl --user restart darkbloom-provider.service"]);
  });
});
