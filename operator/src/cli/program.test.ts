import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testIo } from "@darkbloom/cli-kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crdFiles, renderCrdsYaml } from "../api/v1alpha1/crds.js";
import { LEASES } from "../resource-types.js";
import type { KubeObject } from "../runtime/kube-api.js";
import { OPERATOR_NAMESPACE, type OperatorTestEnv, startOperatorEnv } from "../testing/operator-env.js";
import { runCli } from "./program.js";

let env: OperatorTestEnv;
let dir: string;
let kubeconfig: string;

beforeAll(async () => {
  env = await startOperatorEnv();
  dir = await mkdtemp(join(tmpdir(), "darkbloom-operator-cli-"));
  kubeconfig = join(dir, "kubeconfig");
  await writeFile(kubeconfig, env.operatorKubeconfigYaml);
});
afterAll(async () => {
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("darkbloom-operator", () => {
  it("crds prints the CustomResourceDefinitions committed under config/crd", async () => {
    const t = testIo();
    expect(await runCli(["crds"], t.io)).toBe(0);
    expect(t.stdout()).toBe(renderCrdsYaml());
    for (const file of crdFiles()) {
      expect(t.stdout()).toContain(
        file.content
          .replace(/^#.*\n/gm, "")
          .trim()
          .split("\n")
          .slice(0, 3)
          .join("\n"),
      );
    }
  });

  it.each([
    [
      ["run", "--lease-duration", "5s", "--renew-deadline", "5s"],
      "--renew-deadline must be shorter than --lease-duration",
    ],
    [["run", "--retry-period", "10s"], "--retry-period must be shorter than --renew-deadline"],
    [["run", "--lease-duration", "soon"], "expected a duration such as 500ms, 15s or 1m"],
    [["run", "--health-addr", "8081"], "expected host:port"],
    [["run", "--log-level", "loud"], "expected one of fatal, error"],
    [["run", "--unknown"], "unknown option '--unknown'"],
  ])("refuses %j with exit 64 and one line", async (argv, message) => {
    const t = testIo();
    expect(await runCli(argv, t.io)).toBe(64);
    expect(t.stderr()).toContain(message);
    expect(t.stderr().trim().split("\n")).toHaveLength(1);
  });

  it("run serves health and metrics, leads, and releases its lease on SIGTERM", async () => {
    const t = testIo({ POD_NAME: "operator-cli-test" });
    const exit = runCli(
      [
        ...["run", "--kubeconfig", kubeconfig, "--lease-namespace", OPERATOR_NAMESPACE],
        ...["--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "250ms"],
        ...["--health-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--log-level", "silent"],
      ],
      t.io,
    );
    await expect
      .poll(() => t.stdout(), { timeout: 10_000 })
      .toMatch(/health on (\S+)\/healthz, metrics on (\S+)\/metrics/);
    const [, health, metrics] = /health on (\S+)\/healthz, metrics on (\S+)\/metrics/.exec(t.stdout()) ?? [];
    expect((await fetch(`${health}/healthz`)).status).toBe(200);
    await expect.poll(async () => (await fetch(`${health}/readyz`)).status, { timeout: 10_000 }).toBe(200);
    const scraped = await (await fetch(`${metrics}/metrics`)).text();
    expect(scraped).toContain("darkbloom_operator_leader 1");
    const lease = () =>
      env.admin.get<KubeObject & { spec: { holderIdentity: string } }>(
        LEASES,
        OPERATOR_NAMESPACE,
        "darkbloom-operator",
      );
    expect((await lease()).spec.holderIdentity).toBe("operator-cli-test");
    t.signal("SIGTERM");
    expect(await exit).toBe(0);
    expect((await lease()).spec.holderIdentity).toBe("");
    expect(t.stdout()).toContain("SIGTERM: shutting down");
  });
});
