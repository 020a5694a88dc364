// litefleet dashboard: live counts and rows (Server-Sent Events), search as you type,
// paging without reloads. The page works without this script (server-rendered first
// page, a GET search form, pager links); the script only makes it live.
// Rows are built with DOM APIs and textContent only: no string is ever parsed as HTML.
"use strict";
(function () {
  const table = document.getElementById("tenants");
  const body = table ? table.tBodies[0] : null;
  const live = document.getElementById("live");
  // Ticking "3 s ago" cells exist on tenant pages too.
  setInterval(tickAges, 1000);
  // Formatting shared with restore.js (loaded after this script).
  window.litefleetFmt = { bytes, hex16 };
  if (!body) return;

  const form = document.getElementById("search");
  const q = document.getElementById("q");
  const statusSel = document.getElementById("status");
  const params = new URLSearchParams(location.search);
  const state = {
    q: params.get("q") || "",
    status: params.get("status") || "",
    page: Math.max(1, parseInt(params.get("page") || "1", 10) || 1),
  };
  let inflight = false, again = false, stale = false, typing = null;

  function setLive(text, cls) { live.textContent = text; live.className = "live " + (cls || ""); }

  function human(d) {
    const s = Math.max(0, Math.floor(d));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }
  function bytes(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = n, i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return i === 0 ? n + " B" : v.toFixed(1) + " " + u[i];
  }
  function hex16(n) { return n.toString(16).padStart(16, "0"); }

  // Text with a line-break opportunity after each "/" (as the server renders paths).
  function breakable(el, text) {
    const parts = text.split("/");
    parts.forEach((p, i) => {
      el.append(p + (i < parts.length - 1 ? "/" : ""));
      if (i < parts.length - 1) el.appendChild(document.createElement("wbr"));
    });
  }
  function td(text, cls) {
    const c = document.createElement("td");
    if (cls) c.className = cls;
    c.textContent = text;
    return c;
  }
  // Keep in step with `row` in src/http/html.rs.
  function row(c) {
    const tr = document.createElement("tr");
    tr.dataset.id = c.clientId;
    tr.dataset.path = c.databasePath;
    tr.className = "st-" + c.status;
    const th = document.createElement("th");
    th.scope = "row";
    const a = document.createElement("a");
    a.href = "/tenants/" + encodeURIComponent(c.clientId);
    a.textContent = c.clientId;
    th.appendChild(a);
    tr.appendChild(th);
    const st = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "badge st-" + c.status;
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.setAttribute("aria-hidden", "true");
    badge.append(dot, c.status);
    st.appendChild(badge);
    tr.appendChild(st);
    const files = document.createElement("td");
    files.className = "files";
    const db = document.createElement("span");
    db.className = "path";
    breakable(db, c.databasePath);
    const to = document.createElement("span");
    to.className = "path to";
    breakable(to, "→ " + c.s3Path);
    files.append(db, document.createElement("br"), to);
    tr.appendChild(files);
    const ago = td("never", "ago");
    if (c.lastSyncAt) {
      ago.dataset.ts = String(Date.parse(c.lastSyncAt));
      ago.title = c.lastSyncAt;
      ago.textContent = human(c.lastSyncAgeSeconds || 0) + " ago";
    }
    tr.appendChild(ago);
    tr.appendChild(td(c.txid == null ? "–" : hex16(c.txid), "num mono"));
    tr.appendChild(td(c.lagSeconds > 0 ? human(c.lagSeconds) : "0 s", "num"));
    const shipped = td(bytes(c.bytesShipped), "num");
    shipped.title = c.filesShipped + " files";
    tr.appendChild(shipped);
    const created = td(c.createdAt.replace("T", " ").slice(0, 16));
    created.title = c.createdAt;
    tr.appendChild(created);
    tr.appendChild(td(c.lastError || (c.conflictWith ? "same prefix as " + c.conflictWith : "") || (c.heldBy ? "held by " + c.heldBy : ""), "err"));
    return tr;
  }

  function setCount(id, n) {
    const el = document.getElementById(id);
    if (el && el.textContent !== String(n)) el.textContent = String(n);
  }
  function counts(c) {
    setCount("n-total", c.total);
    setCount("n-active", c.active);
    setCount("n-starting", c.starting);
    setCount("n-lagging", c.lagging);
    setCount("n-error", c.error);
    setCount("n-conflict", c.conflict);
    setCount("n-held", c.held);
    setCount("n-fenced", c.fenced);
    setCount("n-skipped", c.skipped);
    setCount("n-activeclients", c.active + c.lagging + c.starting);
    document.title = "litefleet — " + c.total + " tenants";
  }

  function link(page) {
    const p = new URLSearchParams();
    p.set("page", String(page));
    if (state.q) p.set("q", state.q);
    if (state.status) p.set("status", state.status);
    return "/?" + p.toString();
  }
  function pager(pg) {
    const nav = document.getElementById("pager");
    nav.replaceChildren();
    function end(text, page, rel) {
      if (page === null) {
        const s = document.createElement("span");
        s.className = "off";
        s.textContent = text;
        return s;
      }
      const a = document.createElement("a");
      a.href = link(page);
      a.rel = rel;
      a.textContent = text;
      a.addEventListener("click", (e) => { e.preventDefault(); state.page = page; refresh(true); });
      return a;
    }
    const no = document.createElement("span");
    no.id = "pageno";
    no.textContent = "Page " + pg.page + " of " + pg.pages;
    nav.append(end("« Previous", pg.page > 1 ? pg.page - 1 : null, "prev"), " ", no, " ",
      end("Next »", pg.page < pg.pages ? pg.page + 1 : null, "next"));
  }

  function render(pg) {
    counts(pg.counts);
    const frag = document.createDocumentFragment();
    for (const c of pg.clients) frag.appendChild(row(c));
    body.replaceChildren(frag);
    const first = pg.matching === 0 ? 0 : (pg.page - 1) * pg.perPage + 1;
    const last = Math.min(pg.page * pg.perPage, pg.matching);
    const filtered = state.q || state.status;
    document.getElementById("matching").textContent =
      "Showing " + first + "–" + last + " of " + pg.matching + (filtered ? " matching tenants" : " tenants");
    document.getElementById("empty").hidden = pg.clients.length !== 0;
    state.page = pg.page;
    pager(pg);
  }

  // Fetches the current page; coalesces requests made while one is in flight.
  async function refresh(push) {
    if (push) history.replaceState(null, "", link(state.page));
    if (inflight) { again = true; return; }
    inflight = true;
    try {
      const p = new URLSearchParams({ page: String(state.page), per_page: "50" });
      if (state.q) p.set("q", state.q);
      if (state.status) p.set("status", state.status);
      const r = await fetch("/api/clients?" + p.toString(), { credentials: "same-origin" });
      if (r.ok) render(await r.json());
      else setLive("error " + r.status, "down");
    } catch (e) {
      setLive("offline", "down");
    } finally {
      inflight = false;
      if (again) { again = false; refresh(false); }
    }
  }

  function tickAges() {
    const now = Date.now();
    for (const el of document.querySelectorAll(".ago[data-ts]")) {
      const t = Number(el.dataset.ts);
      if (t > 0) el.textContent = human((now - t) / 1000) + " ago";
    }
    const up = document.getElementById("uptime");
    if (up && up.dataset.started) {
      const m = Math.floor((now - Number(up.dataset.started)) / 60000);
      up.textContent = m < 1 ? Math.floor((now - Number(up.dataset.started)) / 1000) + "s"
        : m < 60 ? m + "m" : m < 1440 ? Math.floor(m / 60) + "h " + (m % 60) + "m"
        : Math.floor(m / 1440) + "d " + Math.floor(m / 60) % 24 + "h";
    }
  }

  q.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = q.value.trim(); state.page = 1; refresh(true); }, 120);
  });
  statusSel.addEventListener("change", () => { state.status = statusSel.value; state.page = 1; refresh(true); });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    state.q = q.value.trim(); state.status = statusSel.value; state.page = 1; refresh(true);
  });
  for (const a of document.querySelectorAll("a.total[data-status]")) {
    const s = a.dataset.status;
    if (s === "skipped") continue;
    a.addEventListener("click", (e) => {
      e.preventDefault();
      state.status = s; statusSel.value = s; state.page = 1;
      for (const o of document.querySelectorAll("a.total")) o.removeAttribute("aria-current");
      a.setAttribute("aria-current", "page");
      refresh(true);
    });
  }
  for (const a of document.querySelectorAll("#pager a")) {
    a.addEventListener("click", (e) => {
      e.preventDefault();
      state.page = Number(new URL(a.href).searchParams.get("page")) || 1;
      refresh(true);
    });
  }

  if (window.EventSource) {
    const es = new EventSource("/api/events?mode=summary");
    es.addEventListener("open", () => setLive("live", "up"));
    es.addEventListener("error", () => setLive("reconnecting…", "down"));
    es.addEventListener("summary", (ev) => {
      setLive("live", "up");
      const s = JSON.parse(ev.data);
      if (s.counts) counts(s.counts);
      const ready = document.getElementById("n-ready");
      if (ready && s.ready != null) ready.textContent = s.ready ? "done" : "running";
      // A hidden tab does not fetch; it catches up when shown again.
      if (s.changes > 0) { if (document.hidden) stale = true; else refresh(false); }
    });
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && stale) { stale = false; refresh(false); }
  });
})();
