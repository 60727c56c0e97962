// The shoal dashboard: one page routed by the URL's hash, reading everything from
// the JSON API (/api/v1). No framework, no build step. Untrusted text (commands,
// arguments, output) is only ever set as textContent.
"use strict";

const app = document.getElementById("app");
const liveBadge = document.getElementById("live");
const FAILED = ["failed", "timed_out", "crashed", "memory_exceeded"];
let leave = () => {}; // stops what the current page follows

// --- the API -----------------------------------------------------------------

function token() { return localStorage.getItem("shoal-token"); }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers);
  if (token()) headers.Authorization = "Bearer " + token();
  if (options.method === "POST") {
    headers["X-Shoal-Request"] = "1";
    headers["Content-Type"] = "application/json";
  }
  // Relative to the page, so that the dashboard also works behind a proxy's path.
  const response = await fetch(path.replace(/^\//, ""), Object.assign({}, options, { headers }));
  if (response.status === 401) {
    const given = prompt("This shoal server needs its token:");
    if (given) { localStorage.setItem("shoal-token", given.trim()); return api(path, options); }
  }
  if (options.raw && response.ok) return response;
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// Server-Sent Events read through fetch, so that the token goes in a header.
async function follow(path, onEvent, signal) {
  const response = await api(path, { raw: true, signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

// --- small helpers -------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) el.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Replaces the page's content (nulls and nested arrays allowed, as in h).
const show = (...children) => app.replaceChildren(h("div", {}, ...children));
const badge = (status) => h("span", { class: "badge " + status }, status.replace("_", " "));
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
function secs(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
const stat = (label, value) => h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
const showError = (err) => h("div", { class: "error" }, String(err.message || err));

async function act(what, path, body) {
  if (!confirm(what + "?")) return;
  try {
    const answer = await api(path, { method: "POST", body: body ? JSON.stringify(body) : "" });
    alert(answer.requests.map((r) => r.result || "taken").join("\n"));
  } catch (err) {
    alert(err.message);
  }
  route();
}

// --- pages ---------------------------------------------------------------------

async function runsPage(params) {
  const status = params.get("status") || "";
  const offset = Number(params.get("offset") || 0);
  const query = new URLSearchParams({ limit: 50, offset });
  if (status) query.set("status", status);
  const data = await api("/api/v1/runs?" + query);
  const filter = h("select", { onchange: (e) => (location.hash = "#/?status=" + e.target.value) },
    ["", "running", "finished", "interrupted", "died"].map((s) => h("option", { value: s, selected: s === status }, s || "any status")));
  const rows = data.runs.map((run) =>
    h("tr", {},
      h("td", {}, h("a", { href: "#/runs/" + run.id }, "run " + run.id)),
      h("td", {}, badge(run.status)),
      h("td", { class: "cmd", title: run.command.join(" ") }, run.command.join(" ")),
      h("td", { class: "num" }, run.total + (run.input_open ? "+" : "")),
      h("td", { class: "num" }, run.counts.succeeded),
      h("td", { class: "num" }, FAILED.reduce((n, s) => n + run.counts[s], 0)),
      h("td", {}, when(run.started_at))));
  const pager = h("div", { class: "pager" },
    offset > 0 ? h("a", { href: `#/?status=${status}&offset=${Math.max(0, offset - 50)}` }, "← newer") : null,
    h("span", { class: "muted" }, `${data.total} runs`),
    offset + 50 < data.total ? h("a", { href: `#/?status=${status}&offset=${offset + 50}` }, "older →") : null);
  show(h("h1", {}, "Runs"), h("form", { class: "filters" }, h("label", {}, "status", filter)),
    h("table", {}, h("tr", {}, ["run", "status", "command", "tasks", "succeeded", "failed", "started"].map((c) => h("th", { class: ["tasks", "succeeded", "failed"].includes(c) ? "num" : "" }, c))), rows),
    pager);
}

function progressBar(counts, total) {
  const part = (status, n) => h("div", { class: status, style: `width:${total ? (100 * n) / total : 0}%`, title: `${status}: ${n}` });
  const failed = FAILED.reduce((n, s) => n + counts[s], 0);
  return h("div", { class: "bar" }, part("succeeded", counts.succeeded), part("failed", failed), part("cancelled", counts.cancelled), part("running", counts.running));
}

function summary(run) {
  const slots = run.per_slot;
  const busiest = Math.max(1e-9, ...slots.map((s) => s.busy));
  return h("div", {},
    h("div", { class: "card" },
      h("div", { class: "grid" },
        stat("done", `${run.done} / ${run.total}${run.input_open ? "+" : ""}`),
        stat("failed", run.failed),
        stat("running", run.counts.running),
        stat("rate", run.rate ? run.rate.toFixed(2) + " /s" : "—"),
        stat("ETA", run.status === "running" ? secs(run.eta_seconds) : "—"),
        stat("slots busy", `${run.slots_busy} / ${run.slots ?? "?"}`)),
      progressBar(run.counts, run.total)),
    slots.length ? h("div", { class: "card" }, h("div", { class: "slots" },
      slots.map((s) => [h("span", {}, "slot " + s.slot), h("div", { class: "track" }, h("div", { class: "fill", style: `width:${(100 * s.busy) / busiest}%` })), h("span", { class: "muted" }, `${secs(s.busy)} · ${s.tasks}`)]))) : null);
}

async function failuresCard(id) {
  const data = await api(`/api/v1/runs/${id}/failures`);
  if (!data.groups.length) return h("p", { class: "muted" }, "No failures.");
  return h("div", {}, data.groups.map((g) => {
    const s = g.signature;
    const how = s.exit_code !== null ? `exit ${s.exit_code}` : s.signal !== null ? `signal ${s.signal}` : s.status;
    return h("div", { class: "card group" },
      h("div", {}, badge(s.status), " ", h("b", {}, `${g.count} task${g.count > 1 ? "s" : ""}`), " · ", how),
      h("div", { class: "sig" }, s.message || "(no error output)"),
      h("div", { class: "muted" }, "tasks ", g.tasks.map((t) => [h("a", { href: `#/runs/${id}/tasks/${t}` }, t), " "]),
        g.count > g.tasks.length ? "…" : "", " ",
        h("a", { href: `#/runs/${id}?status=${s.status}${s.exit_code !== null ? "&exit_code=" + s.exit_code : ""}` }, "show in the table")));
  }), data.truncated ? h("p", { class: "muted" }, `grouped the first ${data.scanned} failures`) : null);
}

async function taskTable(id, params) {
  const query = new URLSearchParams();
  for (const key of ["status", "q", "slot", "exit_code", "after"]) if (params.get(key)) query.set(key, params.get(key));
  query.set("limit", 50);
  const data = await api(`/api/v1/runs/${id}/tasks?${query}`);
  const field = (name, label, size) => h("label", {}, label, h("input", { name, value: params.get(name) || "", size }));
  const form = h("form", { class: "filters", onsubmit: (e) => {
      e.preventDefault();
      const next = new URLSearchParams();
      for (const [k, v] of new FormData(e.target)) if (v) next.set(k, v);
      location.hash = `#/runs/${id}?${next}`;
    } },
    field("status", "status (comma-separated)", 22), field("q", "text in args or command", 22),
    field("slot", "slot", 4), field("exit_code", "exit code", 5), h("button", { type: "submit", class: "primary" }, "Filter"));
  const rows = data.tasks.map((t) => h("tr", {},
    h("td", { class: "num" }, h("a", { href: `#/runs/${id}/tasks/${t.task}` }, t.task)),
    h("td", {}, badge(t.status)),
    h("td", { class: "cmd", title: t.command }, t.command),
    h("td", { class: "num" }, t.attempts),
    h("td", { class: "num" }, t.exit_code ?? (t.signal !== null ? "sig " + t.signal : "")),
    h("td", { class: "num" }, t.slot ?? ""),
    h("td", { class: "num" }, secs(t.duration)),
    h("td", { class: "cmd", title: t.message || "" }, t.message || "")));
  const here = new URLSearchParams(query); here.delete("limit"); here.delete("after");
  const pager = h("div", { class: "pager" },
    params.get("after") ? h("a", { href: `#/runs/${id}?${here}` }, "← first page") : null,
    data.next_after ? h("a", { href: `#/runs/${id}?${here}&after=${data.next_after}` }, "next page →") : h("span", { class: "muted" }, "last page"));
  return h("div", {}, form, h("table", {}, h("tr", {}, ["task", "status", "command", "tries", "exit", "slot", "took", "last stderr line"].map((c) => h("th", {}, c))), rows), pager);
}

async function runPage(id, params) {
  const run = await api(`/api/v1/runs/${id}`);
  const live = run.status === "running";
  const top = h("div", {}, summary(run));
  const actions = live ? h("div", { class: "actions" },
    h("button", { onclick: () => act(`Pause run ${id}`, `/api/v1/runs/${id}/pause`) }, "Pause"),
    h("button", { onclick: () => act(`Unpause run ${id}`, `/api/v1/runs/${id}/unpause`) }, "Unpause"),
    h("button", { onclick: () => {
      const n = prompt("Slots (tasks at once):", run.slots ?? "");
      if (n) act(`Set run ${id} to ${n} slots`, `/api/v1/runs/${id}/slots`, { slots: Number(n) });
    } }, "Slots…"),
    h("button", { class: "danger", onclick: () => act(`Cancel run ${id} (as a Ctrl-C)`, `/api/v1/runs/${id}/cancel`) }, "Cancel run")) : null;
  show(
    h("h1", {}, `Run ${id} `, badge(run.status)),
    h("p", { class: "muted cmd" }, run.command.join(" "), " · started ", when(run.started_at), run.ended_at ? " · ended " + when(run.ended_at) : ""),
    actions, top,
    h("h2", {}, "Failures by signature"), await failuresCard(id),
    h("h2", {}, "Tasks"), await taskTable(id, params));
  if (!live) return;
  const controller = new AbortController();
  leave = () => controller.abort();
  liveBadge.textContent = "● live";
  let refresh = null;
  follow(`/api/v1/runs/${id}/events`, async (name, data) => {
    if (name === "progress") {
      Object.assign(run, { counts: data.counts, total: data.total, input_open: data.input_open });
      run.done = data.total - data.counts.queued - data.counts.running;
      run.failed = FAILED.reduce((n, s) => n + data.counts[s], 0);
      run.slots_busy = data.running.length;
      const elapsed = Date.now() / 1000 - run.started_at;
      run.rate = run.done > 0 && elapsed > 0 ? run.done / elapsed : null;
      run.eta_seconds = run.rate && !run.input_open ? (run.total - run.done) / run.rate : null;
      top.replaceChildren(summary(run));
    } else if (name === "end") {
      liveBadge.textContent = "";
      route();
    } else if (name === "task" && !refresh) {
      // Ended tasks change the failures and the table: refresh at most every 2 s.
      refresh = setTimeout(() => { refresh = null; route(); }, 2000);
    }
  }, controller.signal).catch(() => {});
  const stop = leave;
  leave = () => { stop(); clearTimeout(refresh); liveBadge.textContent = ""; };
}

async function taskPage(id, number) {
  const data = await api(`/api/v1/runs/${id}/tasks/${number}`);
  const t = data.task;
  const live = t.status === "queued" || t.status === "running";
  const output = (label, text, truncated) => text ? [h("div", { class: "muted" }, label + (truncated ? " (truncated)" : "")), h("pre", {}, text)] : null;
  show(
    h("h1", {}, h("a", { href: `#/runs/${id}` }, `Run ${id}`), ` · task ${number} `, badge(t.status)),
    h("div", { class: "card" },
      h("div", { class: "cmd" }, t.command),
      h("div", { class: "muted" }, `arguments: ${JSON.stringify(t.args)} · priority ${t.priority} · retries ${t.retries}${t.timeout ? " · timeout " + secs(t.timeout) : ""}`)),
    live ? h("div", { class: "actions" }, h("button", { class: "danger", onclick: () => act(`Cancel task ${number}`, `/api/v1/runs/${id}/cancel`, { tasks: [Number(number)] }) }, "Cancel task")) : null,
    h("h2", {}, `Attempts (${data.attempts.length})`),
    data.attempts.length ? data.attempts.map((a) => h("div", { class: "card" },
      h("div", {}, h("b", {}, `attempt ${a.attempt}`), " ", a.outcome ? badge(a.outcome) : badge("running"),
        h("span", { class: "muted" }, ` slot ${a.slot} · pid ${a.pid} · ${when(a.started_at)} · ${secs(a.duration)}`,
          a.exit_code !== null ? ` · exit ${a.exit_code}` : "", a.signal !== null ? ` · signal ${a.signal}` : "",
          a.max_rss_kb ? ` · ${(a.max_rss_kb / 1024).toFixed(1)} MiB` : "")),
      output("stdout", a.stdout, a.stdout_truncated), output("stderr", a.stderr, a.stderr_truncated))) : h("p", { class: "muted" }, "Not started yet."));
}

// --- routing -----------------------------------------------------------------

async function route() {
  leave();
  leave = () => {};
  const [path, search] = location.hash.slice(1).split("?");
  const params = new URLSearchParams(search || "");
  const parts = (path || "/").split("/").filter(Boolean);
  try {
    if (parts[0] === "runs" && parts[2] === "tasks" && parts[3]) await taskPage(parts[1], parts[3]);
    else if (parts[0] === "runs" && parts[1]) await runPage(parts[1], params);
    else await runsPage(params);
  } catch (err) {
    show(showError(err));
  }
}

window.addEventListener("hashchange", route);
route();
