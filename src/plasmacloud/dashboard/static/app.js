// Polls this page's /api/<page>.json and renders it; no framework, no CDN (offline machines).
"use strict";

const POLL_MS = 1500;
const page = document.body.dataset.page;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) {
    node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  }
  return node;
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

function show(value) {
  return value === null || value === undefined ? "–" : String(value);
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function renderOverview(doc) {
  const leaders = Object.entries(doc.leaders).map(([service, nodes]) =>
    el("div", {class: "card", "data-leader-of": service}, `${service} leader: `,
      el("span", {class: nodes.length === 1 ? "ok" : "bad"},
        nodes.length ? nodes.join(", ") : "none")));
  const ready = el("div", {class: "card"}, "cluster: ",
    el("span", {class: doc.ready ? "ok" : "bad", id: "ready"}, doc.ready ? "ready" : "not ready"));
  const rows = doc.rows.map((r) => el("tr", {
      class: r.up ? "up" : "down", "data-node": r.node, "data-service": r.service,
      "data-up": String(r.up), "data-role": r.role ?? "" },
    el("td", {}, r.node), el("td", {}, r.service),
    el("td", {class: "state"}, r.up ? "up" : "DOWN"),
    el("td", {class: r.role === "leader" ? "leader" : null}, show(r.role)),
    el("td", {}, show(r.term)), el("td", {}, show(r.commit_index)),
    el("td", {}, show(r.applied_index)), el("td", {}, show(r.lag)),
    el("td", {}, bytes(r.db_size)), el("td", {class: "error"}, r.error ?? "")));
  return [el("div", {class: "summary"}, ready, ...leaders),
    table(["node", "service", "state", "role", "term", "commit", "applied", "lag", "db size",
      "last error"], rows)];
}

const RENDER = {overview: renderOverview};

async function tick() {
  const updated = document.getElementById("updated");
  try {
    const resp = await fetch(`/api/${page}.json`, {cache: "no-store", credentials: "same-origin"});
    if (resp.status === 401) { window.location.reload(); return; }
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const doc = await resp.json();
    document.getElementById("content").replaceChildren(...RENDER[page](doc));
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    updated.className = "muted";
  } catch (exc) {
    updated.textContent = `dashboard unreachable: ${exc.message}`;
    updated.className = "bad";
  }
  setTimeout(tick, POLL_MS);
}

tick();
