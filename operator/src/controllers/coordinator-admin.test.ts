import { once } from "node:events";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TLS_CERT, TLS_KEY } from "../testing/apiserver/tls.js";
import { CoordinatorAdmin } from "./coordinator-admin.js";

// The operator's admin calls to a coordinator serving TLS verify its certificate: against the CA
// given (the TLS Secret's ca.crt) or the public ones, for the name given. The server is a stand-in
// answering every call with an empty Connect response; its certificate (the fake API server's) is
// self-signed for 127.0.0.1 and localhost.

let server: Server;
let port: number;
const seen: (string | undefined)[] = [];

beforeAll(async () => {
  server = createServer({ cert: TLS_CERT, key: TLS_KEY }, (req, res) => {
    seen.push(req.headers.authorization);
    // An empty message in the Connect protocol's binary encoding: an empty ListReleasesResponse.
    res.writeHead(200, { "content-type": "application/proto" }).end();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  port = (server.address() as AddressInfo).port;
});
afterAll(() => {
  server?.close();
});

const admin = new CoordinatorAdmin(async () => ({ host: "127.0.0.1", port }));

/** The code of the TLS failure a call ends with, or "ok". */
async function outcome(tls: { ca: string | undefined; serverName: string }): Promise<string> {
  const client = await admin.client("darkbloom", "main", 443, "dbadm_key", tls);
  try {
    await client.listReleases({});
    return "ok";
  } catch (error) {
    const cause = (ConnectError.from(error).cause ?? error) as { code?: string };
    return cause.code ?? String(error);
  }
}

describe("admin calls to a coordinator serving TLS", () => {
  it("verify the certificate against the Secret's CA for the name given, and carry the admin key", async () => {
    expect(await outcome({ ca: TLS_CERT, serverName: "localhost" })).toBe("ok");
    expect(seen).toEqual(["Bearer dbadm_key"]);
  });

  it("refuse a certificate for another name, or one no trusted CA issued: no key is sent", async () => {
    expect(await outcome({ ca: TLS_CERT, serverName: "main.darkbloom.svc" })).toBe(
      "ERR_TLS_CERT_ALTNAME_INVALID",
    );
    expect(await outcome({ ca: undefined, serverName: "localhost" })).toMatch(
      /^(DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)$/,
    );
    expect(seen).toHaveLength(1);
  });
});
