import { getJson } from "../api.js";
import { barChart } from "../chart.js";
import { h, replace } from "../dom.js";
import { count, day, usd, when } from "../format.js";
import { card, dataTable } from "../widgets.js";
import { invitesSection } from "./invites.js";

interface Account {
  account_id: string;
  name: string;
  balance_micro_usd: number;
  credited_micro_usd: number;
  earned_micro_usd: number;
  held_micro_usd: number;
}

interface UsageRecord {
  request_id: string;
  model: string;
  outcome: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  charged_micro_usd: number | null;
  created_at: number;
  /** X-Timing's phases in microseconds, recorded at settlement; null until then. */
  timing: Record<string, number> | null;
}

/** The most recent requests read for the charts and the table (one page of the usage endpoint). */
const RECENT = 100;

/** The consumer's account at a glance: its money, its recent usage by day and by model, its requests. */
export async function overviewView(main: HTMLElement): Promise<void> {
  replace(main, h("h1", {}, "Account"), h("p", { role: "status" }, "Loading…"));
  const money = h("dl", { class: "cards", id: "money" });
  const showMoney = (a: Account) =>
    replace(
      money,
      card("Balance", usd(a.balance_micro_usd)),
      card("Credited", usd(a.credited_micro_usd)),
      card("Earned", usd(a.earned_micro_usd)),
      card("Held for running requests", usd(a.held_micro_usd)),
    );
  const [account, usage, invites] = await Promise.all([
    getJson<Account>("/v1/account"),
    getJson<{ data: UsageRecord[]; has_more: boolean }>(`/v1/account/usage?limit=${RECENT}`),
    // A redeemed invite changes the balance: the figures are read again.
    invitesSection(() => void getJson<Account>("/v1/account").then(showMoney, () => {})),
  ]);
  showMoney(account);
  replace(
    main,
    h("h1", {}, account.name ? `Account: ${account.name}` : "Account"),
    h("p", { class: "hint" }, `Account ${account.account_id}`),
    money,
    ...usageSection(usage.data, usage.has_more),
    ...invites,
  );
}

function usageSection(records: UsageRecord[], more: boolean): HTMLElement[] {
  const heading = h("h2", {}, "Usage");
  if (records.length === 0) return [heading, h("p", {}, "No requests yet.")];
  const scope = more ? `the last ${records.length} requests` : `all ${records.length} requests`;
  const tokensByDay = sums(records, (r) => day(r.created_at));
  const tokensByModel = sums(records, (r) => r.model);
  return [
    heading,
    barChart(`Tokens by day, ${scope}`, tokensByDay, "tokens"),
    barChart(`Tokens by model, ${scope}`, tokensByModel, "tokens"),
    h("h2", {}, "Recent requests"),
    dataTable(
      `Newest first; ${scope}.`,
      [
        "When",
        "Model",
        "Outcome",
        { label: "Prompt", numeric: true },
        { label: "Completion", numeric: true },
        { label: "Charged", numeric: true },
        { label: "Time", numeric: true },
      ],
      records.map((r) => [
        when(r.created_at),
        r.model,
        r.outcome ?? "running",
        count(r.prompt_tokens),
        count(r.completion_tokens),
        r.charged_micro_usd === null ? "—" : usd(r.charged_micro_usd),
        r.timing === null ? "—" : phases(r.timing),
      ]),
    ),
  ];
}

/**
 * A request's time, and where it went (X-Timing's phases, the ones that took any) when opened: the
 * coordinator's own work (parse, auth, reserve, route, encrypt), waiting for a free provider (queue),
 * and the provider's (dispatch, provider_first_token).
 */
function phases(timing: Record<string, number>): HTMLElement {
  const { total = 0, ...parts } = timing;
  return h(
    "details",
    { class: "phases" },
    h("summary", {}, milliseconds(total)),
    h(
      "dl",
      {},
      ...Object.entries(parts)
        .filter(([, micros]) => micros > 0)
        .flatMap(([phase, micros]) => [
          h("dt", {}, phase.replaceAll("_", " ")),
          h("dd", {}, milliseconds(micros)),
        ]),
    ),
  );
}

function milliseconds(micros: number): string {
  const ms = micros / 1000;
  return `${ms.toLocaleString("en-US", { maximumFractionDigits: ms < 10 ? 1 : 0 })} ms`;
}

/** Tokens summed by a key, in key order. */
function sums(records: UsageRecord[], key: (r: UsageRecord) => string): { label: string; value: number }[] {
  const totals = new Map<string, number>();
  for (const r of records)
    totals.set(key(r), (totals.get(key(r)) ?? 0) + r.prompt_tokens + r.completion_tokens);
  return [...totals.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([label, value]) => ({ label, value }));
}
