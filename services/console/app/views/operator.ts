import type { ProviderSummaryJson } from "@darkbloom/protocol/admin/v1";
import { admin } from "../api.js";
import { h, replace } from "../dom.js";
import { count, usd, when } from "../format.js";
import { confirmedAction, dataTable } from "../widgets.js";

// The operator's views (signed in with the admin key): the fleet, the catalog's models and prices,
// the ledger's verification. Each reads the typed AdminService over Connect's JSON protocol, whose
// field names are the protobuf ones in lowerCamelCase and whose 64-bit integers are strings.

type Provider = ProviderSummaryJson;

/** The connected providers: counts by model, trust, version and hardware, then each one. */
export async function fleetView(main: HTMLElement): Promise<void> {
  replace(main, h("h1", {}, "Fleet"), h("p", { role: "status" }, "Loading…"));
  const { providers = [] } = await admin("listProviders", {});
  const tally = (key: (p: Provider) => string[]) => {
    const counts = new Map<string, number>();
    for (const p of providers) for (const k of key(p)) counts.set(k, (counts.get(k) ?? 0) + 1);
    return [...counts.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
  };
  const summary = (title: string, rows: [string, number][]) =>
    h(
      "div",
      { class: "card" },
      h("dt", {}, title),
      ...rows.map(([k, n]) => h("dd", { class: "tally" }, `${k}: ${n}`)),
    );
  replace(
    main,
    h("h1", {}, "Fleet"),
    h("p", {}, `${count(providers.length)} connected provider${providers.length === 1 ? "" : "s"}.`),
    providers.length === 0
      ? null
      : h(
          "dl",
          { class: "cards" },
          summary(
            "By model",
            tally((p) => p.models ?? []),
          ),
          summary(
            "By trust",
            tally((p) => [p.trustLevel || "none"]),
          ),
          summary(
            "By version",
            tally((p) => [p.daemonVersion || "unknown"]),
          ),
          summary(
            "By hardware",
            tally((p) => [p.chip || "unknown"]),
          ),
        ),
    providers.length === 0
      ? null
      : dataTable(
          "Connected providers, by id.",
          [
            "Provider",
            "Machine",
            "Version",
            "Hardware",
            "Trust",
            "State",
            "Models",
            "Rows busy",
            "Decode tok/s",
            "Actions",
          ],
          providers.map((p) => [
            p.providerId ?? "",
            p.machineId ?? "",
            p.daemonVersion ?? "",
            p.chip ?? "",
            [p.trustLevel ?? "", ...(p.trustReasons ?? [])].filter(Boolean).join(": "),
            `${p.state ?? ""}${p.routable === false ? " (not routable)" : ""}`,
            (p.models ?? [])
              .map((m) => ((p.loadedModels ?? []).includes(m) ? `${m} (loaded)` : m))
              .join(", "),
            `${p.busySlots ?? 0} / ${p.maxBatch ?? 0}`,
            // (A double in proto3 JSON may be "NaN" or "Infinity": Number reads those too.)
            Number(p.decodeTokensPerSecond ?? 0).toFixed(1),
            p.state === "draining" ? "—" : drainButton(main, p),
          ]),
        ),
  );
}

/**
 * Drains a provider after a confirmation: it finishes what it serves and takes nothing new (its
 * daemon is told why), then the fleet is read again.
 */
function drainButton(main: HTMLElement, p: Provider): HTMLElement {
  const button = h(
    "button",
    { type: "button", class: "quiet", "aria-label": `Drain ${p.providerId}` },
    "Drain",
  );
  return confirmedAction(
    main,
    button,
    () => `Drain ${p.providerId}? It finishes its running requests and takes no new ones.`,
    () => admin("drainProvider", { providerId: p.providerId, reason: "drained from the console" }),
    () => fleetView(main),
  );
}

/** The catalog: each model's prices, state, and whether its usage is counted here. */
export async function modelsView(main: HTMLElement): Promise<void> {
  replace(main, h("h1", {}, "Models"), h("p", { role: "status" }, "Loading…"));
  const { models = [] } = await admin("listModels", {});
  replace(
    main,
    h("h1", {}, "Models"),
    models.length === 0
      ? h("p", {}, "The catalog is empty.")
      : dataTable(
          "The catalog, by id. Prices per million tokens.",
          ["Model", "Name", "Input", "Output", "Enabled", "Usage"],
          models.map((m) => [
            m.id ?? "",
            m.displayName ?? "",
            usd(Number(m.inputMicroUsdPerMillion ?? 0)),
            usd(Number(m.outputMicroUsdPerMillion ?? 0)),
            m.enabled ? "yes" : "no",
            m.vocabularySha256 ? "counted" : "bounded",
          ]),
        ),
  );
}

/** The ledger's invariants, checked on demand (every transaction balances, every balance adds up…). */
export async function ledgerView(main: HTMLElement): Promise<void> {
  const result = h("div", { id: "ledger-result", "aria-live": "polite" });
  const run = h("button", { type: "button" }, "Verify the ledger");
  run.addEventListener("click", () => {
    run.disabled = true;
    replace(result, h("p", { role: "status" }, "Verifying…"));
    admin("verifyLedger", {}).then(
      (v) => {
        run.disabled = false;
        const checked = `${count(Number(v.transactions ?? 0))} transactions, ${count(Number(v.entries ?? 0))} entries, ${count(Number(v.accounts ?? 0))} accounts, ${count(Number(v.openReservations ?? 0))} open reservations, checked ${when(Date.now() / 1000)}.`;
        const problems = v.discrepancies ?? [];
        replace(
          result,
          h(
            "p",
            { class: v.ok ? "" : "error" },
            v.ok ? "The ledger verifies." : "The ledger does not verify.",
          ),
          h("p", {}, checked),
          problems.length === 0
            ? null
            : dataTable(
                "Discrepancies",
                ["Invariant", "Detail"],
                problems.map((d) => [d.check ?? "", d.detail ?? ""]),
              ),
        );
      },
      (error: unknown) => {
        run.disabled = false;
        replace(
          result,
          h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : "It failed."),
        );
      },
    );
  });
  replace(
    main,
    h("h1", {}, "Ledger"),
    h("p", {}, "Checks every invariant of the double-entry ledger."),
    run,
    result,
  );
}
