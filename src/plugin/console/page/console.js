// The console's page: Settings → API Credentials for one organization.
// Everything it shows comes from this console's API, which asks the
// cluster as the user; the launch token (from the URL's fragment, kept in
// sessionStorage) goes with every call in X-Console-Token. A new secret is
// shown once, in the secret dialog, and dropped when the dialog closes.
"use strict";

const TOKEN_KEY = "catalio-console-token";
const $ = (selector, root = document) => root.querySelector(selector);

const state = {
  token: null,
  namespace: "",
  listing: null,
  expanded: new Set(),
  following: null,
};

function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    // The token leaves the address bar (and the history) at once.
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(method, path, body) {
  const headers = { "X-Console-Token": state.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function where(path) {
  return `${path}?namespace=${encodeURIComponent(state.namespace)}`;
}

// ---- what the page says ----

function banner(message) {
  $("#banner-text").textContent = message;
  $("#banner").hidden = !message;
}

function relative(iso) {
  if (!iso) return null;
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  const format = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return format.format(Math.trunc(seconds / size), unit);
    }
  }
  return null;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function when(iso, fallback) {
  const text = relative(iso);
  return element("span", { title: iso || "", text: text || fallback });
}

function badge(text, kind) {
  return element("span", { class: `badge ${kind}`, text });
}

function row(credential, can) {
  const c = credential;
  const eventsButton = element("button", {
    type: "button",
    class: "events-toggle link small",
    "aria-expanded": String(state.expanded.has(c.name)),
    text: `Events (${c.events.length})`,
  });
  eventsButton.addEventListener("click", () => {
    if (state.expanded.has(c.name)) state.expanded.delete(c.name);
    else state.expanded.add(c.name);
    render(state.listing);
  });
  const name = element("td", { class: "name" },
    element("div", { class: "display-name", text: c.displayName }),
    element("div", { class: "muted", text: c.name }),
    eventsButton);
  const status = element("td", { class: "status", title: c.message },
    badge(c.phase, c.phase.toLowerCase()),
    c.unused && c.phase !== "Revoked" ? badge("Unused", "unused") : null);
  status.querySelector(".badge").classList.add("phase");
  const scopes = element("td", { class: "scopes" },
    ...c.scopes.map((s) => element("span", { class: "chip", text: s })));
  const next = c.nextRotation && c.phase === "Active"
    ? when(c.nextRotation, "—")
    : element("span", { class: "muted", text: c.rotationEvery ? "—" : "Manual" });
  const hash = c.secretHash
    ? element("code", { class: "secret-hash", title: c.secretHash, text: `${c.secretHash.slice(0, 20)}…` })
    : element("span", { class: "muted", text: c.secretless ? "No secret" : "—" });
  const actions = element("td", { class: "actions" });
  const action = (label, kind, open) => {
    const button = element("button", { type: "button", class: `${kind} small`, text: label });
    button.addEventListener("click", () => open(c));
    actions.append(button);
  };
  if (can.update && c.phase === "Active" && !c.secretless) action("Rotate", "rotate", openRotate);
  if (can.update && c.phase !== "Revoked") action("Revoke", "revoke", openRevoke);
  if (can.delete) action("Delete", "delete", openDelete);
  const tr = element("tr", { "data-name": c.name },
    name,
    element("td", {}, c.clientId ? element("code", { class: "client-id", text: c.clientId }) : element("span", { class: "muted", text: "—" })),
    status,
    scopes,
    element("td", { class: "created" }, when(c.created, "—")),
    element("td", { class: "last-used" }, when(c.lastUsed, "Never")),
    element("td", { class: "next-rotation" }, next),
    element("td", { class: "secret" }, hash, element("div", { class: "muted", text: `rotated ${c.rotations}×` })),
    actions);
  const rows = [tr];
  if (state.expanded.has(c.name)) {
    const list = element("ul", { class: "events" });
    for (const e of c.events) {
      list.append(element("li", { class: e.type === "Warning" ? "warning" : "" },
        element("span", { class: "muted" }, when(e.time, "")), " ",
        element("strong", { class: "reason", text: e.reason }), " ",
        element("span", { text: e.note })));
    }
    if (!c.events.length) list.append(element("li", { class: "muted", text: "No recent events." }));
    rows.push(element("tr", { class: "events-row", "data-events-of": c.name },
      element("td", { colspan: "9" }, list)));
  }
  return rows;
}

function render(listing) {
  state.listing = listing;
  const can = listing.can;
  $("#create").hidden = !can.create;
  const body = $("#credentials tbody");
  body.replaceChildren(...listing.credentials.flatMap((c) => row(c, can)));
  $("#credentials").hidden = listing.credentials.length === 0;
  $("#empty").hidden = listing.credentials.length !== 0;
  const rights = ["view"];
  if (can.create) rights.push("create");
  if (can.update) rights.push("rotate", "revoke");
  if (can.delete) rights.push("delete");
  const list = new Intl.ListFormat("en", { type: "conjunction" }).format(rights);
  $("#live").textContent = `Live. You may ${list} the credentials in ${listing.namespace}.`;
}

// ---- following the organization ----

async function follow(namespace) {
  state.namespace = namespace;
  $("#namespace").value = namespace;
  state.following?.abort();
  const following = new AbortController();
  state.following = following;
  state.expanded.clear();
  $("#live").textContent = "Connecting…";
  while (!following.signal.aborted) {
    try {
      const response = await fetch(where("/api/stream"), {
        headers: { "X-Console-Token": state.token },
        signal: following.signal,
        cache: "no-store",
        credentials: "omit",
      });
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error(data.error || `${response.status} ${response.statusText}`);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value;
        const lines = buffered.split("\n");
        buffered = lines.pop();
        for (const line of lines) {
          if (!line.trim()) continue;
          const message = JSON.parse(line);
          if (message.error) banner(message.error);
          else render(message);
        }
      }
    } catch (e) {
      if (following.signal.aborted) return;
      $("#live").textContent = `Disconnected: ${e.message}. Retrying…`;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// ---- dialogs ----

function dialog(id) {
  const d = $(id);
  const error = $(".error", d);
  return {
    d,
    open() {
      error.hidden = true;
      d.showModal();
    },
    fail(e) {
      error.textContent = e.message;
      error.hidden = false;
    },
    busy(on, text) {
      const submit = $("button[type=submit]", d);
      submit.disabled = on;
      if (text) submit.textContent = text;
    },
  };
}

function subject(d, name) {
  for (const node of d.querySelectorAll(".subject")) node.textContent = name;
}

const create = dialog("#create-dialog");
const rotate = dialog("#rotate-dialog");
const revoke = dialog("#revoke-dialog");
const remove = dialog("#delete-dialog");

function openRotate(c) {
  subject(rotate.d, c.name);
  rotate.d.dataset.name = c.name;
  $("input[name=gracePeriod]", rotate.d).value = c.gracePeriod;
  rotate.busy(false, "Rotate");
  rotate.open();
}

function openRevoke(c) {
  subject(revoke.d, c.name);
  revoke.d.dataset.name = c.name;
  $("input[name=confirm]", revoke.d).value = "";
  revoke.busy(true, "Revoke");
  revoke.open();
}

function openDelete(c) {
  subject(remove.d, c.name);
  remove.d.dataset.name = c.name;
  remove.busy(false, "Delete");
  remove.open();
}

// The new secret, once: shown, copyable, then gone from the page.
function showSecret(result) {
  const d = $("#secret-dialog");
  subject(d, result.name);
  const once = result.shownOnce;
  $("#shown-client-id").textContent = once.clientId;
  $("#shown-client-secret").textContent = once.clientSecret;
  $("#shown-curl").textContent = once.curl;
  for (const button of d.querySelectorAll(".copy")) button.textContent = "Copy";
  d.showModal();
}

function forgetSecret() {
  for (const id of ["#shown-client-id", "#shown-client-secret", "#shown-curl"]) {
    $(id).textContent = "";
  }
}

function afterChange(result) {
  if (result.shownOnce) showSecret(result);
  else if (result.why) {
    banner(`${result.name} is ready, but its secret cannot be shown to you: ${result.why}`);
  }
}

function wire() {
  $("#banner-close").addEventListener("click", () => banner(""));
  $("#organization").addEventListener("submit", (e) => {
    e.preventDefault();
    const namespace = $("#namespace").value.trim();
    const url = new URL(location.href);
    url.searchParams.set("namespace", namespace);
    history.replaceState(null, "", url.pathname + url.search);
    follow(namespace);
  });
  for (const d of document.querySelectorAll("dialog")) {
    $(".cancel", d)?.addEventListener("click", () => d.close());
  }
  $("#create").addEventListener("click", () => {
    $("#create-form").reset();
    create.busy(false, "Create");
    create.open();
  });
  $("#create-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const targets = form.get("restartTargets").split("\n").map((l) => l.trim()).filter(Boolean)
      .map((line) => {
        const [kind, name] = line.split("/");
        return { kind, name };
      });
    const body = {
      name: form.get("name").trim(),
      displayName: form.get("displayName").trim(),
      scopes: form.get("scopes").split(/[\s,]+/).filter(Boolean),
      rotationEvery: form.get("rotationEvery").trim() || null,
      gracePeriod: form.get("gracePeriod").trim() || null,
      restartTargets: targets,
    };
    create.busy(true, "Creating…");
    try {
      const result = await api("POST", where("/api/credentials"), body);
      create.d.close();
      afterChange(result);
    } catch (error) {
      create.fail(error);
    } finally {
      create.busy(false, "Create");
    }
  });
  $("#rotate-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = rotate.d.dataset.name;
    const gracePeriod = $("input[name=gracePeriod]", rotate.d).value.trim() || null;
    rotate.busy(true, "Rotating…");
    try {
      const result = await api("POST", where(`/api/credentials/${encodeURIComponent(name)}/rotate`), { gracePeriod });
      rotate.d.close();
      afterChange(result);
    } catch (error) {
      rotate.fail(error);
    } finally {
      rotate.busy(false, "Rotate");
    }
  });
  $("input[name=confirm]", revoke.d).addEventListener("input", (e) => {
    revoke.busy(e.target.value !== revoke.d.dataset.name);
  });
  $("#revoke-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = revoke.d.dataset.name;
    const confirm = $("input[name=confirm]", revoke.d).value;
    revoke.busy(true, "Revoking…");
    try {
      await api("POST", where(`/api/credentials/${encodeURIComponent(name)}/revoke`), { confirm });
      revoke.d.close();
    } catch (error) {
      revoke.fail(error);
      revoke.busy(false, "Revoke");
    }
  });
  $("#delete-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = remove.d.dataset.name;
    remove.busy(true, "Deleting…");
    try {
      await api("DELETE", where(`/api/credentials/${encodeURIComponent(name)}`));
      remove.d.close();
    } catch (error) {
      remove.fail(error);
    } finally {
      remove.busy(false, "Delete");
    }
  });
  const secret = $("#secret-dialog");
  // The close event comes a task after the dialog is hidden: forget the
  // secret before closing, and on close too (Escape closes without submit).
  secret.addEventListener("close", forgetSecret);
  $("#secret-form").addEventListener("submit", (e) => {
    e.preventDefault();
    forgetSecret();
    secret.close();
  });
  for (const button of secret.querySelectorAll(".copy")) {
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($(`#${button.dataset.copy}`).textContent);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy";
      }
    });
  }
}

async function start() {
  state.token = takeToken();
  wire();
  if (!state.token) {
    $("#live").textContent = "Open this console with the link `kubectl catalio console` printed.";
    return;
  }
  try {
    const session = await api("GET", "/api/session");
    const who = [session.user && `Signed in as ${session.user}`, session.context && `context ${session.context}`];
    $("#who").textContent = who.filter(Boolean).join(" · ");
    const asked = new URLSearchParams(location.search).get("namespace");
    follow(asked || session.namespace);
  } catch (error) {
    $("#live").textContent = error.message;
  }
}

start();
