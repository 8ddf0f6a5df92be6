import { VerifyLedgerResponseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { CliFailure, ExitCode } from "./io.js";

/** `admin ledger verify`: proves the ledger's invariants (exit 1 on any discrepancy). */
export function addLedgerCommands(admin: Command, cli: AdminCommands): void {
  const ledger = cli.group(admin, "ledger", "the double-entry ledger");
  cli.command(ledger, "verify", "prove the ledger's invariants; exit 1 on any discrepancy", async (call) => {
    const report = await call.client.verifyLedger({});
    call.print(
      () => protoJson(VerifyLedgerResponseSchema, report),
      () =>
        `${report.ok ? "ledger OK" : "LEDGER DISCREPANCIES"}: ${report.transactions} transactions, ${report.entries} entries, ` +
        `${report.accounts} accounts, ${report.openReservations} open reservations\n` +
        report.discrepancies.map((d) => `  ${d.check}: ${d.detail}\n`).join(""),
    );
    if (!report.ok) {
      throw new CliFailure(
        `ledger verify found ${report.discrepancies.length} discrepancies`,
        ExitCode.failure,
      );
    }
  });
}
