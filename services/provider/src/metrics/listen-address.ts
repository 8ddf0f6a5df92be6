import { isIPv4, isIPv6 } from "node:net";

/** Where a listener binds: an IP address (or localhost) and a port (0: any free one). */
export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * Where `darkbloom serve` answers /metrics unless told otherwise: loopback, so that only this machine
 * reads what the daemon serves and how busy it is, on the port of OpenTelemetry's Prometheus exporter.
 */
export const DEFAULT_METRICS_LISTEN = "127.0.0.1:9464";

/** The value that turns the listener off. */
export const METRICS_LISTEN_OFF = "off";

/** A listen address that cannot be read; the message completes "<setting> …". */
export class ListenAddressError extends Error {
  override readonly name = "ListenAddressError";
}

const FORMS = "HOST:PORT (HOST an IP address or localhost, IPv6 in brackets; PORT 0 to 65535)";

/**
 * Reads `off` or `HOST:PORT` (`127.0.0.1:9464`, `0.0.0.0:9464`, `[::1]:9464`, `localhost:9464`).
 * Host names other than localhost are refused: what a name resolves to can change under the daemon,
 * and which interface the metrics are exposed on must be exactly what the operator wrote.
 * Returns undefined for off.
 */
export function parseListenAddress(raw: string): ListenAddress | undefined {
  const text = raw.trim();
  if (text.toLowerCase() === METRICS_LISTEN_OFF) return undefined;
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  if (!match) throw new ListenAddressError(`must be ${METRICS_LISTEN_OFF} or ${FORMS}`);
  const [, bracketed, plain, portText] = match;
  const port = Number(portText);
  if (port > 65_535) throw new ListenAddressError(`must have a port from 0 to 65535`);
  if (bracketed !== undefined) {
    if (!isIPv6(bracketed)) throw new ListenAddressError(`must have an IPv6 address in brackets`);
    return { host: bracketed.toLowerCase(), port };
  }
  const host = (plain ?? "").toLowerCase();
  if (host === "localhost" || isIPv4(host)) return { host, port };
  throw new ListenAddressError(`must be ${METRICS_LISTEN_OFF} or ${FORMS}`);
}

/** The canonical text of an address (IPv6 in brackets), or off. */
export function formatListenAddress(address: ListenAddress | undefined): string {
  if (!address) return METRICS_LISTEN_OFF;
  return `${isIPv6(address.host) ? `[${address.host}]` : address.host}:${address.port}`;
}
