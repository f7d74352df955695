// Twill UI: polls the twill ui server's JSON API and draws the service map
// (laid out by dagre, drawn as SVG so every node and edge is a DOM element)
// and the flow table.
"use strict";

const POLL_MS = 1000;
const MAX_ROWS = 4095;
// Rows rendered per poll; more new flows than this in one poll are sampled
// (only the newest are shown) so the page never falls behind.
const RENDER_PER_POLL = 2000;
const SVG = "http://www.w3.org/2000/svg";

const state = {
  rows: [], lastSeq: 0, paused: false, sampling: false,
  selection: null, // {kind: "node"|"edge", id, name}
  map: { nodes: [], edges: [] }, mapKey: "", status: null, renderMs: 0, sampledPolls: 0,
};
window.twillUi = state;

const $ = (id) => document.getElementById(id);

function filterQuery() {
  const q = new URLSearchParams();
  const put = (k, id) => { const v = $(id).value.trim(); if (v) q.set(k, v); };
  put("namespace", "f-namespace"); put("verdict", "f-verdict"); put("label", "f-label");
  put("port", "f-port"); put("protocol", "f-protocol"); put("drop_reason", "f-drop-reason");
  if (state.selection) q.set(state.selection.kind, state.selection.id);
  return q;
}

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function select(kind, id, name) {
  const same = state.selection && state.selection.kind === kind && state.selection.id === id;
  state.selection = same ? null : { kind, id, name };
  $("selection").hidden = !state.selection;
  $("selection-name").textContent = state.selection ? state.selection.name : "";
  resetRows();
  drawMap(true);
}

function drawMap(force) {
  const m = state.map;
  const key = JSON.stringify(m) + JSON.stringify(state.selection);
  if (!force && key === state.mapKey) return;
  state.mapKey = key;
  const root = $("map-root");
  root.replaceChildren();
  $("map-empty").hidden = m.nodes.length > 0;
  if (!m.nodes.length) return;
  // Layout by (source, destination) pair: dagre's cost grows with edges,
  // and a busy map has many ports per pair. Port edges share their pair's
  // route, with stacked labels.
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 30, ranksep: 110, marginx: 20, marginy: 20 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of m.nodes) g.setNode(n.id, { width: Math.max(90, n.name.length * 8 + 24), height: n.namespace ? 40 : 30 });
  const perPair = new Map();
  for (const e of m.edges) {
    if (e.source === e.destination) continue;
    const k = e.source + "\u0000" + e.destination;
    if (!perPair.has(k)) { perPair.set(k, 0); g.setEdge(e.source, e.destination, { width: 60, height: 14 }); }
  }
  dagre.layout(g);
  const sel = state.selection;
  for (const e of m.edges) {
    let lay = e.source === e.destination ? null : g.edge(e.source, e.destination);
    if (!lay) {
      // A self edge: a small loop above the node.
      const n = g.node(e.source);
      lay = { points: [{ x: n.x - 10, y: n.y - n.height / 2 }, { x: n.x, y: n.y - n.height / 2 - 25 }, { x: n.x + 10, y: n.y - n.height / 2 }], x: n.x, y: n.y - n.height / 2 - 25 };
    }
    const k = e.source + "\u0000" + e.destination;
    const nth = perPair.get(k) || 0;
    perPair.set(k, nth + 1);
    const grp = el("g", { class: "edge" + (sel && sel.kind === "edge" && sel.id === e.id ? " selected" : ""),
      "data-edge-id": e.id, "data-verdict": e.verdict, "data-flows": e.flows,
      "data-source": e.source, "data-destination": e.destination }, root);
    const d = lay.points.map((p, i) => (i ? "L" : "M") + p.x.toFixed(1) + "," + p.y.toFixed(1)).join("");
    el("path", { d }, grp);
    // A thin line is hard to hit: a wide invisible twin takes the clicks.
    el("path", { d, class: "hit" }, grp);
    const t = el("text", { x: lay.x, y: lay.y - 3 - nth * 12 }, grp);
    t.textContent = `${e.port ? e.port + "/" : ""}${e.protocol} ×${e.flows}`;
    const title = el("title", {}, grp);
    title.textContent = `${e.source} → ${e.destination} ${e.port}/${e.protocol}: ${e.forwarded} forwarded, ${e.dropped} dropped`;
    grp.addEventListener("click", () => select("edge", e.id, `${e.source} → ${e.destination} ${e.port}/${e.protocol}`));
  }
  for (const n of m.nodes) {
    const lay = g.node(n.id);
    const grp = el("g", { class: "node" + (sel && sel.kind === "node" && sel.id === n.id ? " selected" : ""),
      "data-node-id": n.id, "data-name": n.name, "data-kind": n.kind,
      transform: `translate(${lay.x},${lay.y})` }, root);
    el("rect", { x: -lay.width / 2, y: -lay.height / 2, width: lay.width, height: lay.height }, grp);
    const t = el("text", { y: n.namespace ? -6 : 0 }, grp);
    t.textContent = n.name;
    if (n.namespace) { const ns = el("text", { y: 10, class: "ns" }, grp); ns.textContent = n.namespace; }
    const title = el("title", {}, grp);
    title.textContent = `${n.id} (identity ${n.identity})\n${n.labels.join("\n")}`;
    grp.addEventListener("click", () => select("node", n.id, n.id));
  }
  const gr = g.graph();
  $("map").setAttribute("viewBox", `0 0 ${Math.max(gr.width, 300)} ${Math.max(gr.height, 100)}`);
}

function side(s) {
  const who = s.pod ? `${s.namespace}/${s.pod}` : (s.node || "?");
  return `${who} <span class="id">${s.ip}${s.port ? ":" + s.port : ""} id=${s.identity}</span>`;
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

function rowHtml(r) {
  const t = new Date(r.time_ms).toISOString().replace("T", " ").replace("Z", "");
  return `<td>${t}</td><td>${side(mapSide(r.source))}</td><td>${side(mapSide(r.destination))}</td>` +
    `<td>${r.port ? r.port + "/" : ""}${r.protocol}</td><td>${esc(r.l7)}</td><td class="verdict">${r.verdict}</td>` +
    `<td>${esc(r.drop_reason)}</td><td>${r.tcp_flags}</td>`;
}

function mapSide(s) {
  return { pod: esc(s.pod), namespace: esc(s.namespace), node: esc(s.node), ip: esc(s.ip), port: s.port, identity: s.identity };
}

function prependRows(rows) {
  const t0 = performance.now();
  const body = $("flow-rows");
  const frag = document.createDocumentFragment();
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.seq = r.seq; tr.dataset.verdict = r.verdict;
    tr.dataset.source = r.source.node; tr.dataset.destination = r.destination.node;
    tr.innerHTML = rowHtml(r);
    frag.appendChild(tr);
  }
  body.insertBefore(frag, body.firstChild);
  state.rows = rows.concat(state.rows).slice(0, MAX_ROWS);
  while (body.childElementCount > MAX_ROWS) body.lastElementChild.remove();
  state.renderMs = performance.now() - t0;
  $("row-count").textContent = `${state.rows.length} flows`;
}

function resetRows() {
  state.rows = []; state.lastSeq = 0;
  $("flow-rows").replaceChildren();
  pollFlows();
}

async function getJson(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

let flowsBusy = false;
async function pollFlows() {
  if (flowsBusy) return;
  flowsBusy = true;
  try {
    const q = filterQuery();
    q.set("after", state.lastSeq);
    q.set("limit", state.lastSeq ? RENDER_PER_POLL : MAX_ROWS);
    const r = await getJson("/api/flows?" + q);
    $("filter-error").textContent = "";
    state.sampling = state.lastSeq > 0 && r.matched > r.rows.length;
    $("sampling").hidden = !state.sampling;
    if (state.sampling) state.sampledPolls++;
    state.lastSeq = r.last_seq;
    if (r.rows.length) prependRows(r.rows);
  } catch (e) {
    $("filter-error").textContent = e.message;
  } finally {
    flowsBusy = false;
  }
}

async function pollStatus() {
  try {
    const s = await getJson("/api/status");
    state.status = s;
    $("status").dataset.state = s.state;
    $("status-state").textContent = s.state + " to " + s.server;
    $("status-nodes").textContent = s.nodes.join(", ") || "-";
    $("status-rate").textContent = s.flows_per_second.toFixed(1);
    $("status-lost").textContent = s.lost_events;
    $("status-error").textContent = s.error;
    const sel = $("f-namespace");
    const have = new Set([...sel.options].map((o) => o.value));
    for (const ns of s.namespaces) if (!have.has(ns)) sel.add(new Option(ns, ns));
  } catch (e) {
    $("status").dataset.state = "disconnected";
    $("status-state").textContent = "twill ui is not answering";
  }
}

async function pollMap() {
  try {
    const q = new URLSearchParams();
    if ($("f-namespace").value) q.set("namespace", $("f-namespace").value);
    state.map = await getJson("/api/map?" + q);
    drawMap(false);
  } catch (e) { /* status shows the connection problem */ }
}

async function tick() {
  const started = performance.now();
  await pollStatus();
  if (!state.paused) await Promise.all([pollMap(), pollFlows()]);
  document.body.dataset.ready = "1";
  // Polls start every POLL_MS, however long this one took, so the rate
  // the page keeps up with is RENDER_PER_POLL per second.
  setTimeout(tick, Math.max(0, POLL_MS - (performance.now() - started)));
}

for (const id of ["f-verdict", "f-label", "f-port", "f-protocol", "f-drop-reason"]) {
  $(id).addEventListener("change", resetRows);
}
$("f-namespace").addEventListener("change", () => { resetRows(); pollMap(); });
$("clear-selection").addEventListener("click", () => select(state.selection.kind, state.selection.id));
$("pause").addEventListener("click", () => {
  state.paused = !state.paused;
  $("pause").textContent = state.paused ? "Resume" : "Pause";
});
tick();
