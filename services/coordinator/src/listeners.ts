// The coordinator's ports: the main one (every route), the peer port when one is set (PeerService
// only, so that a network policy can keep everyone but the other replicas from it), both serving TLS
// when a certificate is given (the peer port not with peerPlaintext), which is reloaded as its files
// change.
import type { Closers } from "./closers.js";
import type { CoordinatorConfig } from "./config.js";
import { createApp } from "./http/app.js";
import { type ConnectHandlerOptions, createConnectHandler } from "./http/connect-handler.js";
import { type ListeningServer, type ListenOptions, listenHttp } from "./http/protocol-sniffing-server.js";
import {
  CertificateError,
  CertificateReloader,
  type LoadedCertificate,
  loadCertificate,
} from "./http/tls-certificate.js";
import type { Logger } from "./log.js";
import { connectRoutes, httpRoutes, peerRoutes, type RouteTargets } from "./routes.js";

export interface Listeners {
  /** The main port's URL (https:// with TLS). */
  url: string;
  /** The peer port's URL, when PeerService has a port of its own. */
  peerUrl: string | undefined;
  /** Where the other replicas reach this one's PeerService: the provider directory's advertise_url. */
  advertiseUrl: string;
  /** The server is about to stop: HTTP/1.1 responses from now on say `Connection: close`. */
  drain(): void;
  /**
   * Both ports stop accepting connections; resolves once their HTTP/1.1 connections are gone (their
   * requests served), or at the deadline. Called once the drain is over: until then the ports still
   * accept, since peers dial this replica directly to forward to its providers while they drain.
   */
  stopAccepting(deadlineMs: number): Promise<void>;
}

/**
 * The certificate the ports serve, read and checked before anything starts (a bad file is a
 * one-line start failure, not a server that cannot handshake).
 */
export async function serverCertificate(config: CoordinatorConfig): Promise<LoadedCertificate | undefined> {
  const { tlsCertFile, tlsKeyFile } = config;
  if (tlsCertFile === undefined && tlsKeyFile === undefined) return undefined;
  if (tlsCertFile === undefined || tlsKeyFile === undefined) {
    throw new CertificateError("TLS needs both a certificate file and a key file");
  }
  return loadCertificate({ certFile: tlsCertFile, keyFile: tlsKeyFile });
}

/** Opens the ports (each one's closer registered as it opens) and starts the certificate reloads. */
export async function startListeners(
  t: RouteTargets,
  certificate: LoadedCertificate | undefined,
  closers: Closers,
): Promise<Listeners> {
  const { config, log, metrics } = t;
  const connect = (routes: ConnectHandlerOptions["routes"]) =>
    createConnectHandler({
      // One Connect message (a provider's, or a consumer's typed request) is no larger than an HTTP
      // body; the default (4 GiB) let a 5-byte envelope header allocate gigabytes, and a compressed
      // message inflate to as much, before any authentication or Register.
      readMaxBytes: config.bodyLimitBytes,
      sendTimeoutMs: config.sendTimeoutMs,
      onStall: () => metrics.connectionLimits.inc({ limit: "send_timeout" }),
      log,
      addressOf: t.addressOf,
      routes,
    });
  const common: ListenOptions = {
    limits: config,
    onLimit: (limit) => metrics.connectionLimits.inc({ limit }),
    onAcceptError: acceptErrorReporter(log),
    tls: certificate,
  };
  const main = connect(connectRoutes(t));
  const server = await listenHttp(createApp(httpRoutes(t), main, log), config.host, config.port, {
    ...common,
    isRequestStream: main.isRequestStream,
  });
  closers.add("server", () => server.close());
  let peer: ListeningServer | undefined;
  // With peerPlaintext the peer port speaks HTTP/1.1 and h2c, and its URL (the advertised one by
  // default) is http://: the peers dial pod IPs, which the public certificate does not name.
  const peerTls = config.peerPlaintext ? undefined : certificate;
  if (config.peerPort !== undefined) {
    const peers = connect(peerRoutes(t));
    // Anything but PeerService is an unknown route there.
    peer = await listenHttp(createApp([], peers, log), config.host, config.peerPort, {
      ...common,
      tls: peerTls,
      isRequestStream: peers.isRequestStream,
    });
    const listening = peer;
    closers.add("peer server", () => listening.close());
  }
  if (certificate && config.tlsCertFile !== undefined && config.tlsKeyFile !== undefined) {
    const reloader = new CertificateReloader(
      { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile },
      certificate,
      (next) => {
        server.setCertificate(next);
        if (peerTls) peer?.setCertificate(next);
      },
      log,
    );
    reloader.start();
    closers.add("TLS certificate reloads", async () => reloader.stop());
  }
  return {
    url: server.url,
    peerUrl: peer?.url,
    advertiseUrl: advertisedUrl(config.advertiseUrl, peer ?? server, peer !== undefined),
    drain: () => {
      server.drain();
      peer?.drain();
    },
    stopAccepting: async (deadlineMs) => {
      await Promise.all([server.stopAccepting(deadlineMs), peer?.stopAccepting(deadlineMs)]);
    },
  };
}

/**
 * The URL the peers are given: the one configured, else the listening one. With a peer port, a
 * configured URL without a port is given the peer port (the CLI refuses one with another port).
 */
export function advertisedUrl(
  configured: string | undefined,
  listening: ListeningServer,
  peerPort: boolean,
): string {
  if (configured === undefined) return listening.url;
  const url = new URL(configured);
  if (!peerPort || url.port !== "") return configured;
  url.port = String(listening.port);
  const href = url.toString();
  return configured.endsWith("/") ? href : href.replace(/\/$/, "");
}

/** Out of file descriptors, accepts fail for every new connection: one line per burst, not each. */
function acceptErrorReporter(log: Logger): (e: Error) => void {
  let acceptErrors = 0;
  return (e) => {
    if (acceptErrors++ > 0) return;
    log.warn({ err: e.message }, "accepting connections failed; lower --max-connections");
    setTimeout(() => {
      if (acceptErrors > 1) log.warn({ count: acceptErrors - 1 }, "more accepts failed");
      acceptErrors = 0;
    }, 10_000).unref();
  };
}
