import { ApiError, getJson, postJson } from "../api.js";
import { barChart } from "../chart.js";
import { h, replace } from "../dom.js";
import { count, day, usd, when } from "../format.js";
import { card, dataTable } from "../widgets.js";

interface Earnings {
  earned_micro_usd: number;
  provider_earnings_micro_usd: number;
  referral_earnings_micro_usd: number;
  requests_served: number;
  data: {
    request_id: string;
    model: string;
    prompt_tokens: number;
    completion_tokens: number;
    earned_micro_usd: number;
    withheld_micro_usd: number;
    settled_at: number;
  }[];
  has_more: boolean;
}

interface Machine {
  provider_id: string;
  machine_id: string;
  daemon_version: string;
  connected_at: number;
  state: string;
  models: { id: string; loaded: boolean }[];
  trust_level: string;
  routable: boolean;
  reasons: { code: string; message: string }[];
  last_challenge: { issued_at: string; completed_at: string | null; result: string } | null;
  hardware: { accelerator?: string; chip?: string } | null;
}

/**
 * For provider owners: linking a machine (approving the code its `darkbloom login` shows: the
 * device-login flow, RFC 8628) and what the account's machines earned, over time and by request.
 */
export async function providerView(main: HTMLElement): Promise<void> {
  replace(main, h("h1", {}, "Providing"), h("p", { role: "status" }, "Loading…"));
  const [earnings, machines] = await Promise.all([
    getJson<Earnings>("/v1/account/earnings?limit=100"),
    getJson<{ data: Machine[] }>("/v1/account/machines"),
  ]);
  replace(
    main,
    h("h1", {}, "Providing"),
    h("h2", {}, "Machines"),
    machinesTable(machines.data),
    linkForm(),
    h("h2", {}, "Earnings"),
    h(
      "dl",
      { class: "cards" },
      card("Earned in all", usd(earnings.earned_micro_usd)),
      card("From serving", usd(earnings.provider_earnings_micro_usd)),
      card("From referrals", usd(earnings.referral_earnings_micro_usd)),
      card("Requests served", count(earnings.requests_served)),
    ),
    ...served(earnings),
  );
}

/**
 * The account's machines connected now, with how the coordinator judges each: its trust level and
 * the reasons (a machine that is not routable serves nothing), and its last challenge.
 */
function machinesTable(machines: Machine[]): HTMLElement {
  if (machines.length === 0) {
    return h("p", {}, "None of this account's machines is connected. Link one below, then start its daemon.");
  }
  return dataTable(
    "Connected now, by provider id.",
    ["Machine", "Version", "Hardware", "Trust", "Last challenge", "Models", "State"],
    machines.map((m) => [
      h("span", { title: m.provider_id }, m.machine_id),
      m.daemon_version,
      [m.hardware?.chip, m.hardware?.accelerator].filter(Boolean).join(", ") || "unknown",
      trust(m),
      m.last_challenge === null
        ? "none yet"
        : `${m.last_challenge.result} ${when(Date.parse(m.last_challenge.issued_at) / 1000)}`,
      m.models.map((x) => (x.loaded ? `${x.id} (loaded)` : x.id)).join(", "),
      `${m.state}${m.routable ? "" : " (not routable)"}`,
    ]),
  );
}

function trust(m: Machine): HTMLElement {
  if (m.reasons.length === 0) return h("span", {}, m.trust_level);
  return h(
    "span",
    {},
    m.trust_level,
    ": ",
    ...m.reasons.flatMap((r, i) => [i > 0 ? ", " : null, h("abbr", { title: r.message }, r.code)]),
  );
}

/** The code a daemon's `darkbloom login` prints: approving links that machine to this account. */
function linkForm(): HTMLElement {
  const code = h("input", {
    id: "user-code",
    name: "user-code",
    type: "text",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "user-code-hint",
  });
  const status = h("p", { id: "link-status", role: "status", "aria-live": "polite" });
  const approve = h("button", { type: "submit" }, "Approve");
  const deny = h("button", { type: "button", class: "quiet" }, "Deny");
  const form = h(
    "form",
    { "aria-labelledby": "link-title" },
    h("h2", { id: "link-title" }, "Link a machine"),
    h(
      "div",
      { class: "row" },
      h("label", { for: "user-code" }, "Code shown by darkbloom login"),
      code,
      h(
        "p",
        { id: "user-code-hint", class: "hint" },
        "Approve only a code you started yourself: the machine then serves, and earns, for this account.",
      ),
    ),
    approve,
    " ",
    deny,
    status,
  );
  const answer = (path: string, done: string) => {
    const userCode = code.value.trim();
    if (userCode === "") return;
    approve.disabled = deny.disabled = true;
    postJson(path, { user_code: userCode }).then(
      () => {
        status.className = "";
        replace(status, done);
        code.value = "";
        approve.disabled = deny.disabled = false;
      },
      (error: unknown) => {
        status.className = "error";
        replace(status, error instanceof ApiError ? error.message : "It failed.");
        approve.disabled = deny.disabled = false;
        code.focus();
      },
    );
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    answer("/v1/device/approve", "Approved: the machine is linked to this account.");
  });
  deny.addEventListener("click", () => answer("/v1/device/deny", "Denied: the machine was not linked."));
  return form;
}

function served(earnings: Earnings): HTMLElement[] {
  if (earnings.data.length === 0) return [h("p", {}, "No requests served yet.")];
  const scope = earnings.has_more
    ? `the last ${earnings.data.length} requests served`
    : "every request served";
  const byDay = new Map<string, number>();
  for (const r of earnings.data)
    byDay.set(day(r.settled_at), (byDay.get(day(r.settled_at)) ?? 0) + r.earned_micro_usd);
  const bars = [...byDay.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([label, micro]) => ({ label, value: micro / 1_000_000 }));
  return [
    barChart(`Earned by day (USD), ${scope}`, bars, "USD"),
    dataTable(
      `Requests served, newest first; ${scope}.`,
      [
        "Settled",
        "Model",
        { label: "Tokens", numeric: true },
        { label: "Earned", numeric: true },
        { label: "Withheld", numeric: true },
      ],
      earnings.data.map((r) => [
        when(r.settled_at),
        r.model,
        count(r.prompt_tokens + r.completion_tokens),
        usd(r.earned_micro_usd),
        usd(r.withheld_micro_usd),
      ]),
    ),
  ];
}
