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

const SVG = "http://www.w3.org/2000/svg";

// a line of the last minutes' values (gaps where a scrape failed or a node restarted)
function sparkline(values, width = 180, height = 30) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("class", "spark");
  const known = values.filter((v) => v !== null);
  const top = Math.max(...known, 1e-9);
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  let path = "";
  let pen = "M";
  values.forEach((v, i) => {
    if (v === null) { pen = "M"; return; }
    path += `${pen}${(i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)} `;
    pen = "L";
  });
  const line = document.createElementNS(SVG, "path");
  line.setAttribute("d", path);
  svg.append(line);
  return svg;
}

function renderCharts(metrics) {
  const last = (pts, i) => (pts.length ? pts[pts.length - 1][i] : null);
  const rows = metrics.series.map((s) => el("tr", {
      "data-chart-node": s.node, "data-chart-service": s.service,
      "data-points": String(s.points.length),
      "data-peak": String(Math.max(0, ...s.points.map((p) => p[1]))),
      "data-now": String(last(s.points, 1) ?? "")},
    el("td", {}, s.node), el("td", {}, s.service),
    el("td", {}, sparkline(s.points.map((p) => p[1]))),
    el("td", {}, last(s.points, 1) === null ? "–" : `${last(s.points, 1)}/s`),
    el("td", {}, sparkline(s.points.map((p) => p[2]))),
    el("td", {}, last(s.points, 2) === null ? "–" : `${last(s.points, 2).toFixed(2)} ms`)));
  const minutes = Math.round(metrics.window_s / 60);
  return [el("h2", {}, `Writes and fsync latency (last ${minutes} minutes while the dashboard runs)`),
    table(["node", "service", "committed entries / s", "now", "log fsync (mean)", "now"], rows)];
}

function renderOverview(doc, metrics) {
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
      "last error"], rows), ...renderCharts(metrics)];
}

function time(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "–";
}

// the newest event that carries a step: what the netboot server or the agent said last
function lastReport(events) {
  const e = [...events].reverse().find((ev) => ev.step);
  return e ? `${e.step}${e.status ? ` ${e.status}` : ""}${e.message ? `: ${e.message}` : ""}` : "–";
}

function renderProvisioning(doc) {
  if (!doc.found) {
    return [el("p", {class: "muted", id: "no-state"},
      doc.state_file ? `no state file yet at ${doc.state_file}` :
        "this cluster was not provisioned by `plasma netboot serve` (no state file)")];
  }
  const rows = doc.nodes.map((n) => el("tr", {
      class: n.state === "failed" ? "down" : "up", "data-node": n.node_id, "data-state": n.state},
    el("td", {}, n.node_id), el("td", {}, n.mac),
    el("td", {class: "state"}, n.state), el("td", {}, show(n.last_step)),
    el("td", {}, time(n.updated_at)),
    el("td", {}, lastReport(n.events)),
    el("td", {class: "timeline"}, ...n.events.slice(-8).map((e) =>
      el("span", {class: `chip ${e.state}`, title: e.message || ""},
        `${e.state}${e.step ? ` (${e.step})` : ""} ${time(e.at)}`))),
    el("td", {class: "error"}, n.error ?? "")));
  const unknown = Object.entries(doc.unknown_macs);
  return [table(["node", "MAC", "state", "last step", "updated", "last report",
      "recent transitions", "error"], rows),
    el("p", {class: "muted"}, `state file: ${doc.state_file}`),
    ...(unknown.length ? [el("h2", {}, "Machines not in the spec that asked to boot"),
      table(["MAC", "last seen"], unknown.map(([mac, at]) =>
        el("tr", {}, el("td", {}, mac), el("td", {}, time(at)))))] : [])];
}

function verdicts(list) {
  return list.map((v) => el("span", {class: v.status === "ok" ? "ok" : "bad",
    title: v.details.join("\n")}, `${v.property}: ${v.status} (${v.checked})`));
}

function renderRuns(doc) {
  if (!doc.dir) return [el("p", {class: "muted"}, "no lab directory: no runs to show")];
  const chaos = doc.chaos.map((r) => el("tr", {class: r.ok ? "up" : "down", "data-run": "chaos"},
    el("td", {}, time(r.at)), el("td", {class: "state"}, r.ok ? "passed" : "FAILED"),
    el("td", {}, r.meta ? `seed ${r.meta.seed}, ${r.meta.duration_s}s, ${r.meta.faults.join(", ")}`
      : ""),
    el("td", {}, show(r.ops)),
    el("td", {class: "verdicts"}, ...(r.verdicts ? verdicts(r.verdicts) : [r.error])),
    el("td", {class: "path"}, el("a", {href: r.link, download: ""}, r.file))));
  const reports = doc.validation.map((r) => el("tr", {class: r.ok ? "up" : "down",
      "data-run": "validation"},
    el("td", {}, time(r.at)), el("td", {class: "state"}, r.ok ? "passed" : "FAILED"),
    el("td", {}, r.error ?? `${r.checks} checks${r.failed.length ? `, failed: ${r.failed.join(", ")}` : ""}`),
    el("td", {class: "path"}, el("a", {href: r.link, download: ""}, r.file))));
  const latest = doc.validation.find((r) => r.results);
  const nodes = latest ? [...new Set(latest.results.flatMap((c) => Object.keys(c.nodes)))].sort()
    : [];
  const detail = latest ? [el("h2", {}, `Latest validation, per check and node (${time(latest.at)})`),
    table(["check", ...nodes], latest.results.map((c) => el("tr", {class: c.ok ? "up" : "down",
        "data-check": c.id},
      el("td", {class: "state"}, c.id),
      ...nodes.map((n) => el("td", {class: "evidence"}, c.nodes[n] ?
        `${c.nodes[n].ok ? "PASS" : "FAIL"} ${c.nodes[n].evidence}` : "–")))))] : [];
  return [el("h2", {}, "Chaos runs"),
    chaos.length ? table(["when", "result", "run", "ops", "verdicts", "history"], chaos) :
      el("p", {class: "muted"}, `none in ${doc.dir}/chaos (plasma lab chaos saves them there)`),
    el("h2", {}, "Validation reports"),
    reports.length ? table(["when", "result", "checks", "report"], reports) :
      el("p", {class: "muted"}, `none in ${doc.dir}/reports`), ...detail];
}

function renderPki(doc) {
  const rows = doc.certificates.map((c) => el("tr", {
      class: c.status === "ok" ? "up" : "down", "data-file": c.file, "data-status": c.status},
    el("td", {}, c.file), el("td", {}, show(c.subject)), el("td", {}, show(c.issuer)),
    el("td", {class: "state"}, c.status), el("td", {}, show(c.days_left)),
    el("td", {}, c.not_after ? new Date(c.not_after).toLocaleDateString() : "–"),
    el("td", {class: "sans"}, (c.sans ?? []).join(", ")), el("td", {class: "error"}, c.error ?? "")));
  const out = [table(["file", "subject", "issuer", "status", "days left", "expires", "SANs", "error"],
    rows), el("p", {class: "muted"}, doc.dir ? `under ${doc.dir}` : "no certificate directory")];
  if (doc.findings) {
    out.push(el("h2", {}, "Preflight findings"), doc.findings.length ?
      table(["id", "severity", "node", "problem", "fix"], doc.findings.map((f) => el("tr", {
          class: f.severity === "error" ? "down" : "up"},
        el("td", {}, f.id), el("td", {}, f.severity), el("td", {}, show(f.node)),
        el("td", {}, f.message), el("td", {}, f.fix)))) :
      el("p", {class: "ok"}, "no certificate problems"));
  }
  return out;
}

const RENDER = {overview: renderOverview, provisioning: renderProvisioning, runs: renderRuns,
  pki: renderPki};

// the JSON documents each page draws from (default: /api/<page>.json alone)
const SOURCES = {overview: ["overview", "metrics"]};

async function fetchDoc(name) {
  const resp = await fetch(`/api/${name}.json`, {cache: "no-store", credentials: "same-origin"});
  if (resp.status === 401) { window.location.reload(); throw new Error("logged out"); }
  if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
  return resp.json();
}

async function tick() {
  const updated = document.getElementById("updated");
  try {
    const docs = await Promise.all((SOURCES[page] ?? [page]).map(fetchDoc));
    document.getElementById("content").replaceChildren(...RENDER[page](...docs));
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    updated.className = "muted";
  } catch (exc) {
    updated.textContent = `dashboard unreachable: ${exc.message}`;
    updated.className = "bad";
  }
  setTimeout(tick, POLL_MS);
}

tick();
