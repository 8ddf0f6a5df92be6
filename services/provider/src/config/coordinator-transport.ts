import { isIPv4, isIPv6 } from "node:net";
import type { ResolvedConfig } from "./config.js";
import { settingLabel } from "./config.js";

/**
 * Whether a URL host is this machine: localhost, 127.0.0.0/8 or ::1 (also as an IPv4-mapped IPv6
 * address). The WHATWG URL parser has already normalised the forms (127.1, 0x7f.0.0.1, [::ffff:127.0.0.1]).
 * Subdomains of localhost are not: the resolver may send them to DNS.
 */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (host === "localhost") return true;
  if (isIPv4(host)) return host.startsWith("127.");
  if (isIPv6(host)) return host === "::1" || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(host);
  return false;
}

/** Whether talking to `url` sends what it carries in the clear over a network. */
export function cleartextToAnotherMachine(url: string): boolean {
  const parsed = new URL(url);
  return parsed.protocol === "http:" && !isLoopbackHost(parsed.hostname);
}

/** What crossing the network in the clear puts at risk, by default: the provider's account token. */
export const TOKEN_RISK = "the account token would travel unencrypted";

/**
 * What a plain http:// coordinator puts at risk for `update`: a man in the middle answers
 * GET /v1/releases/latest with a bundle URL and hashes of his own, which the installer then checks the
 * download against, faithfully.
 */
export const RELEASE_RISK =
  "the release it names (version, bundle URL and hashes) could be replaced on the way";

/**
 * Why the daemon must not talk to the configured coordinator: it is plain http:// on another machine
 * (the account token in Register, `login`'s device code and token, every prompt's envelope, the
 * release `update` installs would cross the network unencrypted and unauthenticated) and --insecure
 * was not given. One line for the preflight's exit 64, naming `risk`; undefined when there is no such
 * problem.
 */
export function coordinatorTransportProblem(
  config: { coordinatorUrl: string; insecure: boolean },
  sources?: ResolvedConfig["sources"],
  risk: string = TOKEN_RISK,
): string | undefined {
  if (config.insecure || !cleartextToAnotherMachine(config.coordinatorUrl)) return undefined;
  const setting = sources ? settingLabel("coordinatorUrl", sources.coordinatorUrl) : "the coordinator URL";
  return (
    `${setting} ${config.coordinatorUrl} is plain HTTP to another machine: ${risk}; ` +
    "use https://, or pass --insecure (DARKBLOOM_INSECURE=1) to accept that"
  );
}
