//! Restores on the dashboard: the tenant page's restore section (the window as a
//! timeline, the form it fills, the tenant's jobs with live progress) and the
//! `/restores` page (every job). Rendered on the server like the rest; `restore.js`
//! makes the timeline clickable, submits the form to `POST /api/clients/{id}/restores`
//! and keeps the jobs live from `/api/events?mode=restores`. It builds the same job
//! markup as [`job_item`] (keep them in step) with DOM APIs and `textContent` only.

use std::fmt::Write as _;

use poem::web::{Data, Html};
use poem::{IntoResponse, Response, handler};

use super::State;
use super::html::{self, bytes, esc};
use super::restores::RestoreJob;
use super::view::ClientDetail;

const SCRIPT: &str = include_str!("assets/restore.js");

/// `GET /assets/restore.js`.
#[handler]
pub fn script() -> Response {
    html::asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// The `<script>` tag of `restore.js` (versioned like the dashboard's).
fn script_tag(out: &mut String) {
    let v: String = url::form_urlencoded::byte_serialize(env!("CARGO_PKG_VERSION").as_bytes()).collect();
    let _ = write!(out, "<script src=\"/assets/restore.js?v={v}\" defer></script>");
}

/// One job, as a list item; `restore.js` builds the same markup (`jobItem`).
pub fn job_item(j: &RestoreJob, show_tenant: bool, out: &mut String) {
    let _ = write!(
        out,
        "<li class=\"job st-{st}\" data-job=\"{id}\"><div class=\"job-head\">",
        st = esc(&j.state),
        id = esc(&j.id)
    );
    let _ = write!(
        out,
        "<span class=\"badge st-{st}\"><span class=\"dot\" aria-hidden=\"true\"></span>{st}</span> ",
        st = esc(&j.state)
    );
    if show_tenant {
        let _ = write!(
            out,
            "<a class=\"mono\" href=\"/tenants/{href}\">{id}</a> ",
            href = url::form_urlencoded::byte_serialize(j.tenant.as_bytes()).collect::<String>(),
            id = esc(&j.tenant)
        );
    }
    let _ = write!(
        out,
        "<span class=\"point\">{point}</span> → <span class=\"target\">{target}</span> <span class=\"path\">{output}</span>",
        point = esc(&j.point),
        target = esc(&j.target),
        output = esc(&j.output)
    );
    if j.state == "queued" || j.state == "running" {
        let _ = write!(out, " <button type=\"button\" class=\"cancel\" data-job=\"{}\">Cancel</button>", esc(&j.id));
    }
    out.push_str("</div>");
    let (value, max) = progress_of(j);
    let _ = write!(
        out,
        "<div class=\"job-progress\"><progress max=\"{max}\" value=\"{value}\"></progress> <span class=\"pct\">{}</span></div>",
        esc(&progress_text(j))
    );
    out.push_str("<dl class=\"job-result\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    if let Some(t) = j.txid {
        fact("TXID", format!("<span class=\"mono\">{t:016x}</span>"));
    }
    if let Some(at) = &j.restored_at {
        fact("State of", esc(at));
    }
    if let Some(size) = j.size {
        fact("Size", esc(&bytes(size)));
    }
    if let Some(h) = &j.sha256 {
        fact("SHA-256", format!("<span class=\"mono sha\">{}</span>", esc(h)));
    }
    if j.state == "done" {
        let check = match &j.integrity {
            Some(r) => format!("{} ({} check)", esc(r), esc(&j.integrity_check)),
            None => "not checked".to_owned(),
        };
        fact("Integrity", check);
    }
    if let Some(f) = &j.fork_id {
        fact("New tenant", format!("<a class=\"mono\" href=\"/tenants/{0}\">{0}</a>", esc(f)));
    }
    out.push_str("</dl>");
    if let Some(e) = &j.error {
        let _ = write!(out, "<p class=\"err\">{}</p>", esc(e));
    }
    out.push_str("</li>");
}

/// The progress bar's value and maximum (bytes of the plan; a finished job is full).
fn progress_of(j: &RestoreJob) -> (u64, u64) {
    let p = &j.progress;
    match j.state.as_str() {
        "done" => (1, 1),
        _ if p.bytes_total > 0 => (p.bytes_done.min(p.bytes_total), p.bytes_total),
        _ => (0, 1),
    }
}

/// `42 % · 1.2 MiB of 3.4 MiB · 12/20 files · 300/700 pages` (what the bar shows).
fn progress_text(j: &RestoreJob) -> String {
    let p = &j.progress;
    match j.state.as_str() {
        "queued" => "waiting for a slot".to_owned(),
        "done" => format!("{} file{}, {} downloaded", p.files_total, plural(p.files_total), bytes(p.bytes_done)),
        "failed" | "cancelled" => format!("stopped at {} of {}", bytes(p.bytes_done), bytes(p.bytes_total)),
        _ => {
            let pct = (p.bytes_done * 100).checked_div(p.bytes_total).unwrap_or(0);
            let mut s = format!(
                "{} · {pct} % · {} of {} · {}/{} files",
                p.phase,
                bytes(p.bytes_done),
                bytes(p.bytes_total),
                p.files_done,
                p.files_total
            );
            if p.pages_total > 0 {
                let _ = write!(s, " · {}/{} pages", p.pages_done, p.pages_total);
            }
            s
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The tenant page's restore section: the timeline, the form, the tenant's jobs.
pub fn tenant_section(state: &State, d: &ClientDetail, out: &mut String) {
    let id = &d.client.client_id;
    if let Some(t) = &d.timeline {
        out.push_str("<figure class=\"timeline-box\">");
        t.svg(out);
        let _ = write!(
            out,
            "<figcaption>Click a moment to restore the state as of then, or a file to restore the TXID it ends at{}.</figcaption></figure>",
            match t.omitted {
                0 => String::new(),
                1 => " (1 file is hidden under a newer one)".to_owned(),
                n => format!(" ({n} files are hidden under newer ones)"),
            }
        );
    }
    let _ = write!(
        out,
        "<h3 id=\"restore-h\">Restore</h3><form id=\"restore-form\" data-tenant=\"{}\" aria-labelledby=\"restore-h\">",
        esc(id)
    );
    if !state.writes_allowed {
        out.push_str(
            "<p class=\"notice\" id=\"restore-locked\">Restores change state, so they need a token: set <code>[http] token</code> \
             in the daemon's config (none is configured).</p>",
        );
    }
    let disabled = if state.writes_allowed && d.restore_window.is_some() { "" } else { " disabled" };
    let latest = d.restore_window.as_ref().map(|w| format!("{:016x}", w.latest_txid)).unwrap_or_default();
    let _ = write!(
        out,
        "<fieldset{disabled}><legend>Point</legend>\
         <label><input type=\"radio\" name=\"point\" value=\"latest\" checked> latest (TXID <span class=\"mono\">{latest}</span>)</label>\
         <label><input type=\"radio\" name=\"point\" value=\"time\"> as of <input id=\"restore-time\" name=\"timestamp\" type=\"text\" \
         placeholder=\"2026-01-02T15:04:05Z\" size=\"26\" spellcheck=\"false\" autocomplete=\"off\"></label>\
         <label><input type=\"radio\" name=\"point\" value=\"txid\"> TXID <input id=\"restore-txid\" name=\"txid\" type=\"text\" \
         placeholder=\"000000000000002a\" size=\"18\" spellcheck=\"false\" autocomplete=\"off\"></label></fieldset>\
         <fieldset{disabled}><legend>Into</legend>\
         <label><input type=\"radio\" name=\"target\" value=\"copy\" checked> a copy in the restore directory</label>\
         <label><input type=\"radio\" name=\"target\" value=\"fork\"> a new tenant in <select id=\"restore-watch\" name=\"watchDir\">"
    );
    for dir in &state.board.info().watch_dirs {
        let shown = dir.display().to_string();
        let sel = if std::path::Path::new(&d.client.watch_dir) == dir { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{v}\"{sel}>{v}</option>", v = esc(&shown));
    }
    let _ = write!(
        out,
        "</select></label></fieldset><fieldset{disabled}><legend>Check</legend><select id=\"restore-check\" name=\"integrityCheck\">\
         <option value=\"full\" selected>integrity_check</option><option value=\"quick\">quick_check</option>\
         <option value=\"none\">none</option></select></fieldset>\
         <button type=\"submit\"{disabled}>Restore</button> <span id=\"restore-msg\" role=\"status\" aria-live=\"polite\"></span></form>"
    );
    out.push_str("<h3>Restore jobs</h3><ul id=\"restore-jobs\" class=\"jobs\" data-tenant=\"");
    out.push_str(&esc(id));
    out.push_str("\">");
    let jobs = state.restores.as_ref().map(|r| r.list(Some(id))).unwrap_or_default();
    for j in &jobs {
        job_item(&RestoreJob::from(j.clone()), false, out);
    }
    out.push_str("</ul>");
    let _ = write!(
        out,
        "<p id=\"no-jobs\" class=\"empty\"{}>No restore of this tenant yet.</p>",
        if jobs.is_empty() { "" } else { " hidden" }
    );
    script_tag(out);
}

/// `GET /restores`: every restore job, live.
#[handler]
pub fn restores_page(state: Data<&State>) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    html::head("litefleet — restores", &mut out);
    out.push_str(
        "<header class=\"top\"><h1><a href=\"/\">litefleet</a></h1><nav class=\"links\"><a href=\"/\">Tenants</a> \
         <a href=\"/restores\" aria-current=\"page\">Restores</a></nav></header><main><h2>Restores</h2>",
    );
    let jobs = state.restores.as_ref().map(|r| r.list(None)).unwrap_or_default();
    if state.restores.is_none() {
        out.push_str(
            "<p class=\"notice\">This server runs no restore jobs (they run in <code>litefleet daemon</code>).</p>",
        );
    }
    let running = jobs.iter().filter(|j| !j.state.is_finished()).count();
    let _ = write!(
        out,
        "<p id=\"jobs-count\">{} job(s), {running} queued or running. Start one from a tenant's page.</p>\
         <ul id=\"restore-jobs\" class=\"jobs\" data-all=\"1\">",
        jobs.len()
    );
    for j in jobs {
        job_item(&RestoreJob::from(j), true, &mut out);
    }
    out.push_str("</ul>");
    script_tag(&mut out);
    out.push_str("</main></body></html>");
    Html(out).into_response()
}
