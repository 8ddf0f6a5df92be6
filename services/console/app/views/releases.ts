import type { ReleaseJson } from "@darkbloom/protocol/admin/v1";
import { admin } from "../api.js";
import { h, replace } from "../dom.js";
import { confirmedAction, dataTable } from "../widgets.js";

type Release = ReleaseJson;

/**
 * The daemon releases: the active ones are the binary allowlist (a daemon whose binary hash is not
 * among them attests as unknown), and an active release's minimum version de-routes older daemons.
 * Activating or deactivating one asks first: it changes which machines serve.
 */
export async function releasesView(main: HTMLElement): Promise<void> {
  replace(main, h("h1", {}, "Releases"), h("p", { role: "status" }, "Loading…"));
  const { releases = [] } = await admin("listReleases", {});
  replace(
    main,
    h("h1", {}, "Releases"),
    releases.length === 0
      ? h("p", {}, "No release is registered: every daemon binary is accepted as unknown.")
      : dataTable(
          "Newest first. The active releases' binary hashes are the allowlist.",
          ["Version", "Platform", "Binary SHA-256", "Minimum daemon", "Registered", "State"],
          releases.map((r) => [
            r.version ?? "",
            r.platform ?? "",
            h("code", { title: r.binarySha256 ?? "" }, (r.binarySha256 ?? "").slice(0, 16)),
            r.minProviderVersion || "—",
            r.createdAt ? new Date(r.createdAt).toLocaleString("en-US") : "",
            toggle(main, r),
          ]),
        ),
  );
}

function toggle(main: HTMLElement, r: Release): HTMLElement {
  const name = `${r.version} (${r.platform})`;
  const active = r.active === true;
  const button = h(
    "button",
    { type: "button", class: "quiet", "aria-label": `${active ? "Deactivate" : "Activate"} ${name}` },
    active ? "Active: deactivate" : "Inactive: activate",
  );
  return confirmedAction(
    main,
    button,
    () =>
      active
        ? `Deactivate ${name}? Daemons running this binary stop being allowlisted.`
        : `Activate ${name}? Its binary joins the allowlist.`,
    () => admin("setReleaseActive", { version: r.version, platform: r.platform, active: !active }),
    () => releasesView(main),
  );
}
