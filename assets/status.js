"use strict";
// Polls /status.json and /top once a second and renders them; says so when udptee stops answering.
const $ = (id) => document.getElementById(id);
let primary = null;
let lastOk = 0;

function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return Number(v).toFixed(digits === undefined ? 0 : digits);
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function spark(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 300 30");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const max = Math.max(1, ...values);
  svg.setAttribute("aria-label", "out per second, last 5 minutes, peak " + num(max));
  const line = document.createElementNS(ns, "polyline");
  const n = values.length;
  line.setAttribute("points", values.map((v, i) =>
    (n > 1 ? (i * 300) / (n - 1) : 0).toFixed(1) + "," + (29 - (v / max) * 28).toFixed(1)).join(" "));
  svg.append(line);
  return svg;
}
function rate(r, key) { return r ? num(r[key]) : "–"; }
function pair(a, b, key) { return rate(a, key) + " / " + rate(b, key); }

function render(s) {
  const l = $("listener");
  l.replaceChildren();
  const fact = (k, v) => l.append(el("div", {}, el("dt", {}, k), el("dd", {}, v)));
  fact("Received /s (1 s / 1 min)", pair(s.listener_1s, s.listener_60s, "datagrams"));
  fact("Bytes in /s", pair(s.listener_1s, s.listener_60s, "bytes"));
  fact("Received, total", num(s.received));
  fact("Kernel receive-buffer drops", num(s.kernel_drops));
  fact("Receive workers", s.workers.length + " (" + s.backend + ")");
  fact("Ready", s.ready ? "yes" : "NO");

  const sel = $("primary");
  const names = s.targets.map((t) => t.name);
  if (sel.options.length !== names.length || names.some((n, i) => sel.options[i].value !== n)) {
    sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  }
  if (primary === null || !names.includes(primary)) primary = s.primary;
  sel.value = primary || "";

  const body = $("targets").tBodies[0];
  body.replaceChildren();
  for (const t of s.targets) {
    const drops = Object.entries(t.dropped).filter(([, v]) => v > 0)
      .map(([k, v]) => k + " " + num(v)).join(", ");
    const up = t.up === false ? el("span", { class: "state-down" }, "DOWN")
      : el("span", { class: "state-up" }, t.up === true ? "up" : "?");
    const state = el("td", { "data-label": "State" }, up, el("br"),
      t.enabled ? "enabled" : "DISABLED", el("br"), t.path);
    const fill = Math.round((t.queue.fill || 0) * 100);
    const inner = el("span", {});
    inner.style.width = fill + "%"; // CSSOM: allowed by the page's content security policy
    const bar = el("span", { class: "bar", title: fill + "% full" }, inner);
    let parity = "–";
    const primaryTracked = s.targets.some((x) => x.name === s.primary && x.parity_tracked);
    if (t.name === s.primary) parity = "primary";
    else if (!t.parity_tracked || !primaryTracked) parity = "not compared (parity = true)";
    else if (t.versus_primary) {
      const v = t.versus_primary;
      const causes = Object.entries(v.explained_by).filter(([, n]) => n !== 0).map(([k, n]) => k + " " + n);
      parity = v.digest_equal && v.lines_sent_difference === 0 ? "✓ equal"
        : "✗ differs by " + v.lines_sent_difference + " lines" + (causes.length ? " (" + causes.join(", ") + ")" : "");
    }
    const lat = t.latency_us ? num(t.latency_us.p50) + " / " + num(t.latency_us.p99) + " µs" : "–";
    // A group: its members, each up or DOWN (out of the ring) with its share of the keys.
    const members = (t.members || []).map((m) => el("span", { class: "addr member" },
      m.up ? el("span", { class: "state-up" }, "up") : el("span", { class: "state-down", title: m.last_check || "" }, "DOWN"),
      " " + m.addr + " · " + Math.round(m.share * 100) + "% of keys" + (m.dropped > 0 ? " · dropped " + num(m.dropped) : "")));
    const down = (t.members || []).filter((m) => !m.up).length;
    const group = t.members ? [el("span", { class: "addr" + (down ? " bad" : "") },
      "group of " + t.members.length + (down ? ", " + down + " down" : ", all up")), ...members] : [];
    body.append(el("tr", {},
      el("td", { "data-label": "Target" }, el("strong", {}, t.name), el("span", { class: "addr" }, t.addr), ...group),
      state,
      el("td", { "data-label": "In /s" }, pair(t.rate_1s, t.rate_60s, "in")),
      el("td", { "data-label": "Out /s" }, pair(t.rate_1s, t.rate_60s, "out")),
      el("td", { "data-label": "Bytes out /s" }, pair(t.rate_1s, t.rate_60s, "bytes_out")),
      el("td", { "data-label": "Dropped", class: t.dropped_total > 0 ? "bad" : "" },
        t.dropped_total > 0 ? num(t.dropped_total) + " (" + drops + ")" : "0"),
      el("td", { "data-label": "Queue" }, bar, " " + fill + "% · " + num(t.queue.datagrams)),
      el("td", { "data-label": "Receiver drops", class: t.receiver_drops > 0 ? "bad" : "" },
        t.receiver_drops === null ? "n/a" : num(t.receiver_drops)),
      el("td", { "data-label": "Latency" }, lat),
      el("td", { "data-label": "Parity", class: "parity" + (parity.startsWith("✗") ? " warn" : "") }, parity),
      el("td", { "data-label": "Out, last 5 min", class: "sparkcell" }, spark(t.spark)),
    ));
  }
}

async function tick() {
  const conn = $("conn");
  try {
    const q = primary ? "?primary=" + encodeURIComponent(primary) : "";
    const r = await fetch("/status.json" + q, { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    lastOk = Date.now();
    conn.className = "conn ok";
    conn.textContent = "live · " + new Date(lastOk).toLocaleTimeString();
  } catch (e) {
    conn.className = "conn lost";
    conn.textContent = "udptee is not answering (" + e.message + ")" +
      (lastOk ? "; last data " + Math.round((Date.now() - lastOk) / 1000) + " s ago" : "");
  }
}
// The top names: their own request (the first look starts udptee's sampler and waits a second
// for it), never two at once.
let topBusy = false;
async function topTick() {
  if (topBusy) return;
  topBusy = true;
  try {
    const r = await fetch("/top?by=name&n=10", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const t = await r.json();
    const pct = t.offered ? Math.round((100 * t.sampled) / t.offered) : 0;
    $("top-hint").textContent = "The metric names with the most lines over the last " +
      t.seconds.toFixed(0) + " s, from a sample of " + num(t.sampled) + " of " + num(t.offered) +
      " datagrams (" + pct + "%); by sender and series: udptee top.";
    const rows = t.top.concat(t.other.lines_per_s > 0 ? [t.other] : []);
    $("top").tBodies[0].replaceChildren(...rows.map((x) => el("tr", {},
      el("td", { "data-label": "Name" }, x.key),
      el("td", { "data-label": "Share of lines" }, (x.share * 100).toFixed(1) + "%"),
      el("td", { "data-label": "Lines /s" }, num(x.lines_per_s)),
      el("td", { "data-label": "Datagrams /s" }, num(x.datagrams_per_s)),
      el("td", { "data-label": "Bytes /s" }, num(x.bytes_per_s)))));
  } catch (e) {
    $("top-hint").textContent = "Top names unavailable (" + e.message + ").";
  } finally {
    topBusy = false;
  }
}
$("primary").addEventListener("change", (e) => { primary = e.target.value; tick(); });
tick();
topTick();
setInterval(() => { tick(); topTick(); }, 1000);
