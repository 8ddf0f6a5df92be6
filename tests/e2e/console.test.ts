// The web console in a real browser (Debian's Chromium driven by playwright-core: headless, no
// downloads) against a real local network: signing in with an API key, the account's balance and
// usage, keys, the playground's streamed chat verified in the page, linking a machine, the
// operator's views and a drain; the page reaches nothing but its own origin, runs under a strict
// Content-Security-Policy, keeps the key out of every URL, is small, and has no serious axe-core
// violation. Each page's screenshot is kept under artifacts/console/ (CI's artifacts).

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { request } from "node:http";
import { createRequire } from "node:module";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { loadConsole } from "@darkbloom/console";
import { ScriptedProvider } from "@darkbloom/testing";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed, type TestbedAccount } from "../testbed/index.js";

const CHROMIUM = process.env.DARKBLOOM_CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOTS = join(import.meta.dirname, "..", "..", "artifacts", "console");
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** Chromium is a Debian package CI installs; elsewhere its absence skips, unless it is required. */
function browserTestable(): boolean {
  if (existsSync(CHROMIUM)) return true;
  if (process.env.DARKBLOOM_BROWSER_REQUIRED === "1") throw new Error(`no Chromium at ${CHROMIUM}`);
  return false;
}

describe.skipIf(!browserTestable())("the console in Chromium", () => {
  let testbed: Testbed;
  let alice: TestbedAccount;
  let browser: Browser;
  let origin: string;

  beforeAll(async () => {
    testbed = await startTestbed({ providers: [{ models: ["tiny"] }] });
    alice = await testbed.createAccount(100_000_000n, "Alice");
    origin = new URL(testbed.baseUrl).origin;
    // One request, so the account has usage to show.
    await testbed.openai(alice.apiKey).chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 4,
    });
    // Its X-Timing phases are recorded about a second after settlement. (Asked twice a second: the
    // money endpoints allow an account 5 a second, and the views below need their share.)
    for (let tries = 0; ; tries++) {
      const usage = await fetch(`${testbed.baseUrl}/account/usage`, {
        headers: { authorization: `Bearer ${alice.apiKey}` },
      });
      if (((await usage.json()) as { data?: { timing: unknown }[] }).data?.[0]?.timing) break;
      if (tries === 30) throw new Error("the request's timing was not recorded in 15 s");
      await new Promise((r) => setTimeout(r, 500));
    }
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
    });
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await testbed?.stop();
  }, 60_000);

  /** A fresh tab that records every request it makes and every CSP violation or page error. */
  async function open(): Promise<{ page: Page; urls: string[]; problems: string[] }> {
    const context = await browser.newContext();
    const page = await context.newPage();
    const urls: string[] = [];
    const problems: string[] = [];
    page.on("request", (r) => urls.push(r.url()));
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    await page.goto(`${origin}/console`);
    return { page, urls, problems };
  }

  /**
   * Keeps the page's screenshot (CI's artifact) and runs axe-core on it (WCAG 2 A and AA rules):
   * no serious or critical violation. axe is evaluated through the DevTools protocol, which the
   * page's CSP does not govern, so the console's own policy stays as strict as it is served.
   */
  async function inspect(page: Page, name: string): Promise<void> {
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
    await page.evaluate(AXE);
    const violations = (await page.evaluate(
      `axe.run(document, { runOnly: ["wcag2a", "wcag2aa"] }).then((r) => r.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => v.id + ": " + v.nodes.map((n) => n.target.join(" ")).join(", ")))`,
    )) as string[];
    expect(violations, name).toEqual([]);
  }

  async function signIn(page: Page, key: string, heading: string): Promise<void> {
    await page.getByLabel("API key").fill(key);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: heading }).waitFor();
  }

  it("signs in with an API key, shows the balance and usage, and signs out", async () => {
    const { page, urls, problems } = await open();
    await inspect(page, "sign-in");
    await page.getByLabel("API key").fill("dbk_not_a_key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.getByRole("status").textContent()).toMatch(/not accepted/);

    await page.getByLabel("API key").fill(alice.apiKey);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Account: Alice" }).waitFor();
    const figure = (label: string) => page.locator(".card", { hasText: label }).locator("dd").textContent();
    expect(await figure("Credited")).toBe("$100.00");
    // Less the request's charge (a fraction of a cent: the minimum charge).
    expect(await figure("Balance")).toMatch(/^\$(99\.\d\d|100\.00)$/);
    expect(await page.locator("table:not(.visually-hidden) tbody tr").count()).toBe(1);
    expect(await page.locator("table:not(.visually-hidden) tbody td").nth(1).textContent()).toBe("tiny");
    // Its time, and where it went (X-Timing's phases) when opened.
    const time = page.locator("table:not(.visually-hidden) tbody details.phases");
    expect(await time.locator("summary").textContent()).toMatch(/^[\d.,]+ ms$/);
    await time.locator("summary").click();
    expect(await time.locator("dt").allTextContents()).toContain("provider first token");
    // The charts' figures are in tables a screen reader reads.
    expect(await page.locator("figure table caption").allTextContents()).toEqual([
      "Tokens by day, all 1 requests",
      "Tokens by model, all 1 requests",
    ]);
    await inspect(page, "account");

    // The key is in this tab's session storage only, and in no URL the page requested.
    // (Expressions evaluated in the page, where these globals are.)
    expect(await page.evaluate("Object.keys(sessionStorage).sort()")).toEqual([
      "darkbloom.console.apiKey",
      "darkbloom.console.kind",
    ]);
    expect(await page.evaluate("localStorage.length + document.cookie.length")).toBe(0);
    for (const url of urls) {
      expect(new URL(url).origin).toBe(origin);
      expect(url).not.toContain(alice.apiKey);
    }

    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    expect(await page.evaluate("sessionStorage.length")).toBe(0);
    expect(
      problems.filter((p) => !p.includes("401")),
      problems.join("\n"),
    ).toEqual([]);
  });

  it("redeems an invite code (the balance follows) and shows the account's referral code", async () => {
    const bob = await testbed.createAccount(0n, "Bob");
    const invite = await testbed.admin.createInvite({ creditMicroUsd: 5_000_000n, maxUses: 1 });
    const { page, problems } = await open();
    await page.getByLabel("API key").fill(bob.apiKey);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Account: Bob" }).waitFor();
    expect(await page.locator("#referral-code").textContent()).toMatch(/\S{4,}/);
    const balance = () => page.locator(".card", { hasText: "Balance" }).locator("dd").textContent();
    expect(await balance()).toBe("$0.00");
    await page.getByLabel("Redeem an invite code").fill(invite.code);
    await page.getByRole("button", { name: "Redeem" }).click();
    await expect
      .poll(() => page.locator("#invite-code-status").textContent())
      .toBe("Redeemed: $5.00 credited.");
    await expect.poll(balance).toBe("$5.00");
    // Once only: the same code again is refused with the coordinator's reason.
    await page.getByLabel("Redeem an invite code").fill(invite.code);
    await page.getByRole("button", { name: "Redeem" }).click();
    await expect.poll(() => page.locator("#invite-code-status").getAttribute("class")).toBe("error");
    expect(problems.filter((p) => !p.includes("status of 4"))).toEqual([]);
  });

  it("creates a key shown once, lists it without its secret, and revokes it", async () => {
    const { page, problems } = await open();
    await page.getByLabel("API key").fill(alice.apiKey);
    await page.keyboard.press("Enter");
    await page.getByRole("link", { name: "API keys" }).click();
    await page.getByRole("heading", { name: "API keys" }).waitFor();
    expect(await page.getByRole("link", { name: "API keys" }).getAttribute("aria-current")).toBe("page");
    await page.getByLabel("Name (optional)").fill("ci laptop");
    await page.getByRole("button", { name: "Create key" }).click();
    const shown = page.getByLabel("New API key");
    await shown.waitFor();
    const secret = await shown.inputValue();
    expect(secret).toMatch(/^dbk_/);
    await inspect(page, "keys");
    expect(
      (await fetch(`${origin}/v1/account`, { headers: { authorization: `Bearer ${secret}` } })).status,
    ).toBe(200);
    // Listed by name and first characters only.
    const row = page.locator("tbody tr", { hasText: "ci laptop" });
    expect(await row.count()).toBe(1);
    expect(await page.locator("table").textContent()).not.toContain(secret);
    // Revoking asks first; declined, nothing changes.
    page.once("dialog", (d) => void d.dismiss());
    await row.getByRole("button", { name: /^Revoke ci laptop/ }).click();
    expect(
      (await fetch(`${origin}/v1/account`, { headers: { authorization: `Bearer ${secret}` } })).status,
    ).toBe(200);
    page.once("dialog", (d) => void d.accept());
    await row.getByRole("button", { name: /^Revoke ci laptop/ }).click();
    await page
      .locator("tbody tr", { hasText: "ci laptop" })
      .getByText(/^revoked /)
      .waitFor();
    expect(
      (await fetch(`${origin}/v1/account`, { headers: { authorization: `Bearer ${secret}` } })).status,
    ).toBe(401);
    expect(problems).toEqual([]);
  });

  it("streams a chat in the playground and verifies the answer in the page, key pinned to the attestation", async () => {
    const { page, urls, problems } = await open();
    await signIn(page, alice.apiKey, "Account: Alice");
    await page.getByRole("link", { name: "Playground" }).click();
    await page.getByRole("heading", { name: "Playground" }).waitFor();
    await page.getByLabel("Model").selectOption("tiny");
    await page.getByLabel("Message").fill("Say hello.");
    await page.getByLabel("Most tokens in the answer").fill("0");
    await page.getByRole("button", { name: "Send" }).click();
    await expect.poll(() => page.locator("#chat-status").textContent()).toMatch(/whole number from 1/);
    await page.getByLabel("Most tokens in the answer").fill("12");
    await page.getByRole("button", { name: "Send" }).click();
    await page.getByRole("heading", { name: "Verified" }).waitFor({ timeout: 60_000 });
    expect((await page.locator("#answer").textContent())?.length).toBeGreaterThan(0);
    // The trust level shown is the one the coordinator publishes for the provider that answered.
    const published = (await (await fetch(`${origin}/v1/providers/attestation`)).json()) as {
      data: { trust_level: string }[];
    };
    expect(await page.locator("#verdict-trust").textContent()).toBe(published.data[0]?.trust_level);
    // The chat and the attestation list went to this origin only (the verifier ran in the page).
    expect(urls.some((u) => u.endsWith("/v1/chat/completions"))).toBe(true);
    expect(urls.some((u) => u.endsWith("/v1/providers/attestation"))).toBe(true);
    expect(urls.every((u) => new URL(u).origin === origin)).toBe(true);
    await inspect(page, "playground");

    // A model nobody serves: the coordinator's refusal is shown, nothing is verified.
    await page.evaluate(`document.getElementById("model").add(new Option("ghost", "ghost"))`);
    await page.getByLabel("Model").selectOption("ghost");
    await page.getByRole("button", { name: "Send" }).click();
    await expect.poll(() => page.locator("#chat-status").getAttribute("class")).toBe("error");
    expect(await page.locator("#verdict").textContent()).toBe("");
    expect(problems.filter((p) => !p.includes("status of 404"))).toEqual([]);
  });

  it("links a provider machine by approving its device-login code, and shows the earnings", async () => {
    const { page, problems } = await open();
    await page.getByLabel("API key").fill(alice.apiKey);
    await page.keyboard.press("Enter");
    await page.getByRole("link", { name: "Providing" }).click();
    await page.getByRole("heading", { name: "Link a machine" }).waitFor();
    expect(await page.getByText("No requests served yet.").count()).toBe(1);
    // A daemon's `darkbloom login` starts the flow and shows the user code.
    const started = (await (
      await fetch(`${origin}/v1/device/code`, { method: "POST", body: "{}" })
    ).json()) as {
      device_code: string;
      user_code: string;
      interval: number;
    };
    const token = () =>
      fetch(`${origin}/v1/device/token`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ device_code: started.device_code }),
      });
    expect((await token()).status).toBe(400); // authorization_pending
    await page.getByLabel("Code shown by darkbloom login").fill("WRONG-CODE");
    await page.getByRole("button", { name: "Approve" }).click();
    await expect.poll(() => page.locator("#link-status").getAttribute("class")).toBe("error");
    await page.getByLabel("Code shown by darkbloom login").fill(started.user_code);
    await page.getByRole("button", { name: "Approve" }).click();
    await expect.poll(() => page.locator("#link-status").textContent()).toMatch(/^Approved/);
    // The daemon polling again gets its provider token, for Alice's account.
    await new Promise((r) => setTimeout(r, started.interval * 1000));
    const linked = await (await token()).json();
    expect(linked).toMatchObject({ account_id: alice.id, token_type: "provider" });
    // The machine connects with its token: listed among Alice's, with how the coordinator judges it.
    const machine = new ScriptedProvider({
      baseUrl: origin,
      models: [{ id: "alices-model" }],
      machineId: "alices-mac",
      accountToken: (linked as { provider_token: string }).provider_token,
    });
    await machine.start();
    try {
      await page.reload();
      const row = page.locator("tbody tr", { hasText: "alices-mac" });
      await row.waitFor();
      const published = (await (await fetch(`${origin}/v1/providers/attestation`)).json()) as {
        data: { provider_id: string; trust_level: string }[];
      };
      const trust = published.data.find((p) => p.provider_id === machine.providerId)?.trust_level ?? "?";
      expect(await row.locator("td").nth(3).textContent()).toMatch(new RegExp(`^${trust}`));
      expect(await row.locator("td").nth(5).textContent()).toMatch(/^alices-model/);
    } finally {
      await machine.stop();
    }
    await inspect(page, "providing");
    expect(problems.filter((p) => !p.includes("status of 4"))).toEqual([]);
  });

  it("signed in with the admin key: the fleet, the models and the ledger's verification", async () => {
    const { page, problems } = await open();
    await page.getByLabel("API key").fill(testbed.adminKey);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Fleet" }).waitFor();
    expect(await page.getByText("1 connected provider.").count()).toBe(1);
    const row = page.locator("table tbody tr").first();
    expect(await row.locator("td").nth(6).textContent()).toMatch(/^tiny/);
    expect(await page.locator(".card", { hasText: "By model" }).textContent()).toContain("tiny: 1");
    await inspect(page, "operator-fleet");

    await page.getByRole("link", { name: "Models" }).click();
    await page.getByRole("heading", { name: "Models" }).waitFor();
    expect(
      await page.locator("tbody tr", { hasText: "tiny" }).first().locator("td").first().textContent(),
    ).toBe("tiny");

    await inspect(page, "operator-models");

    // Releases: listed, and (after a confirmation) activated and deactivated.
    await testbed.admin.createRelease({
      release: {
        version: "9.9.9",
        platform: "linux-x64",
        binarySha256: "ab".repeat(32),
        bundleSha256: "cd".repeat(32),
        url: "https://releases.invalid/9.9.9.tar.gz",
        active: false,
      },
    });
    await page.getByRole("link", { name: "Releases" }).click();
    const release = page.locator("tbody tr", { hasText: "9.9.9" });
    await release.waitFor();
    page.once("dialog", (d) => void d.accept());
    await release.getByRole("button", { name: "Activate 9.9.9 (linux-x64)" }).click();
    await page.getByRole("button", { name: "Deactivate 9.9.9 (linux-x64)" }).waitFor();
    await inspect(page, "operator-releases");
    page.once("dialog", (d) => void d.accept());
    await page.getByRole("button", { name: "Deactivate 9.9.9 (linux-x64)" }).click();
    await page.getByRole("button", { name: "Activate 9.9.9 (linux-x64)" }).waitFor();
    expect((await testbed.admin.listReleases({})).releases.find((r) => r.version === "9.9.9")?.active).toBe(
      false,
    );

    // Accounts: listed with their balances; a credit lands once, however often it is submitted.
    const carol = await testbed.createAccount(0n, "Carol");
    await page.getByRole("link", { name: "Accounts" }).click();
    await page.locator("tbody tr", { hasText: carol.id }).waitFor();
    await page.getByLabel("Account id").fill(carol.id);
    await page.getByLabel("Amount (USD)").fill("-3");
    await page.getByRole("button", { name: "Credit" }).click();
    await expect.poll(() => page.locator("#credit-status").textContent()).toMatch(/more than \$0/);
    await page.getByLabel("Amount (USD)").fill("2.5");
    await page.getByLabel("Note for the ledger").fill("console test");
    await page.getByRole("button", { name: "Credit" }).click();
    await expect
      .poll(() => page.locator("#credit-status").textContent())
      .toMatch(/^Credited\. .* now holds \$2\.50\.$/);
    expect((await testbed.admin.getAccount({ accountId: carol.id })).account?.balanceMicroUsd).toBe(
      2_500_000n,
    );
    expect(await page.locator("tbody tr", { hasText: carol.id }).locator("td").nth(2).textContent()).toBe(
      "$2.50",
    );
    await inspect(page, "operator-accounts");

    await page.getByRole("link", { name: "Ledger" }).click();
    await page.getByRole("button", { name: "Verify the ledger" }).click();
    await expect.poll(() => page.locator("#ledger-result").textContent()).toMatch(/^The ledger verifies\./);
    await inspect(page, "operator-ledger");
    // An account's views are not the operator's: no account, keys or providing here.
    expect(await page.getByRole("link", { name: "API keys" }).count()).toBe(0);
    expect(problems.filter((p) => !p.includes("status of 401"))).toEqual([]);
  });

  it("fits a phone's screen: nothing wider than the viewport but tables, which scroll in place", async () => {
    const context = await browser.newContext({ viewport: { width: 360, height: 740 }, isMobile: true });
    const page = await context.newPage();
    await page.goto(`${origin}/console`);
    await signIn(page, alice.apiKey, "Account: Alice");
    for (const [link, heading] of [
      ["Account", "Account: Alice"],
      ["Playground", "Playground"],
      ["API keys", "API keys"],
      ["Providing", "Providing"],
    ] as const) {
      await page.getByRole("link", { name: link }).click();
      await page.getByRole("heading", { name: heading, exact: true }).waitFor();
      await page.screenshot({ path: join(SCREENSHOTS, `phone-${link.toLowerCase().replace(" ", "-")}.png`) });
      expect(await page.evaluate("document.documentElement.scrollWidth"), link).toBeLessThanOrEqual(360);
      await page.screenshot({ path: join(SCREENSHOTS, `phone-${link.toLowerCase().replace(" ", "-")}.png`) });
    }
    await context.close();
  });

  it("is usable from the keyboard: skip link, labelled field, focus on what changed", async () => {
    const { page } = await open();
    // The field takes focus when the form opens; the only stop before it is the skip link.
    await page.getByLabel("API key").waitFor();
    expect(await page.evaluate("document.activeElement?.id")).toBe("api-key");
    await page.keyboard.press("Shift+Tab");
    expect(await page.evaluate("document.activeElement?.textContent")).toBe("Skip to content");
    await page.getByLabel("API key").focus();
    await page.keyboard.type(alice.apiKey);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Account: Alice" }).waitFor();
    await expect.poll(() => page.evaluate("document.activeElement?.id")).toBe("main");
  });

  it("is served with a strict CSP, validators and gzip, and loads under 200 KB of compressed script", async () => {
    const page = await fetch(`${origin}/console`, { headers: { "accept-encoding": "gzip" } });
    expect(page.status).toBe(200);
    const csp = page.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    // Scripts: the console's own files, and the page's import map by its hash (nothing else inline).
    expect(csp).toMatch(/script-src 'self' 'sha256-[A-Za-z0-9+/]{43}='(;|$)/);
    expect(csp).toContain("connect-src 'self'");
    expect(csp).not.toContain("unsafe");
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    const etag = page.headers.get("etag") ?? "";
    const revalidated = await getGzip(`${origin}/console`, { "if-none-match": etag });
    expect(revalidated.status).toBe(304);
    // The identity representation has a validator of its own (RFC 9110: strong tags differ).
    const identity = await getGzip(`${origin}/console`, { "accept-encoding": "identity" });
    expect(identity.encoding).toBeUndefined();
    expect(identity.etag).not.toBe(etag);
    expect(
      (await getGzip(`${origin}/console`, { "if-none-match": etag, "accept-encoding": "identity" })).status,
    ).toBe(200);
    // HEAD: the GET's headers, no body.
    const head = await getGzip(`${origin}/console`, { "accept-encoding": "identity" }, "HEAD");
    expect(head.status).toBe(200);
    expect(head.contentLength).toBe(String(identity.body.byteLength));
    expect(head.body.byteLength).toBe(0);
    // Every script the app loads is one of the console's files, whose gzipped bytes (as served to a
    // browser that accepts gzip) are what the page downloads.
    const assets = new Map((loadConsole()?.assets ?? []).map((a) => [`/console${a.path}`, a]));
    const { page: tab, urls } = await open();
    await tab.getByLabel("API key").waitFor();
    const scripts = urls.filter((u) => u.endsWith(".js")).map((u) => new URL(u).pathname);
    expect(scripts.length).toBeGreaterThan(0);
    let compressed = 0;
    for (const path of scripts) {
      const asset = assets.get(path);
      expect(asset, path).toBeDefined();
      compressed += asset?.gzipped.byteLength ?? 0;
    }
    expect(compressed).toBeLessThan(200 * 1024);
    const gz = await getGzip(`${origin}${scripts[0]}`);
    expect(gz.encoding).toBe("gzip");
    expect(gunzipSync(gz.body)).toEqual(assets.get(scripts[0]!)?.body);
    // Paths outside the built files are not served.
    expect((await fetch(`${origin}/console/../package.json`)).status).toBe(404);
    expect((await fetch(`${origin}/console/app/main.d.ts`)).status).toBe(404);
  });

  // Last: it drains the testbed's only provider.
  it("drains a provider from the operator's fleet, after a confirmation", async () => {
    const { page, problems } = await open();
    await signIn(page, testbed.adminKey, "Fleet");
    const [provider] = (await testbed.admin.listProviders({})).providers;
    const drain = page.getByRole("button", { name: `Drain ${provider?.providerId}` });
    page.once("dialog", (d) => void d.dismiss());
    await drain.click();
    expect((await testbed.admin.listProviders({})).providers[0]?.state).not.toBe("draining");
    page.once("dialog", (d) => void d.accept());
    await drain.click();
    // The fleet is read again: the provider draining, or (idle, so drained at once) gone.
    await expect
      .poll(
        async () =>
          (await page.locator("tbody tr td", { hasText: /^draining/ }).count()) +
          (await page.getByText("0 connected providers.").count()),
      )
      .toBe(1);
    // Drained: it takes no new work (an idle daemon then finishes draining and leaves at once).
    const after = (await testbed.admin.listProviders({})).providers.find(
      (p) => p.providerId === provider?.providerId,
    );
    expect(after === undefined || after.state === "draining").toBe(true);
    // (Signing in tries the key as an account's first: that 401 is expected.)
    expect(problems.filter((p) => !p.includes("status of 401"))).toEqual([]);
  });
});

interface Fetched {
  status: number | undefined;
  encoding: string | undefined;
  etag: string | undefined;
  contentLength: string | undefined;
  body: Buffer;
}

/** A GET (asking for gzip unless `headers` say otherwise), its body as sent (fetch would decompress it). */
function getGzip(url: string, headers: Record<string, string> = {}, method = "GET"): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    request(url, { method, headers: { "accept-encoding": "gzip", ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode,
          encoding: res.headers["content-encoding"],
          etag: res.headers.etag,
          contentLength: res.headers["content-length"],
          body: Buffer.concat(chunks),
        }),
      );
      res.on("error", reject);
    })
      .on("error", reject)
      .end();
  });
}
