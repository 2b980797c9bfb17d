// The API explorer in a real browser, as a person uses it: Debian's
// Chromium, headless, driven by Playwright. Opens BASE/api/swaggerui,
// authorizes with client credentials in Swagger UI's dialog (Swagger UI
// asks BASE/oauth/token for the token), opens GET /api/v1/requirements,
// presses "Try it out" and "Execute", and reads the response Swagger UI
// renders. Saves a screenshot of the executed request and its response (of the
// page, on failure)
// at SCREENSHOT.
//
//   node explorer.mjs NODE_MODULES BASE CLIENT_ID CLIENT_SECRET SCREENSHOT
//
// Prints one JSON object: the rendered status and body, every request the
// page made, and every console error and CSP violation it reported.
// Exits non-zero with a message when a step cannot be done.
import path from "node:path";

const [modules, base, clientId, clientSecret, screenshot] = process.argv.slice(2);
const { chromium } = await import(path.join(modules, "playwright-core", "index.mjs"));
const STEP = 30_000;

const browser = await chromium.launch({
  executablePath: process.env.CATALIO_TEST_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // As root and on a closed network: no sandbox, and none of Chromium's
  // own background connections.
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let page;
const requests = [];
const problems = [];
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
  page.setDefaultTimeout(STEP);
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfinished", async (r) => {
    const response = await r.response();
    requests.push({ method: r.method(), url: r.url(), status: response?.status() ?? 0 });
  });
  page.on("requestfailed", (r) =>
    requests.push({ method: r.method(), url: r.url(), status: 0, failure: r.failure()?.errorText }));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });

  await page.goto(`${base}/api/swaggerui`);
  await page.locator(".information-container .title", { hasText: "Catalio JSON:API" }).waitFor();

  // Authorize: the oauth2 scheme's client credentials flow.
  await page.locator(".auth-wrapper button.authorize").click();
  const dialog = page.locator(".dialog-ux .modal-ux");
  await dialog.waitFor();
  await dialog.locator("#client_id_clientCredentials").fill(clientId);
  await dialog.locator("#client_secret_clientCredentials").fill(clientSecret);
  // The oauth2 scheme's section ("oauth2 (OAuth2, clientCredentials)").
  const oauth = dialog.locator(".auth-container", { hasText: "clientCredentials" });
  await oauth.locator("button.authorize").click();
  // Authorized: the flow offers "Logout"; refused: Swagger UI shows the error.
  const outcome = await Promise.race([
    oauth.locator("button", { hasText: "Logout" }).waitFor().then(() => "authorized"),
    oauth.locator(".errors").waitFor().then(async () => `refused: ${await oauth.locator(".errors").innerText()}`),
  ]);
  if (outcome !== "authorized") throw new Error(`Authorize: ${outcome}`);
  await dialog.locator("button.btn-done").first().click();
  await dialog.waitFor({ state: "detached" });

  // GET /api/v1/requirements: Try it out, Execute.
  const operation = page.locator(".opblock-get", {
    has: page.locator('.opblock-summary-path[data-path="/api/v1/requirements"]'),
  });
  await operation.locator(".opblock-summary-control").click();
  await operation.locator("button.try-out__btn").click();
  await operation.locator("button.execute").click();
  const live = operation.locator(".live-responses-table .response");
  await live.waitFor();
  const status = Number((await live.locator(".response-col_status").innerText()).trim());
  const text = await live.locator(".response-col_description pre").first().innerText();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  // What "Execute" did: the request as curl, its URL, and the response
  // Swagger UI rendered.
  await operation.locator(".responses-inner > div").first().screenshot({ path: screenshot });
  console.log(JSON.stringify({ status, body, requests, problems }));
} catch (e) {
  if (page) await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
  console.error(`${e.message}\nrequests: ${JSON.stringify(requests)}\nproblems: ${JSON.stringify(problems)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
