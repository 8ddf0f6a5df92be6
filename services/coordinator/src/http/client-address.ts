import { isIP, isIPv6 } from "node:net";
import { createContextKey } from "@connectrpc/connect";
import type { HttpRequest } from "./types.js";

/** The client address of a Connect call (set by the Connect handler from the HTTP request). */
export const CLIENT_ADDRESS = createContextKey<string>("unknown", { description: "client address" });

/**
 * The address a request came from, for per-address limits. It is the socket's peer unless
 * `trustedProxies` > 0 says that many proxies stand in front and append to X-Forwarded-For: then it
 * is the entry the farthest trusted proxy appended. Without that setting the header is ignored, as
 * anyone can write it; behind a proxy every client then shares the proxy's address.
 */
export function clientAddress(req: HttpRequest, trustedProxies: number): string {
  const peer = req.socket?.remoteAddress ?? "unknown";
  if (trustedProxies <= 0) return peer;
  const header = req.headers["x-forwarded-for"];
  const value = Array.isArray(header) ? header.join(",") : header;
  if (!value) return peer;
  const hops = value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  // Each proxy appends the address it was reached from: with N trusted proxies the client is the
  // Nth entry from the right (entries further left were written by the client and prove nothing).
  const entry = hops[Math.max(0, hops.length - trustedProxies)];
  return entry !== undefined && isIP(entry) !== 0 ? entry : peer;
}

/**
 * The key an address is counted under by per-address limits (connections, failed credentials):
 * IPv4 addresses (also IPv4-mapped IPv6) as they are, IPv6 by /64, the block one subscriber is usually
 * given (per address, one host could take thousands).
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return mapped[1];
  // A zone index (fe80::1%eth0) names the local interface, not part of the address.
  const bare = address.split("%", 1)[0] ?? address;
  if (!isIPv6(bare)) return address;
  const [head = "", tail] = bare.split("::", 2) as [string, string | undefined];
  const groups = head === "" ? [] : head.split(":");
  if (tail !== undefined) {
    const after = tail === "" ? [] : tail.split(":");
    // A trailing dotted quad is two groups; only the first four groups matter here.
    const width = after.reduce((n, g) => n + (g.includes(".") ? 2 : 1), 0);
    groups.push(...Array<string>(Math.max(0, 8 - groups.length - width)).fill("0"), ...after);
  }
  const prefix = groups.slice(0, 4).map((g) => Number.parseInt(g, 16).toString(16));
  return `${prefix.join(":")}::/64`;
}
