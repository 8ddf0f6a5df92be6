// The web console in a real browser (Debian's Chromium driven by playwright-core: headless, no
// downloads) against a real local network: signing in with an API key, the account's balance and
// usage, signing out; the page reaches nothing but its own origin, runs under a strict
// Content-Security-Policy, keeps the key out of every URL, and is small.

import { existsSync } from "node:fs";
import { get } from "node:http";
import { gunzipSync } from "node:zlib";
import { loadConsole } from "@darkbloom/console";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed, type TestbedAccount } from "../testbed/index.js";

const CHROMIUM = process.env.DARKBLOOM_CHROMIUM ?? "/usr/bin/chromium";

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

  it("signs in with an API key, shows the balance and usage, and signs out", async () => {
    const { page, urls, problems } = await open();
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
    // The charts' figures are in tables a screen reader reads.
    expect(await page.locator("figure table caption").allTextContents()).toEqual([
      "Tokens by day, all 1 requests",
      "Tokens by model, all 1 requests",
    ]);

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

    await page.getByRole("link", { name: "Models" }).click();
    await page.getByRole("heading", { name: "Models" }).waitFor();
    expect(
      await page.locator("tbody tr", { hasText: "tiny" }).first().locator("td").first().textContent(),
    ).toBe("tiny");

    await page.getByRole("link", { name: "Ledger" }).click();
    await page.getByRole("button", { name: "Verify the ledger" }).click();
    await expect.poll(() => page.locator("#ledger-result").textContent()).toMatch(/^The ledger verifies\./);
    // An account's views are not the operator's: no account, keys or providing here.
    expect(await page.getByRole("link", { name: "API keys" }).count()).toBe(0);
    expect(problems.filter((p) => !p.includes("status of 401"))).toEqual([]);
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
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).not.toContain("unsafe");
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    const etag = page.headers.get("etag") ?? "";
    expect((await fetch(`${origin}/console`, { headers: { "if-none-match": etag } })).status).toBe(304);
    // Every script the app loads is one of the console's files, whose gzipped bytes (as served to a
    // browser that accepts gzip) are what the page downloads.
    const assets = new Map((loadConsole() ?? []).map((a) => [`/console${a.path}`, a]));
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
});

/** A GET asking for gzip, its body as sent (fetch would decompress it). */
function getGzip(url: string): Promise<{ encoding: string | undefined; body: Buffer }> {
  return new Promise((resolve, reject) => {
    get(url, { headers: { "accept-encoding": "gzip" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ encoding: res.headers["content-encoding"], body: Buffer.concat(chunks) }),
      );
      res.on("error", reject);
    }).on("error", reject);
  });
}
