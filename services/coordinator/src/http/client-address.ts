import { isIP } from "node:net";
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
