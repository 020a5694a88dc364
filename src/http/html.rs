//! The dashboard and tenant pages: plain HTML rendered on the server (the first page of
//! tenants is in the document, so it paints without waiting for script), with one small
//! script and one stylesheet embedded in the binary. The script adds live updates
//! (`/api/events?mode=summary`), search as you type and paging through `/api/clients`.
//!
//! Every string that comes from a file name, a config or an error goes through [`esc`];
//! the page uses no inline script or style, so the strict Content-Security-Policy holds.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use poem::http::StatusCode;
use poem::web::{Data, Html, Path, Query};
use poem::{IntoResponse, Response, handler};
use serde::Deserialize;

use super::State;
use super::view::{self, Client, ClientDetail, ClientPage, StatusFilter};

const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a path and lets it break after each `/` (long paths wrap, not overflow).
fn esc_path(s: &str) -> String {
    esc(s).replace('/', "/<wbr>")
}

/// Percent-encodes a query value.
fn qv(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `3 s`, `5 min`, `2 h`, `4 d`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

/// `2h 34m` (the seed's uptime).
fn uptime(d: Duration) -> String {
    let m = d.as_secs() / 60;
    match m {
        0 => format!("{}s", d.as_secs()),
        1..60 => format!("{m}m"),
        _ if m < 60 * 24 => format!("{}h {}m", m / 60, m % 60),
        _ => format!("{}d {}h", m / (60 * 24), (m / 60) % 24),
    }
}

fn epoch_ms(rfc: &str) -> Option<u128> {
    humantime::parse_rfc3339(rfc).ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis())
}

fn status_badge(status: &str) -> String {
    // The dot is drawn by CSS (no emoji font needed); the word carries the meaning.
    format!("<span class=\"badge st-{s}\"><span class=\"dot\" aria-hidden=\"true\"></span>{s}</span>", s = esc(status))
}

/// One table row; `dashboard.js` builds the same markup (keep them in step).
fn row(c: &Client, out: &mut String) {
    let id = esc(&c.client_id);
    let _ = write!(
        out,
        "<tr data-id=\"{id}\" data-path=\"{path}\" class=\"st-{st}\">\
         <th scope=\"row\"><a href=\"/tenants/{href}\">{id}</a></th>\
         <td>{badge}</td>\
         <td class=\"files\"><span class=\"path\">{path_wbr}</span><br><span class=\"path to\">→ {s3}</span></td>",
        path = esc(&c.database_path),
        path_wbr = esc_path(&c.database_path),
        st = esc(&c.status),
        href = qv(&c.client_id),
        badge = status_badge(&c.status),
        s3 = esc_path(&c.s3_path),
    );
    match (&c.last_sync_at, c.last_sync_age_seconds) {
        (Some(at), Some(age)) => {
            let _ = write!(
                out,
                "<td class=\"ago\" data-ts=\"{ts}\" title=\"{at}\">{ago} ago</td>",
                ts = epoch_ms(at).unwrap_or_default(),
                at = esc(at),
                ago = short_duration(Duration::from_secs_f64(age.max(0.0)))
            );
        }
        _ => out.push_str("<td class=\"ago\">never</td>"),
    }
    let txid = c.txid.map(|t| format!("{t:016x}")).unwrap_or_else(|| "–".to_owned());
    let lag =
        if c.lag_seconds > 0.0 { short_duration(Duration::from_secs_f64(c.lag_seconds)) } else { "0 s".to_owned() };
    let err = match (&c.last_error, &c.conflict_with) {
        (Some(e), _) => esc(e),
        (None, Some(other)) => format!("same prefix as {}", esc(other)),
        (None, None) => String::new(),
    };
    let _ = write!(
        out,
        "<td class=\"num mono\">{txid}</td><td class=\"num\">{lag}</td><td class=\"num\" title=\"{files} files\">{bytes}</td>\
         <td title=\"{created}\">{created_short}</td><td class=\"err\">{err}</td></tr>",
        files = c.files_shipped,
        bytes = bytes(c.bytes_shipped),
        created = esc(&c.created_at),
        created_short = esc(c.created_at.replace('T', " ").get(..16).unwrap_or(&c.created_at)),
    );
}

/// Query string of the dashboard.
#[derive(Debug, Default, Deserialize)]
pub struct DashboardQuery {
    q: Option<String>,
    status: Option<String>,
    page: Option<usize>,
}

fn page_link(q: &str, status: &str, page: u64) -> String {
    let mut s = format!("/?page={page}");
    if !q.is_empty() {
        s.push_str("&q=");
        s.push_str(&qv(q));
    }
    if !status.is_empty() {
        s.push_str("&status=");
        s.push_str(&qv(status));
    }
    s
}

pub(super) fn head(title: &str, out: &mut String) {
    let v = qv(env!("CARGO_PKG_VERSION"));
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/assets/dashboard.css?v={v}\">\
         <script src=\"/assets/dashboard.js?v={v}\" defer></script></head><body>",
        title = esc(title)
    );
}

/// `GET /`: the dashboard.
#[handler]
pub fn dashboard(state: Data<&State>, Query(dq): Query<DashboardQuery>) -> Response {
    let snap = state.board.snapshot();
    let status_s = dq.status.clone().unwrap_or_default();
    let q = dq.q.clone().unwrap_or_default();
    let query = view::Query {
        status: StatusFilter::parse(&status_s),
        q: q.clone(),
        page: dq.page.unwrap_or(1),
        per_page: view::DEFAULT_PER_PAGE,
    };
    let page: ClientPage = query.page_of(&snap);
    let status_s = if query.status.is_some() { status_s } else { String::new() };
    let c = snap.counts;
    let info = &snap.info;

    let mut out = String::with_capacity(64 * 1024);
    head(&format!("litefleet — {} tenants", c.total), &mut out);
    let _ = write!(
        out,
        "<header class=\"top\"><h1>litefleet</h1><span class=\"version\">v{ver}</span>\
         <nav class=\"links\"><a href=\"/\" aria-current=\"page\">Tenants</a> <a href=\"/restores\">Restores</a></nav>\
         <span id=\"live\" class=\"live\" role=\"status\" aria-live=\"polite\">static</span></header><main>\
         <section class=\"fleet\" aria-label=\"Fleet\"><dl>\
         <dt>Bucket</dt><dd id=\"bucket\">{bucket}</dd>\
         <dt>Replicas</dt><dd class=\"path\">{url}</dd>\
         <dt>Watching</dt><dd><ul class=\"dirs\">",
        ver = esc(&info.version),
        bucket = esc(&info.bucket),
        url = esc(&format!("{}/{}", info.storage_url.split('?').next().unwrap_or_default(), info.root)),
    );
    for d in &info.watch_dirs {
        let _ = write!(out, "<li class=\"path\">{}</li>", esc(&d.display().to_string()));
    }
    let _ = write!(out, "</ul></dd>");
    if let Some(key) = &info.encryption {
        let _ = write!(
            out,
            "<dt>Encryption</dt><dd id=\"encryption\">on, key <code>{}</code>: replica files are encrypted \
             and only litefleet with the keyring restores them (<code>litestream restore</code> cannot)</dd>",
            esc(key)
        );
    }
    let up = snap.taken_at.duration_since(info.started_at).unwrap_or_default();
    let _ = write!(
        out,
        "</dl></section>\
         <section class=\"stats\" aria-label=\"Statistics\">\
         <div class=\"stat\"><span class=\"n\" id=\"n-activeclients\">{active}</span> Active clients</div>\
         <div class=\"stat\"><span class=\"n\">{dirs}</span> Watch director{ies}</div>\
         <div class=\"stat\"><span class=\"n\" id=\"uptime\" data-started=\"{started}\">{uptime}</span> Uptime</div>\
         <div class=\"stat\"><span class=\"n\" id=\"n-ready\">{ready}</span> Initial scan</div></section>",
        active = c.active + c.lagging + c.starting,
        dirs = info.watch_dirs.len(),
        ies = if info.watch_dirs.len() == 1 { "y" } else { "ies" },
        started = info.started_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis(),
        uptime = uptime(up),
        ready = if snap.ready { "done" } else { "running" },
    );
    out.push_str("<nav class=\"totals\" aria-label=\"Tenants by state\"><ul>");
    let totals: [(&str, &str, usize); 9] = [
        ("", "All", c.total),
        ("active", "Healthy", c.active),
        ("starting", "Starting", c.starting),
        ("lagging", "Lagging", c.lagging),
        ("error", "Error", c.error),
        ("conflict", "Conflict", c.conflict),
        ("held", "Held elsewhere", c.held),
        ("fenced", "Fenced", c.fenced),
        ("skipped", "Skipped", c.skipped),
    ];
    for (key, label, n) in totals {
        let href = if key == "skipped" { "#skipped".to_owned() } else { page_link(&q, key, 1) };
        let current = if key == status_s && key != "skipped" { " aria-current=\"page\"" } else { "" };
        let id = if key.is_empty() { "total" } else { key };
        let _ = write!(
            out,
            "<li><a class=\"total t-{id}\" href=\"{href}\" data-status=\"{key}\"{current}>\
             <span class=\"n\" id=\"n-{id}\">{n}</span> {label}</a></li>",
            href = esc(&href),
        );
    }
    out.push_str("</ul></nav>");
    let _ = write!(
        out,
        "<form id=\"search\" role=\"search\" method=\"get\" action=\"/\">\
         <label for=\"q\">Search tenants</label>\
         <input id=\"q\" name=\"q\" type=\"search\" value=\"{q}\" placeholder=\"id or path\" autocomplete=\"off\" spellcheck=\"false\">\
         <label for=\"status\">Status</label><select id=\"status\" name=\"status\">",
        q = esc(&q)
    );
    for (v, label) in [
        ("", "any"),
        ("active", "active"),
        ("starting", "starting"),
        ("lagging", "lagging"),
        ("error", "error"),
        ("conflict", "conflict"),
        ("held", "held"),
        ("fenced", "fenced"),
    ] {
        let sel = if v == status_s { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{v}\"{sel}>{label}</option>");
    }
    out.push_str("</select><button type=\"submit\">Search</button></form>");
    render_page_info(&page, &q, &status_s, &mut out);
    out.push_str(
        "<div class=\"scroll\"><table id=\"tenants\"><caption class=\"visually-hidden\">Tenants</caption><thead><tr>\
         <th scope=\"col\">Tenant</th><th scope=\"col\">Status</th><th scope=\"col\">Database → storage path</th>\
         <th scope=\"col\">Last sync</th><th scope=\"col\">TXID</th>\
         <th scope=\"col\">Lag</th><th scope=\"col\">Shipped</th><th scope=\"col\">Created</th>\
         <th scope=\"col\">Last error</th></tr></thead><tbody>",
    );
    for cl in &page.clients {
        row(cl, &mut out);
    }
    out.push_str("</tbody></table></div>");
    if page.clients.is_empty() {
        out.push_str("<p id=\"empty\" class=\"empty\">No tenant matches.</p>");
    } else {
        out.push_str("<p id=\"empty\" class=\"empty\" hidden>No tenant matches.</p>");
    }
    render_pager(&page, &q, &status_s, &mut out);
    let _ = write!(out, "<details id=\"skipped\"><summary>Skipped files ({})</summary>", snap.skipped.len());
    if snap.skipped.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        out.push_str("<ul>");
        for s in &snap.skipped {
            let _ = write!(
                out,
                "<li><span class=\"path\">{}</span> — {}</li>",
                esc(&s.path.display().to_string()),
                esc(&s.reason)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str(
        "</details><section class=\"tips\" aria-labelledby=\"tips-h\"><h2 id=\"tips-h\">Usage tips</h2><ul>\
         <li>Create client: <code>touch /path/to/12345678-1234-5678-9abc-123456789012.db</code></li>\
         <li>Remove client: delete the <code>.db</code> file (its replica stays)</li>\
         <li>GUID format: <code>xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx</code></li>\
         <li>Restore: open a tenant and click a moment of its restore window (or copy the exact <code>litefleet restore</code> and <code>litestream restore</code> commands); <a href=\"/restores\">Restores</a> lists every job</li>\
         <li>API: <a href=\"/api/status\">/api/status</a>, <a href=\"/api/docs\">API docs</a>, <a href=\"/metrics\">/metrics</a></li>\
         </ul></section></main></body></html>",
    );
    Html(out).into_response()
}

fn render_page_info(page: &ClientPage, q: &str, status: &str, out: &mut String) {
    let first = if page.matching == 0 { 0 } else { (page.page - 1) * page.per_page + 1 };
    let last = (page.page * page.per_page).min(page.matching);
    let filtered = !q.is_empty() || !status.is_empty();
    let _ = write!(
        out,
        "<p id=\"matching\" role=\"status\">Showing {first}–{last} of {m} {what}</p>",
        m = page.matching,
        what = if filtered { "matching tenants" } else { "tenants" }
    );
}

fn render_pager(page: &ClientPage, q: &str, status: &str, out: &mut String) {
    out.push_str("<nav id=\"pager\" class=\"pager\" aria-label=\"Pages\">");
    if page.page > 1 {
        let _ = write!(out, "<a rel=\"prev\" href=\"{}\">« Previous</a>", esc(&page_link(q, status, page.page - 1)));
    } else {
        out.push_str("<span class=\"off\">« Previous</span>");
    }
    let _ = write!(out, " <span id=\"pageno\">Page {} of {}</span> ", page.page, page.pages);
    if page.page < page.pages {
        let _ = write!(out, "<a rel=\"next\" href=\"{}\">Next »</a>", esc(&page_link(q, status, page.page + 1)));
    } else {
        out.push_str("<span class=\"off\">Next »</span>");
    }
    out.push_str("</nav>");
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let mut out = String::new();
    head(title, &mut out);
    let _ = write!(
        out,
        "<header class=\"top\"><h1><a href=\"/\">litefleet</a></h1></header><main><h2>{}</h2><p>{}</p>\
         <p><a href=\"/\">Back to the dashboard</a></p></main></body></html>",
        esc(title),
        esc(message)
    );
    Html(out).with_status(status).into_response()
}

/// `GET /tenants/{id}`: one tenant, its replica and how to restore it.
#[handler]
pub async fn tenant(state: Data<&State>, Path(raw): Path<String>) -> Response {
    let Some(id) = view::parse_id(&raw) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Malformed tenant id",
            "A tenant id is a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) or a file stem.",
        );
    };
    let entries = state.board.by_id(&id);
    let threshold = state.board.info().lag_threshold;
    let Some(d) = view::detail(&state.storage, &entries, threshold).await else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Unknown tenant",
            &format!("No registered database has the id {id}."),
        );
    };
    let mut restore = String::new();
    super::html_restore::tenant_section(state.0, &d, &mut restore);
    Html(render_tenant(&d, &restore, state.storage.sealing_key())).into_response()
}

fn fact(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(name), value);
}

/// The tenant page; `restore` is its restore section (timeline, form, jobs), placed
/// after the restore window.
/// `encryption`: the key new files are encrypted with, when `[encryption]` is on.
fn render_tenant(d: &ClientDetail, restore: &str, encryption: Option<&str>) -> String {
    let c = &d.client;
    let mut out = String::with_capacity(16 * 1024);
    head(&format!("litefleet — {}", c.client_id), &mut out);
    let _ = write!(
        out,
        "<header class=\"top\"><h1><a href=\"/\">litefleet</a></h1><nav class=\"links\"><a href=\"/\">Tenants</a> \
         <a href=\"/restores\">Restores</a></nav></header><main>\
         <p><a href=\"/\">« All tenants</a></p><h2 class=\"mono\">{id}</h2><dl class=\"facts\">",
        id = esc(&c.client_id)
    );
    fact(&mut out, "Status", &status_badge(&c.status));
    fact(&mut out, "Database", &format!("<span class=\"path\">{}</span>", esc(&c.database_path)));
    fact(&mut out, "Watch directory", &format!("<span class=\"path\">{}</span>", esc(&c.watch_dir)));
    fact(&mut out, "Replica prefix", &format!("<span class=\"path\">{}</span>", esc(&c.s3_path)));
    fact(&mut out, "Replica URL", &format!("<span class=\"path\">{}</span>", esc(&c.replica_url)));
    fact(&mut out, "Created", &esc(&c.created_at));
    let last = match (&c.last_sync_at, c.last_sync_age_seconds) {
        (Some(at), Some(age)) => format!(
            "<span class=\"ago\" data-ts=\"{}\">{} ago</span> ({})",
            epoch_ms(at).unwrap_or_default(),
            short_duration(Duration::from_secs_f64(age.max(0.0))),
            esc(at)
        ),
        _ => "never".to_owned(),
    };
    fact(&mut out, "Last successful sync", &last);
    fact(
        &mut out,
        "TXID",
        &c.txid.map(|t| format!("<span class=\"mono\">{t:016x}</span> ({t})")).unwrap_or("–".into()),
    );
    fact(&mut out, "Replication lag", &short_duration(Duration::from_secs_f64(c.lag_seconds.max(0.0))));
    fact(
        &mut out,
        "Shipped by this daemon",
        &format!(
            "{} in {} files ({} snapshots), {} syncs, {} failed",
            bytes(c.bytes_shipped),
            c.files_shipped,
            c.snapshots_shipped,
            c.syncs,
            c.errors
        ),
    );
    fact(&mut out, "Open connection", if c.hot { "yes" } else { "no" });
    if let Some(e) = &c.last_error {
        fact(&mut out, "Last error", &format!("<span class=\"err\">{}</span>", esc(e)));
    }
    if let Some(o) = &c.conflict_with {
        fact(&mut out, "Conflicts with", &format!("<span class=\"path\">{}</span>", esc(o)));
    }
    for (k, v) in &c.labels {
        fact(&mut out, &format!("Label {k}"), &esc(v));
    }
    out.push_str("</dl>");
    if !d.conflicts.is_empty() {
        out.push_str("<h3>Other files with this id</h3><ul>");
        for o in &d.conflicts {
            let _ = write!(
                out,
                "<li><span class=\"path\">{}</span> {} {}</li>",
                esc(&o.database_path),
                status_badge(&o.status),
                esc(o.last_error.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("<h3>Restore window</h3>");
    match &d.restore_window {
        Some(w) => {
            let _ = write!(
                out,
                "<p id=\"window\">From TXID <span class=\"mono\">{:016x}</span> ({}) to TXID <span class=\"mono\">{:016x}</span> ({}). \
                 A full restore downloads {} files, {}.</p>",
                w.earliest_txid,
                esc(w.earliest_at.as_deref().unwrap_or("time unknown")),
                w.latest_txid,
                esc(w.latest_at.as_deref().unwrap_or("time unknown")),
                w.files,
                bytes(w.bytes)
            );
        }
        None => out.push_str("<p id=\"window\">Nothing to restore yet.</p>"),
    }
    if let Some(e) = &d.replica_error {
        let _ = write!(out, "<p class=\"err\">Replica: {}</p>", esc(e));
    }
    out.push_str(restore);
    let cmd = &d.commands;
    let creds = match c.replica_url.split("://").next().unwrap_or_default() {
        "s3" => {
            "<p>Both read S3 credentials from <code>AWS_ACCESS_KEY_ID</code> and <code>AWS_SECRET_ACCESS_KEY</code>.</p>"
        }
        "gs" => {
            "<p>Both read Google credentials from <code>GOOGLE_APPLICATION_CREDENTIALS</code>, and an emulator from <code>STORAGE_EMULATOR_HOST</code>.</p>"
        }
        "sftp" => {
            "<p>litefleet runs your <code>ssh</code> (its keys, agent and known hosts); Litestream needs \
             <code>key-path</code> (and <code>host-key</code>) in a config file.</p>"
        }
        "abs" => {
            "<p>litefleet reads the account key from <code>AZURE_STORAGE_KEY</code>, Litestream from \
             <code>LITESTREAM_AZURE_ACCOUNT_KEY</code>; Litestream takes a custom endpoint (Azurite) only \
             from a config file's <code>endpoint</code>.</p>"
        }
        _ => "",
    };
    if let Some(key) = encryption {
        // Litestream cannot open encrypted files: no command of its to copy.
        let _ = write!(
            out,
            "<h3>Restore commands</h3><p class=\"note\" id=\"encryption-note\">Encryption is on (key <code>{}</code>): \
             this replica's files are encrypted, so <code>litestream restore</code> cannot restore it; litefleet \
             needs the keyring (<code>--config</code> with <code>[encryption]</code>, or <code>--keys-file</code>).</p>\
             <p>With litefleet:</p><pre><code id=\"cmd-litefleet\">{} --keys-file &lt;keyring&gt;</code></pre>\
             <p>To a point in time:</p><pre><code>{} --keys-file &lt;keyring&gt;</code></pre>{creds}",
            esc(key),
            esc(&cmd.litefleet),
            esc(&cmd.litefleet_at_time),
        );
    } else {
        let _ = write!(
            out,
            "<h3>Restore commands</h3><p>With litefleet:</p><pre><code id=\"cmd-litefleet\">{}</code></pre>\
             <p>With Litestream 0.5:</p><pre><code id=\"cmd-litestream\">{}</code></pre>\
             <p>To a point in time:</p><pre><code>{}\n{}</code></pre>{creds}",
            esc(&cmd.litefleet),
            esc(&cmd.litestream),
            esc(&cmd.litefleet_at_time),
            esc(&cmd.litestream_at_time)
        );
    }
    out.push_str("<h3>Files by level</h3>");
    if d.levels.is_empty() {
        out.push_str("<p>No files.</p>");
    } else {
        out.push_str(
            "<table class=\"levels\"><thead><tr><th scope=\"col\">Level</th><th scope=\"col\">Files</th>\
             <th scope=\"col\">Size</th><th scope=\"col\">TXIDs</th></tr></thead><tbody>",
        );
        for l in &d.levels {
            let span = match (l.files.first(), l.files.last()) {
                (Some(a), Some(b)) => format!("{:016x} – {:016x}", a.min_txid, b.max_txid),
                _ => String::new(),
            };
            let _ = write!(
                out,
                "<tr><th scope=\"row\">L{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"mono\">{}</td></tr>",
                l.level,
                l.count,
                bytes(l.bytes),
                span
            );
        }
        out.push_str("</tbody></table>");
        for l in &d.levels {
            let shown = if l.count as usize > l.files.len() {
                format!(" (newest {} of {})", l.files.len(), l.count)
            } else {
                String::new()
            };
            let _ = write!(out, "<details><summary>L{} files{}</summary><ul class=\"files mono\">", l.level, shown);
            for f in &l.files {
                let _ = write!(out, "<li>{} <span class=\"size\">{}</span></li>", esc(&f.name), bytes(f.size));
            }
            out.push_str("</ul></details>");
        }
    }
    out.push_str("</main></body></html>");
    out
}

/// `GET /assets/dashboard.js`.
#[handler]
pub fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /assets/dashboard.css`.
#[handler]
pub fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

pub(super) fn asset(body: &'static str, content_type: &str) -> Response {
    // URLs carry the version, so a browser may keep them for a day.
    Response::builder().content_type(content_type).header("cache-control", "public, max-age=86400").body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(short_duration(Duration::from_secs(3)), "3 s");
        assert_eq!(short_duration(Duration::from_secs(300)), "5 min");
        assert_eq!(uptime(Duration::from_secs(2 * 3600 + 34 * 60)), "2h 34m");
    }
}
