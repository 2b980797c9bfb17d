// `kubectl catalio console` in a real browser, as an administrator and a
// viewer use it, and as a page on another origin attacks it: Debian's
// Chromium, headless, driven by Playwright.
//
//   node console.mjs NODE_MODULES SCENARIO CONFIG_JSON
//
// SCENARIO is `admin`, `viewer` or `foreign`; CONFIG_JSON carries `url`
// (the link the console printed), `namespace`, `shots` (a directory for
// screenshots) and, for `admin`, `kubectl` and `kubeconfig` (to rotate
// "elsewhere"). Prints one JSON object with what the page showed and what
// the token endpoint said; exits non-zero with a message when a step
// cannot be done.
import { execFileSync } from "node:child_process";
import http from "node:http";
import path from "node:path";

const [modules, scenario, configJson] = process.argv.slice(2);
const config = JSON.parse(configJson);
const { chromium } = await import(path.join(modules, "playwright-core", "index.mjs"));
const STEP = 60_000;

const browser = await chromium.launch({
  executablePath: process.env.CATALIO_TEST_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const problems = [];
let page;

async function shot(name) {
  await page.screenshot({ path: path.join(config.shots, `${name}.png`) });
}

// The token endpoint's answer to a client id and secret.
async function tokenStatus(tokenUrl, id, secret) {
  const response = await fetch(tokenUrl, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: "grant_type=client_credentials",
  });
  return response.status;
}

async function shownOnce() {
  const dialog = page.locator("#secret-dialog");
  await dialog.waitFor({ state: "visible" });
  const read = async (id) => (await dialog.locator(id).innerText()).trim();
  const secret = {
    clientId: await read("#shown-client-id"),
    clientSecret: await read("#shown-client-secret"),
    curl: await read("#shown-curl"),
  };
  return secret;
}

async function closeShownOnce(secret) {
  const dialog = page.locator("#secret-dialog");
  await dialog.locator("button[type=submit]").click();
  await dialog.waitFor({ state: "hidden" });
  // Gone from the page once closed.
  return (await page.content()).includes(secret.clientSecret);
}

function tokenUrlOf(curl) {
  return curl.split(" ").pop();
}

async function admin() {
  const out = {};
  await page.goto(config.url);
  await page.locator("#live", { hasText: "Live." }).waitFor();
  out.addressBar = page.url();
  await shot("01-empty");

  // Create, and read the secret once.
  await page.locator("#create").click();
  const create = page.locator("#create-dialog");
  await create.locator("input[name=name]").fill("ci-pipeline");
  await create.locator("input[name=displayName]").fill("CI/CD Pipeline");
  await create.locator("input[name=scopes]").fill("requirement:read persona:read");
  await create.locator("input[name=rotationEvery]").fill("2160h");
  await create.locator("input[name=gracePeriod]").fill("1h");
  await shot("02-create");
  await create.locator("button[type=submit]").click();
  const first = await shownOnce();
  await shot("03-shown-once");
  out.firstStillOnPage = await closeShownOnce(first);
  out.first = { clientId: first.clientId, curl: first.curl.replace(first.clientSecret, "SECRET") };
  const tokenUrl = tokenUrlOf(first.curl);
  out.firstToken = await tokenStatus(tokenUrl, first.clientId, first.clientSecret);

  const row = page.locator('tr[data-name="ci-pipeline"]');
  await row.locator(".phase", { hasText: "Active" }).waitFor();
  await row.locator(".last-used", { hasNotText: "Never" }).waitFor();
  out.scopes = await row.locator(".chip").allInnerTexts();
  out.nextRotation = (await row.locator(".next-rotation").innerText()).trim();
  await shot("04-list");

  // A rotation elsewhere shows without a reload.
  await page.evaluate(() => { window.stillTheSamePage = true; });
  const before = await row.locator(".secret-hash").getAttribute("title");
  execFileSync(config.kubectl, [
    "--kubeconfig", config.kubeconfig, "-n", config.namespace, "patch", "apicredential",
    "ci-pipeline", "--type", "merge", "-p", '{"spec":{"rotation":{"counter":1}}}',
  ]);
  await page.waitForFunction(
    (old) => document.querySelector('tr[data-name="ci-pipeline"] .secret-hash')?.title !== old,
    before, { timeout: STEP });
  out.rotatedElsewhereWithoutReload = await page.evaluate(() => window.stillTheSamePage === true);

  // Rotate here, without grace: a new secret, shown once.
  await row.locator("button.rotate").click();
  const rotate = page.locator("#rotate-dialog");
  out.rotateGraceOffered = await rotate.locator("input[name=gracePeriod]").inputValue();
  await rotate.locator("input[name=gracePeriod]").fill("0s");
  await shot("05-rotate");
  await rotate.locator("button[type=submit]").click();
  const second = await shownOnce();
  out.secondStillOnPage = await closeShownOnce(second);
  out.sameClientId = second.clientId === first.clientId;
  out.newSecret = second.clientSecret !== first.clientSecret;
  out.firstTokenAfterRotation = await tokenStatus(tokenUrl, first.clientId, first.clientSecret);
  out.secondToken = await tokenStatus(tokenUrl, second.clientId, second.clientSecret);

  // Its recent events.
  await row.locator("button.events-toggle").click();
  const events = page.locator('tr[data-events-of="ci-pipeline"]');
  await events.locator(".reason", { hasText: "Rotated" }).first().waitFor();
  out.events = await events.locator(".reason").allInnerTexts();
  await shot("06-events");

  // Revoke: only once the name is typed.
  await row.locator("button.revoke").click();
  const revoke = page.locator("#revoke-dialog");
  const submit = revoke.locator("button[type=submit]");
  out.revokeEnabledAtFirst = await submit.isEnabled();
  await revoke.locator("input[name=confirm]").fill("ci-pipelin");
  out.revokeEnabledMistyped = await submit.isEnabled();
  await revoke.locator("input[name=confirm]").fill("ci-pipeline");
  out.revokeEnabledTyped = await submit.isEnabled();
  out.revokeWarning = await revoke.locator(".warning").innerText();
  await shot("07-revoke");
  await submit.click();
  await revoke.waitFor({ state: "hidden" });
  await row.locator(".phase", { hasText: "Revoked" }).waitFor();
  out.rotateOfferedWhenRevoked = await row.locator("button.rotate").count();
  out.secondTokenAfterRevoke = await tokenStatus(tokenUrl, second.clientId, second.clientSecret);
  await shot("08-revoked");

  // Delete.
  await row.locator("button.delete").click();
  await page.locator("#delete-dialog button[type=submit]").click();
  await row.waitFor({ state: "detached" });
  out.emptyAgain = await page.locator("#empty").isVisible();
  return out;
}

async function viewer() {
  const out = {};
  await page.goto(config.url);
  await page.locator("#live", { hasText: "Live." }).waitFor();
  await page.locator("tr[data-name]").first().waitFor();
  out.rows = await page.locator("tr[data-name]").count();
  out.createOffered = await page.locator("#create").isVisible();
  out.writeButtons = await page.locator("button.rotate, button.revoke, button.delete").count();
  out.live = await page.locator("#live").innerText();
  await shot("09-viewer");
  // What the API server says when the viewer tries anyway (the browser
  // reports the refusal as an error: it is expected from here on).
  out.problemsBefore = [...problems];
  out.attempt = await page.evaluate(async (namespace) => {
    const response = await fetch(`/api/credentials?namespace=${namespace}`, {
      method: "POST",
      headers: {
        "X-Console-Token": sessionStorage.getItem("catalio-console-token"),
        "Content-Type": "application/json",
      },
      body: JSON.stringify({ name: "not-allowed", displayName: "Not allowed" }),
    });
    return { status: response.status, body: await response.json() };
  }, config.namespace);
  return out;
}

// A page on another origin (another port of 127.0.0.1) that knows the
// console's address and even its token, and tries to use it.
async function foreign() {
  const home = new URL(config.url);
  const token = new URLSearchParams(home.hash.slice(1)).get("token");
  const target = `${home.origin}/api/credentials?namespace=${config.namespace}`;
  const evil = http.createServer((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<!doctype html><body><iframe name="sink"></iframe>
<form id="csrf" method="post" action="${target}" target="sink" enctype="text/plain">
<input name='{"name":"csrf-form","displayName":"x","pad":"' value='"}'></form></body>`);
  });
  await new Promise((resolve) => evil.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${evil.address().port}`;
  const out = {};
  try {
    await page.goto(origin);
    out.attempts = await page.evaluate(async ({ target, token }) => {
      const body = (name) => JSON.stringify({ name, displayName: "x" });
      const tries = {
        readWithToken: () => fetch(target, { headers: { "X-Console-Token": token } }),
        createWithToken: () => fetch(target, {
          method: "POST",
          headers: { "X-Console-Token": token, "Content-Type": "application/json" },
          body: body("cors-with-token"),
        }),
        createSimple: () => fetch(target, {
          method: "POST", mode: "no-cors", headers: { "Content-Type": "text/plain" }, body: body("no-cors"),
        }),
      };
      const results = {};
      for (const [name, attempt] of Object.entries(tries)) {
        try {
          const response = await attempt();
          results[name] = { status: response.status, type: response.type };
        } catch (e) {
          results[name] = { error: e.message };
        }
      }
      return results;
    }, { target, token });
    // A plain form post, as a page can always send.
    const posted = page.waitForResponse((r) => r.url().startsWith(home.origin), { timeout: STEP });
    await page.evaluate(() => document.getElementById("csrf").submit());
    out.form = (await posted).status();
  } finally {
    evil.close();
  }
  return out;
}

try {
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(STEP);
  page.on("console", (m) => {
    if (m.type() === "error" && scenario !== "foreign") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  const scenarios = { admin, viewer, foreign };
  const out = await scenarios[scenario]();
  console.log(JSON.stringify({ problems, ...out }));
} catch (e) {
  if (page) await page.screenshot({ path: path.join(config.shots, `failed-${scenario}.png`), fullPage: true }).catch(() => {});
  console.error(`${e.stack}\nproblems: ${JSON.stringify(problems)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
