// litefleet restores: the tenant page's timeline and restore form, and live restore
// jobs (the tenant page's and the /restores page's) from /api/events?mode=restores.
// The pages are rendered on the server; this script only makes them live. Job items are
// built with DOM APIs and textContent only, like `job_item` in src/http/html_restore.rs
// (keep them in step). It runs after dashboard.js, whose formatting it shares.
"use strict";
(function () {
  const list = document.getElementById("restore-jobs");
  const form = document.getElementById("restore-form");
  const svg = document.getElementById("timeline");
  const msg = document.getElementById("restore-msg");

  const { bytes, hex16 } = window.litefleetFmt;
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function say(text, bad) {
    if (!msg) return;
    msg.textContent = text;
    msg.className = bad ? "err" : "";
  }

  function progressOf(j) {
    const p = j.progress;
    if (j.state === "done") return [1, 1];
    if (p.bytesTotal > 0) return [Math.min(p.bytesDone, p.bytesTotal), p.bytesTotal];
    return [0, 1];
  }
  function progressText(j) {
    const p = j.progress;
    if (j.state === "queued") return "waiting for a slot";
    if (j.state === "done") return p.filesTotal + (p.filesTotal === 1 ? " file, " : " files, ") + bytes(p.bytesDone) + " downloaded";
    if (j.state === "failed" || j.state === "cancelled") return "stopped at " + bytes(p.bytesDone) + " of " + bytes(p.bytesTotal);
    const pct = p.bytesTotal > 0 ? Math.floor(p.bytesDone * 100 / p.bytesTotal) : 0;
    let s = p.phase + " · " + pct + " % · " + bytes(p.bytesDone) + " of " + bytes(p.bytesTotal) + " · " +
      p.filesDone + "/" + p.filesTotal + " files";
    if (p.pagesTotal > 0) s += " · " + p.pagesDone + "/" + p.pagesTotal + " pages";
    return s;
  }

  // Keep in step with `job_item` in src/http/html_restore.rs.
  function jobItem(j, showTenant) {
    const li = el("li", "job st-" + j.state);
    li.dataset.job = j.id;
    const head = el("div", "job-head");
    const badge = el("span", "badge st-" + j.state);
    const dot = el("span", "dot");
    dot.setAttribute("aria-hidden", "true");
    badge.append(dot, j.state);
    head.append(badge, " ");
    if (showTenant) {
      const a = el("a", "mono", j.tenant);
      a.href = "/tenants/" + encodeURIComponent(j.tenant);
      head.append(a, " ");
    }
    head.append(el("span", "point", j.point), " → ", el("span", "target", j.target), " ", el("span", "path", j.output));
    if (j.state === "queued" || j.state === "running") {
      const b = el("button", "cancel", "Cancel");
      b.type = "button";
      b.dataset.job = j.id;
      head.append(" ", b);
    }
    li.appendChild(head);
    const pr = el("div", "job-progress");
    const bar = document.createElement("progress");
    const [value, max] = progressOf(j);
    bar.max = max;
    bar.value = value;
    pr.append(bar, " ", el("span", "pct", progressText(j)));
    li.appendChild(pr);
    const dl = el("dl", "job-result");
    function fact(k, v) { dl.append(el("dt", null, k)); const dd = el("dd"); dd.append(v); dl.append(dd); }
    if (j.txid != null) fact("TXID", el("span", "mono", hex16(j.txid)));
    if (j.restoredAt) fact("State of", j.restoredAt);
    if (j.size != null) fact("Size", bytes(j.size));
    if (j.sha256) fact("SHA-256", el("span", "mono sha", j.sha256));
    if (j.state === "done") fact("Integrity", j.integrity ? j.integrity + " (" + j.integrityCheck + " check)" : "not checked");
    if (j.forkId) {
      const a = el("a", "mono", j.forkId);
      a.href = "/tenants/" + j.forkId;
      fact("New tenant", a);
    }
    li.appendChild(dl);
    if (j.error) li.appendChild(el("p", "err", j.error));
    return li;
  }

  function show(j) {
    if (!list) return;
    const all = list.dataset.all === "1";
    if (!all && j.tenant !== list.dataset.tenant) return;
    const item = jobItem(j, all);
    const old = list.querySelector('li[data-job="' + CSS.escape(j.id) + '"]');
    if (old) old.replaceWith(item); else list.prepend(item);
    const none = document.getElementById("no-jobs");
    if (none) none.hidden = true;
  }

  if (list) {
    list.addEventListener("click", async (e) => {
      const b = e.target.closest("button.cancel");
      if (!b) return;
      b.disabled = true;
      const r = await fetch("/api/restores/" + encodeURIComponent(b.dataset.job), { method: "DELETE", credentials: "same-origin" });
      if (r.ok) show(await r.json()); else { b.disabled = false; say(await r.text(), true); }
    });
    if (window.EventSource) {
      const es = new EventSource("/api/events?mode=restores");
      es.addEventListener("restore", (ev) => { const d = JSON.parse(ev.data); if (d.restore) show(d.restore); });
    }
  }

  // The timeline: a click on a file picks its TXID, anywhere else the moment.
  if (svg && form) {
    const from = Number(svg.dataset.from), to = Number(svg.dataset.to);
    const left = Number(svg.dataset.left), width = Number(svg.dataset.width);
    const cursor = document.getElementById("tl-cursor");
    function pick(kind, value, x) {
      form.querySelector('input[name="point"][value="' + kind + '"]').checked = true;
      document.getElementById(kind === "txid" ? "restore-txid" : "restore-time").value = value;
      if (cursor) { cursor.setAttribute("x1", x); cursor.setAttribute("x2", x); }
      say("");
    }
    svg.addEventListener("click", (e) => {
      const r = svg.getBoundingClientRect();
      const x = (e.clientX - r.left) * width / r.width;
      const mark = e.target.closest("[data-txid]");
      if (mark) { pick("txid", hex16(Number(mark.dataset.txid)), x); return; }
      if (x < left) return;
      const at = Math.round(from + (x - left) / (width - left) * (to - from));
      pick("time", new Date(Math.min(at, Date.now())).toISOString(), x);
    });
  }

  if (form) {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const point = form.querySelector('input[name="point"]:checked').value;
      const body = { target: form.querySelector('input[name="target"]:checked').value,
        integrityCheck: document.getElementById("restore-check").value };
      if (point === "time") body.timestamp = document.getElementById("restore-time").value.trim();
      if (point === "txid") {
        const t = document.getElementById("restore-txid").value.trim().replace(/^0x/, "");
        if (!/^[0-9a-fA-F]{1,16}$/.test(t)) { say("a TXID is up to 16 hex digits, like 000000000000002a", true); return; }
        body.txid = parseInt(t, 16);
      }
      if (body.target === "fork") body.watchDir = document.getElementById("restore-watch").value;
      say("starting…");
      const r = await fetch("/api/clients/" + encodeURIComponent(form.dataset.tenant) + "/restores", {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      if (r.status === 202) { const j = await r.json(); show(j); say("restore " + j.id + " started"); }
      else say(await r.text(), true);
    });
  }
})();
