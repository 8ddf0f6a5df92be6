import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { commandGroup } from "@darkbloom/cli-kit";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { readSecretFile } from "../store/secret-file.js";
import { addAccountCommands } from "./admin-accounts.js";
import type { AdminCall, AdminCommands } from "./admin-call.js";
import { addCreditCommands } from "./admin-credits.js";
import { addInviteCommands } from "./admin-invites.js";
import { addKeyCommands } from "./admin-keys.js";
import { addLedgerCommands } from "./admin-ledger.js";
import { addMachineCommands } from "./admin-machines.js";
import { addModelCommands } from "./admin-models.js";
import { addProviderCommands } from "./admin-providers.js";
import { addReleaseCommands } from "./admin-releases.js";
import { addUsageCommand } from "./admin-usage.js";
import { CliFailure, type CliIo, ExitCode, UsageError } from "./io.js";
import { defaultDataDir, fromEnv, httpUrl } from "./parse.js";

const DEFAULT_URL = "http://127.0.0.1:8080";
const CALL_TIMEOUT_MS = 30_000;

/** The options every admin command takes, before or after its subcommand: where and as whom to call. */
const CONNECTION_OPTIONS = ["url", "adminKey", "json"] as const;

function addConnectionOptions(command: Command): Command {
  return command
    .option("--url <url>", `coordinator URL (env DARKBLOOM_URL, default ${DEFAULT_URL})`, httpUrl)
    .option("--admin-key <key>", "admin key (env DARKBLOOM_ADMIN_KEY, else <data dir>/admin.key)")
    .option("--json", "print one JSON document");
}

/**
 * `admin …`: commands that call a running coordinator's AdminService over HTTP, one file per group
 * (admin-<group>.ts). The connection options are accepted on `admin`, on every group and on every
 * command (`admin --url U accounts create …` and `admin accounts create … --url U` alike); where
 * given twice, the one nearer the command wins.
 */
export function addAdminCommands(program: Command, io: CliIo): void {
  const group = (parent: Command, name: string, description: string) =>
    addConnectionOptions(commandGroup(parent, name, description)).usage("[options] [command]");
  const cli: AdminCommands = {
    group,
    command: (group, name, description, handler) =>
      addConnectionOptions(group.command(name).description(description)).action(adminAction(io, handler)),
  };
  const admin = group(program, "admin", "manage a running coordinator through its admin API");
  addAccountCommands(admin, cli);
  addKeyCommands(admin, cli);
  addCreditCommands(admin, cli);
  addInviteCommands(admin, cli);
  addUsageCommand(admin, cli);
  addModelCommands(admin, cli);
  addProviderCommands(admin, cli);
  addMachineCommands(admin, cli, io);
  addLedgerCommands(admin, cli);
  addReleaseCommands(admin, cli);
}

/** The command's options, with the connection options taken from wherever on its path they were given. */
function commandOptions(command: Command): Record<string, unknown> {
  const path: Command[] = [];
  for (let c: Command | null = command; c; c = c.parent) path.unshift(c);
  const opts: Record<string, unknown> = { ...command.opts() };
  for (const key of CONNECTION_OPTIONS) {
    opts[key] = undefined;
    for (const c of path) opts[key] = c.getOptionValue(key) ?? opts[key];
  }
  return opts;
}

function adminAction(io: CliIo, handler: (call: AdminCall) => Promise<void>) {
  return async (...parameters: unknown[]): Promise<void> => {
    const command = parameters.at(-1) as Command;
    const opts = commandOptions(command);
    const url = (opts.url as string | undefined) ?? fromEnv(io.env, "DARKBLOOM_URL", httpUrl) ?? DEFAULT_URL;
    const adminKey =
      (opts.adminKey as string | undefined) || io.env.DARKBLOOM_ADMIN_KEY || (await adminKeyFile(io));
    if (!adminKey) {
      throw new UsageError(
        "no admin key: pass --admin-key, set DARKBLOOM_ADMIN_KEY, or run where <data dir>/admin.key exists",
      );
    }
    const transport = createConnectTransport({
      baseUrl: url,
      httpVersion: "1.1",
      defaultTimeoutMs: CALL_TIMEOUT_MS,
      interceptors: [
        (next) => (request) => {
          request.header.set("authorization", `Bearer ${adminKey}`);
          return next(request);
        },
      ],
    });
    const print = (json: () => unknown, text: () => string) =>
      io.stdout(opts.json ? `${JSON.stringify(json(), null, 2)}\n` : text());
    try {
      await handler({
        client: createClient(AdminService, transport),
        args: command.processedArgs,
        opts,
        print,
      });
    } catch (error) {
      throw describeCallFailure(error, url);
    }
  };
}

/** The admin key the coordinator generated on this machine, if it can be read. */
async function adminKeyFile(io: CliIo): Promise<string | undefined> {
  try {
    return await readSecretFile(join(defaultDataDir(io.env), "admin.key"));
  } catch {
    return undefined;
  }
}

function describeCallFailure(error: unknown, url: string): unknown {
  if (!(error instanceof ConnectError)) return error;
  const cause = error.cause as { syscall?: unknown; message?: unknown } | undefined;
  if (error.code === Code.Unavailable && cause?.syscall !== undefined) {
    return new CliFailure(
      `cannot reach the coordinator at ${url}: ${String(cause.message)}`,
      ExitCode.unavailable,
    );
  }
  if (error.code === Code.DeadlineExceeded) {
    return new CliFailure(
      `the coordinator at ${url} did not answer within ${CALL_TIMEOUT_MS / 1000} s`,
      ExitCode.unavailable,
    );
  }
  return new CliFailure(error.message, ExitCode.failure);
}
