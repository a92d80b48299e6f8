// The API explorer (/docs) in a real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core, with a fresh profile): loads the page, lists the routes
// it shows, and runs "Try it out" on GET /v1/products. Prints one JSON line:
//   {"routes": ["GET /v1/products", ...], "tryIt": {"status": "200", "body": "..."},
//    "problems": [...]}   (console errors, failed or foreign requests, CSP violations)
//
// Usage: node explorer.mjs BASE_URL   e.g. node explorer.mjs http://127.0.0.1:8080
// Run by tests/acceptance (the explorer test); scripts/tools.sh installs the packages
// and Chromium.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base] = process.argv.slice(2);
if (base === undefined) {
  console.error("usage: explorer.mjs BASE_URL");
  process.exit(2);
}
const origin = new URL(base).origin;
const profile = mkdtempSync(join(tmpdir(), "explorer-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const problems = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("request", (r) => {
    if (!r.url().startsWith(origin) && !r.url().startsWith("data:")) {
      problems.push(`request to another origin: ${r.url()}`);
    }
  });

  await page.goto(`${base}/docs`, { waitUntil: "load", timeout: 20_000 });
  const summaries = page.locator(".opblock .opblock-summary");
  await summaries.first().waitFor({ timeout: 20_000 });
  const routes = [];
  for (const summary of await summaries.all()) {
    const method = (await summary.locator(".opblock-summary-method").innerText()).trim();
    const path = (await summary.locator(".opblock-summary-path").innerText()).trim();
    routes.push(`${method.toUpperCase()} ${path.replace(/\u200b/g, "")}`);
  }

  const products = page
    .locator(".opblock.opblock-get")
    .filter({ has: page.locator('.opblock-summary-path[data-path="/v1/products"]') });
  await products.locator(".opblock-summary").click();
  await products.locator("button.try-out__btn").click();
  await products.locator("button.execute").click();
  const live = products.locator(".live-responses-table .response");
  await live.first().waitFor({ timeout: 20_000 });
  const status = (await live.first().locator(".response-col_status").innerText()).trim();
  const body = (
    await products.locator(".live-responses-table .response-col_description pre").first().innerText()
  ).trim();
  console.log(JSON.stringify({ routes, tryIt: { status, body }, problems }));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
