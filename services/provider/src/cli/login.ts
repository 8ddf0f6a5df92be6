import { mkdir } from "node:fs/promises";
import type { Command } from "commander";
import { readAccountToken, removeAccountToken, writeAccountToken } from "../config/account-token.js";
import type { CliContext } from "./context.js";
import { CliFailure } from "./io.js";
import { addSettingOptions, checkCoordinatorTransport, resolveFromOptions } from "./settings-options.js";

interface DeviceCode {
  device_code: string;
  user_code: string;
  verification_uri: string;
  expires_in: number;
  interval: number;
}

/**
 * `login`: links this installation to an account with the device-code flow. The daemon shows a short
 * code; the account owner approves it (POST /v1/device/approve with their API key); the daemon
 * receives a provider token once, stores it (0600) and presents it at every registration, so its
 * earnings are paid into that account. `logout` revokes the token and forgets it.
 */
export function addLoginCommands(program: Command, context: CliContext): void {
  const login = program.command("login").description("link this provider to your account (device code)");
  addSettingOptions(login, ["coordinatorUrl", "dataDir", "insecure"]);
  login.action(async (opts: Record<string, unknown>) => {
    const resolved = resolveFromOptions(opts, context);
    checkCoordinatorTransport(resolved);
    const { config } = resolved;
    await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
    const base = config.coordinatorUrl.replace(/\/+$/, "");
    const code = await post<DeviceCode>(context, `${base}/v1/device/code`, {});
    context.io.stdout(
      `To link this provider, approve code ${code.user_code} within ${Math.round(code.expires_in / 60)} minutes:\n` +
        `  curl -X POST ${code.verification_uri} -H "Authorization: Bearer $API_KEY" ` +
        `-H 'Content-Type: application/json' -d '{"user_code":"${code.user_code}"}'\n` +
        "Waiting for approval…\n",
    );
    let interval = Math.max(1, code.interval) * 1000;
    const deadline = Date.now() + code.expires_in * 1000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, interval));
      const res = await context.fetch(`${base}/v1/device/token`, json({ device_code: code.device_code }));
      const body = (await res.json().catch(() => ({}))) as {
        provider_token?: string;
        account_id?: string;
        error?: { code?: string; message?: string };
      };
      if (res.ok && body.provider_token) {
        await writeAccountToken(config.dataDir, body.provider_token);
        context.io.stdout(`linked to account ${body.account_id}; restart the daemon to register with it\n`);
        return;
      }
      switch (body.error?.code) {
        case "authorization_pending":
          continue;
        case "slow_down":
          interval += 5_000;
          continue;
        case "access_denied":
          throw new CliFailure("the login was denied by the account owner");
        case "expired_token":
          throw new CliFailure("the code expired before it was approved; run darkbloom login again");
        default:
          throw new CliFailure(`login failed: ${body.error?.message ?? `HTTP ${res.status}`}`);
      }
    }
    throw new CliFailure("the code expired before it was approved; run darkbloom login again");
  });

  const logout = program.command("logout").description("unlink this provider from its account");
  addSettingOptions(logout, ["coordinatorUrl", "dataDir", "insecure"]);
  logout.action(async (opts: Record<string, unknown>) => {
    const resolved = resolveFromOptions(opts, context);
    checkCoordinatorTransport(resolved);
    const { config } = resolved;
    const token = await readAccountToken(config.dataDir);
    if (!token) {
      context.io.stdout("not logged in\n");
      return;
    }
    const base = config.coordinatorUrl.replace(/\/+$/, "");
    // Revoke first; forget the token even if the coordinator cannot be reached, and say so.
    const revoked = await post<{ revoked: boolean }>(context, `${base}/v1/device/revoke`, {
      provider_token: token,
    }).then(
      (r) => r.revoked,
      () => undefined,
    );
    await removeAccountToken(config.dataDir);
    context.io.stdout(
      revoked === undefined
        ? `logged out locally; the coordinator at ${base} could not be reached to revoke the token\n`
        : "logged out\n",
    );
  });
}

function json(body: unknown): RequestInit {
  return { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
}

async function post<T>(context: CliContext, url: string, body: unknown): Promise<T> {
  let res: Response;
  try {
    res = await context.fetch(url, json(body));
  } catch (e) {
    throw new CliFailure(`cannot reach the coordinator at ${new URL(url).origin}: ${(e as Error).message}`);
  }
  const parsed = (await res.json().catch(() => undefined)) as
    | (T & { error?: { message?: string } })
    | undefined;
  if (!res.ok || parsed === undefined) {
    throw new CliFailure(
      `${new URL(url).pathname} failed: ${parsed?.error?.message ?? `HTTP ${res.status}`}`,
    );
  }
  return parsed;
}
