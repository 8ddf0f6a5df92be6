import { join, resolve } from "node:path";
import type { Command } from "commander";
import { RELEASE_RISK } from "../config/coordinator-transport.js";
import { DataDirLayout } from "../config/paths.js";
import { DAEMON_VERSION } from "../daemon.js";
import { DownloadError } from "../download/download.js";
import { daemonBinarySha256 } from "../trust/binary-hash.js";
import {
  INSTALL_LAYOUT,
  installedVersion,
  installRelease,
  isNewer,
  type LatestRelease,
  UpdateError,
} from "../update/installer.js";
import type { CliContext } from "./context.js";
import { CliFailure, UsageError } from "./io.js";
import { progressBar } from "./progress.js";
import { addSettingOptions, checkCoordinatorTransport, resolveFromOptions } from "./settings-options.js";

const PLATFORM = /^[a-z0-9]+(?:-[a-z0-9_]+){1,3}$/;

/**
 * `update [--check]`: asks the coordinator for the newest active release of this platform
 * (GET /v1/releases/latest), and unless --check, downloads its bundle, verifies its SHA-256 and binary
 * hash, and switches `<install dir>/current` to it atomically (rolled back if the new release fails
 * its check). The installed version is the one `current` points to, else this daemon's.
 *
 * A plain http:// coordinator on another machine is refused (exit 64) unless --insecure, as for
 * serve and login: the bundle is only as trustworthy as the hashes the coordinator's answer carries,
 * and anyone on the path can rewrite that answer. --check is refused the same way although it installs
 * nothing: its answer can be forged just as well (an "up to date" that hides a security release), and
 * one rule for every command that talks to the coordinator is simpler to state and to check.
 */
export function addUpdateCommand(program: Command, context: CliContext): void {
  const command = program
    .command("update")
    .description("install the newest release of the daemon (--check only reports it)");
  addSettingOptions(command, ["coordinatorUrl", "dataDir", "insecure"]);
  command
    .option("--check", "only report whether a newer release exists")
    .option("--platform <platform>", "release platform (default: this machine's, e.g. linux-x64)")
    .option("--install-dir <dir>", "where releases are installed (default <data dir>/releases)")
    .option("--force", "install the newest release even if it is not newer than the installed one")
    .action(async (opts: Record<string, unknown>) => {
      const resolved = resolveFromOptions(opts, context);
      checkCoordinatorTransport(resolved, RELEASE_RISK);
      const { config } = resolved;
      const platform =
        typeof opts.platform === "string" ? opts.platform : `${context.platform}-${context.arch}`;
      if (!PLATFORM.test(platform)) {
        throw new UsageError(
          `--platform must look like darwin-arm64 or linux-x64 (got ${JSON.stringify(platform)})`,
        );
      }
      const installDir =
        typeof opts.installDir === "string"
          ? resolve(context.cwd, opts.installDir)
          : join(config.dataDir, DataDirLayout.releases);
      const base = config.coordinatorUrl.replace(/\/+$/, "");
      const latest = await fetchLatest(context, base, platform);
      const installed = (await installedVersion(installDir)) ?? DAEMON_VERSION;
      const newer = isNewer(latest.version, installed);
      if (opts.check) {
        const binary = await daemonBinarySha256().catch(() => "unknown");
        context.io.stdout(
          newer
            ? `update available: ${installed} -> ${latest.version} (${latest.url})\n`
            : `up to date: ${installed} (newest release for ${platform} is ${latest.version})\n`,
        );
        context.io.stdout(`running daemon ${DAEMON_VERSION}, binary ${binary}\n`);
        return;
      }
      if (!newer && !opts.force) {
        context.io.stdout(`up to date: ${installed} (newest release for ${platform} is ${latest.version})\n`);
        return;
      }
      const bar = progressBar(context.io.stderr, context.io.stderrIsTty);
      try {
        const result = await installRelease({
          release: latest,
          installDir,
          fetch: context.fetch,
          onProgress: bar.update,
        });
        bar.done();
        context.io.stdout(
          `installed ${result.version} in ${result.dir}` +
            (result.previous ? ` (previous: ${result.previous})` : "") +
            `\nrestart the daemon to run it (it runs ${join(installDir, INSTALL_LAYOUT.current, INSTALL_LAYOUT.entry)})\n`,
        );
      } catch (error) {
        bar.done();
        if (error instanceof UpdateError || error instanceof DownloadError)
          throw new CliFailure(error.message);
        throw error;
      }
    });
}

async function fetchLatest(context: CliContext, base: string, platform: string): Promise<LatestRelease> {
  const url = `${base}/v1/releases/latest?platform=${encodeURIComponent(platform)}`;
  let res: Response;
  try {
    res = await context.fetch(url);
  } catch (error) {
    throw new CliFailure(`cannot reach the coordinator at ${base}: ${(error as Error).message}`);
  }
  const body = (await res.json().catch(() => undefined)) as
    | (Partial<LatestRelease> & { error?: { message?: string; code?: string } })
    | undefined;
  if (res.status === 404 && body?.error?.code === "release_not_found") {
    throw new CliFailure(`the coordinator has no active release for ${platform}`);
  }
  if (!res.ok || body === undefined) {
    throw new CliFailure(`/v1/releases/latest failed: ${body?.error?.message ?? `HTTP ${res.status}`}`);
  }
  const { version, binary_sha256, bundle_sha256, url: bundleUrl } = body;
  if (
    typeof version !== "string" ||
    typeof binary_sha256 !== "string" ||
    typeof bundle_sha256 !== "string" ||
    typeof bundleUrl !== "string"
  ) {
    throw new CliFailure("/v1/releases/latest answered without version, hashes and url");
  }
  return { version, platform, binary_sha256, bundle_sha256, url: bundleUrl };
}
