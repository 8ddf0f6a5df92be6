import { ApiError, getJson, postJson } from "../api.js";
import { h, replace } from "../dom.js";
import { usd } from "../format.js";

/**
 * Invites and referrals: the account's own referral code (made on first use, to give to others),
 * redeeming an invite code (credit), and naming the account that referred this one (once).
 */
export async function invitesSection(onCredited: () => void): Promise<HTMLElement[]> {
  const { referral_code: code } = await getJson<{ referral_code: string }>("/v1/referrals/code");
  return [
    h("h2", {}, "Invites and referrals"),
    h("p", {}, "Your referral code: ", h("code", { id: "referral-code" }, code)),
    codeForm(
      "invite-code",
      "Redeem an invite code",
      "Redeem",
      "/v1/invites/redeem",
      (r: { credited_micro_usd: number }) => {
        onCredited();
        return `Redeemed: ${usd(r.credited_micro_usd)} credited.`;
      },
    ),
    codeForm(
      "referrer-code",
      "Referred by (their referral code)",
      "Apply",
      "/v1/referrals/apply",
      (r: { applied: boolean }) =>
        r.applied ? "Applied: thank you." : "This account already names its referrer.",
    ),
  ];
}

function codeForm<T>(
  id: string,
  label: string,
  action: string,
  path: string,
  done: (response: T) => string,
): HTMLElement {
  const input = h("input", {
    id,
    name: id,
    type: "text",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const status = h("p", { id: `${id}-status`, role: "status", "aria-live": "polite" });
  const submit = h("button", { type: "submit" }, action);
  const form = h(
    "form",
    {},
    h("div", { class: "row" }, h("label", { for: id }, label), input),
    submit,
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const code = input.value.trim();
    if (code === "") return;
    submit.disabled = true;
    postJson<T>(path, { code }).then(
      (response) => {
        submit.disabled = false;
        input.value = "";
        status.className = "";
        replace(status, done(response));
      },
      (error: unknown) => {
        submit.disabled = false;
        status.className = "error";
        replace(status, error instanceof ApiError ? error.message : "It failed.");
      },
    );
  });
  return form;
}
