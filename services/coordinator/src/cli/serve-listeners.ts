import { resolve } from "node:path";
import type { Command } from "commander";
import type { CoordinatorConfig } from "../config.js";
import { UsageError } from "./io.js";
import { booleanValue, fromEnv, port } from "./parse.js";

// How `serve` listens besides its main port's address: TLS on every port (or all but the peer
// port), and the replicas' PeerService on a port of its own. Flags and environment variables (the
// flag wins).

export type ListenerConfig = Partial<
  Pick<CoordinatorConfig, "tlsCertFile" | "tlsKeyFile" | "peerPort" | "peerPlaintext">
>;

/** Adds the TLS and peer-port flags to `serve`. */
export function addListenerOptions(command: Command): Command {
  return command
    .option(
      "--tls-cert <file>",
      "PEM certificate chain every port serves TLS with (ALPN h2 and http/1.1; plaintext is refused), " +
        "reloaded when the file changes; needs --tls-key (env DARKBLOOM_TLS_CERT; default: plain HTTP/1.1 and h2c)",
    )
    .option("--tls-key <file>", "PEM private key of --tls-cert, unencrypted (env DARKBLOOM_TLS_KEY)")
    .option(
      "--peer-port <port>",
      "serve the replicas' PeerService on this port (at --host, TLS as the main port) and no longer on " +
        "the main one, and advertise it to the other replicas (env DARKBLOOM_PEER_PORT; default: the main port)",
      port,
    )
    .option(
      "--peer-plaintext",
      "serve --peer-port without TLS (h2c) even with --tls-cert, and advertise it as http://: for replicas " +
        "that dial each other by pod IP, which the certificate does not name (env DARKBLOOM_PEER_PLAINTEXT=true|false)",
    );
}

/**
 * The TLS files (made absolute: their directories are watched) and the peer port, given by flag or
 * environment, checked against the main port and the advertised URL.
 */
export function listenersFrom(
  opts: Readonly<Record<string, unknown>>,
  env: Readonly<Record<string, string | undefined>>,
  main: { port: number; advertiseUrl: string | undefined },
): ListenerConfig {
  const tlsCertFile = (opts.tlsCert as string | undefined) ?? fromEnv(env, "DARKBLOOM_TLS_CERT", String);
  const tlsKeyFile = (opts.tlsKey as string | undefined) ?? fromEnv(env, "DARKBLOOM_TLS_KEY", String);
  if ((tlsCertFile === undefined) !== (tlsKeyFile === undefined)) {
    throw new UsageError("--tls-cert and --tls-key (DARKBLOOM_TLS_CERT, DARKBLOOM_TLS_KEY) go together");
  }
  const peerPort = (opts.peerPort as number | undefined) ?? fromEnv(env, "DARKBLOOM_PEER_PORT", port);
  if (peerPort !== undefined && peerPort !== 0) {
    if (peerPort === main.port) throw new UsageError("--peer-port must be another port than --port");
    // The peers reach PeerService only on the peer port: an advertised URL naming another port would
    // send them to one that answers 404. (A URL without a port is given the peer port.)
    const advertised = main.advertiseUrl === undefined ? "" : new URL(main.advertiseUrl).port;
    if (advertised !== "" && Number(advertised) !== peerPort) {
      throw new UsageError(
        `--advertise-url names port ${advertised}, but the other replicas reach this one on --peer-port ${peerPort}: name that port or none`,
      );
    }
  }
  const peerPlaintext =
    (opts.peerPlaintext as boolean | undefined) ?? fromEnv(env, "DARKBLOOM_PEER_PLAINTEXT", booleanValue);
  if (peerPlaintext) {
    // Without a port of its own PeerService shares the main port, and so its TLS.
    if (peerPort === undefined) {
      throw new UsageError(
        "--peer-plaintext (DARKBLOOM_PEER_PLAINTEXT) needs --peer-port: only a peer port of its own can skip TLS",
      );
    }
    // The peers would dial TLS to a port that refuses it.
    if (main.advertiseUrl !== undefined && new URL(main.advertiseUrl).protocol === "https:") {
      throw new UsageError(
        "--advertise-url is https://, but --peer-plaintext serves the peer port without TLS: advertise http://",
      );
    }
  }
  const tls =
    tlsCertFile !== undefined && tlsKeyFile !== undefined
      ? { tlsCertFile: resolve(tlsCertFile), tlsKeyFile: resolve(tlsKeyFile) }
      : {};
  return {
    ...tls,
    ...(peerPort === undefined ? {} : { peerPort }),
    ...(peerPlaintext ? { peerPlaintext } : {}),
  };
}
