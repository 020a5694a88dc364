//! A tenant's restore window as a picture: a timeline from the oldest restorable moment
//! to now, with its snapshots, compacted files and L0 tail drawn where they lie.
//!
//! Built from the replica's listing ([`Catalog`]) and its [`Window`], nothing else: a
//! file is drawn at the time the storage reports for it (a folder's mtime, which is its
//! LTX header time; on S3 the upload time, within the upload delay of the header time),
//! at the TXID it ends at — a point a restore by TXID can stop at. Each lane keeps at
//! most one mark per pixel column (the newest), so a replica of thousands of files is
//! still a small picture. The SVG has no script and no inline style (CSS classes only),
//! so the strict Content-Security-Policy holds; `restore.js` makes it clickable.

use std::fmt::Write as _;
use std::time::SystemTime;

use poem_openapi::Object;

use super::html::esc;
use crate::ltx;
use crate::recovery::epoch_ms;
use crate::storage::catalog::{Catalog, Window};

/// Pixel columns of the picture (its viewBox width); also the most marks per lane.
pub const COLUMNS: i64 = 1000;
/// Left margin for the lane names.
const LEFT: i64 = 110;
const LANES: [(&str, &str); 3] = [("snapshot", "snapshots"), ("compacted", "compacted"), ("l0", "L0 tail")];

/// One file on the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct TimelineMark {
    /// `snapshot` (level 9), `compacted` (levels 1–8) or `l0`.
    pub lane: String,
    pub level: u32,
    pub min_txid: u64,
    /// The TXID it ends at: a point a restore by TXID can stop at.
    pub max_txid: u64,
    /// When it was written, as the storage reports it (epoch milliseconds).
    pub at_ms: i64,
}

/// The restore window as a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct Timeline {
    /// The oldest restorable moment (epoch milliseconds).
    pub from_ms: i64,
    /// Now, when the page was made (epoch milliseconds).
    pub to_ms: i64,
    /// The files drawn, oldest first.
    pub marks: Vec<TimelineMark>,
    /// Files not drawn because a newer one of the same lane fell in the same column.
    pub omitted: u64,
}

fn lane_of(level: u32) -> &'static str {
    match level {
        ltx::SNAPSHOT_LEVEL => "snapshot",
        0 => "l0",
        _ => "compacted",
    }
}

impl Timeline {
    /// The timeline of a replica whose restore window is `w`, at `now`; `None` when the
    /// window's start time is unknown.
    pub fn new(cat: &Catalog, w: &Window, now: SystemTime) -> Option<Timeline> {
        let from_ms = epoch_ms(w.earliest_at?);
        let to_ms = epoch_ms(now).max(from_ms + 1);
        let mut marks: Vec<TimelineMark> = cat
            .files()
            .iter()
            // A damaged file is in no restore chain: nothing to click on.
            .filter(|f| !cat.is_damaged(f))
            .filter_map(|f| {
                let at_ms = epoch_ms(f.created?);
                (at_ms >= from_ms && f.max_txid >= w.earliest_txid).then(|| TimelineMark {
                    lane: lane_of(f.level).to_owned(),
                    level: f.level,
                    min_txid: f.min_txid,
                    max_txid: f.max_txid,
                    at_ms: at_ms.min(to_ms),
                })
            })
            .collect();
        marks.sort_by_key(|m| (m.at_ms, m.max_txid));
        let all = marks.len();
        // One mark per lane and column: the newest.
        let column = |m: &TimelineMark| (m.at_ms - from_ms) * COLUMNS / (to_ms - from_ms);
        let mut kept: Vec<TimelineMark> = Vec::with_capacity(all);
        for m in marks {
            let dup = kept.iter().rposition(|k| k.lane == m.lane).filter(|&i| column(&kept[i]) == column(&m));
            match dup {
                Some(i) => kept[i] = m,
                None => kept.push(m),
            }
        }
        Some(Timeline { from_ms, to_ms, omitted: (all - kept.len()) as u64, marks: kept })
    }

    fn x(&self, at_ms: i64) -> i64 {
        LEFT + (at_ms - self.from_ms) * (COLUMNS - LEFT) / (self.to_ms - self.from_ms).max(1)
    }

    /// The SVG picture.
    pub fn svg(&self, out: &mut String) {
        let height = 30 + 26 * LANES.len() as i64;
        let _ = write!(
            out,
            "<svg id=\"timeline\" class=\"timeline\" viewBox=\"0 0 {COLUMNS} {height}\" role=\"img\" \
             aria-labelledby=\"timeline-title\" data-from=\"{from}\" data-to=\"{to}\" data-left=\"{LEFT}\" \
             data-width=\"{COLUMNS}\"><title id=\"timeline-title\">Restore window from {a} to now: {n} files; \
             click a moment to restore it, or a file to restore the TXID it ends at</title>\
             <rect class=\"tl-window\" x=\"{LEFT}\" y=\"4\" width=\"{w}\" height=\"{h}\"/>",
            from = self.from_ms,
            to = self.to_ms,
            a = esc(&stamp(self.from_ms)),
            n = self.marks.len(),
            w = COLUMNS - LEFT,
            h = height - 26,
        );
        for (i, (lane, name)) in LANES.iter().enumerate() {
            let y = 18 + 26 * i as i64;
            let _ = write!(
                out,
                "<text class=\"tl-lane\" x=\"4\" y=\"{ty}\">{name}</text><line class=\"tl-rule\" x1=\"{LEFT}\" \
                 y1=\"{y}\" x2=\"{COLUMNS}\" y2=\"{y}\"/>",
                ty = y + 4
            );
            let mut prev: Option<i64> = None;
            for m in self.marks.iter().filter(|m| m.lane == *lane) {
                let x = self.x(m.at_ms);
                let tip = format!(
                    "L{} {:016x}-{:016x}, {}: click to restore TXID {:016x}",
                    m.level,
                    m.min_txid,
                    m.max_txid,
                    stamp(m.at_ms),
                    m.max_txid
                );
                let data = format!("data-txid=\"{}\" data-at=\"{}\"", m.max_txid, m.at_ms);
                match *lane {
                    "snapshot" => {
                        let _ = write!(
                            out,
                            "<path class=\"tl-mark tl-snapshot\" {data} d=\"M{x} {a}l6 6l-6 6l-6 -6z\"><title>{t}</title></path>",
                            a = y - 6,
                            t = esc(&tip)
                        );
                    }
                    "compacted" => {
                        // A compacted file covers the time since the one before it.
                        let start = prev.unwrap_or(x - 4).min(x - 2);
                        let _ = write!(
                            out,
                            "<rect class=\"tl-mark tl-compacted tl-l{lvl}\" {data} x=\"{start}\" y=\"{a}\" \
                             width=\"{w}\" height=\"10\"><title>{t}</title></rect>",
                            lvl = m.level.min(8),
                            a = y - 5,
                            w = (x - start).max(2),
                            t = esc(&tip)
                        );
                        prev = Some(x + 1);
                    }
                    _ => {
                        let _ = write!(
                            out,
                            "<rect class=\"tl-mark tl-l0\" {data} x=\"{a}\" y=\"{b}\" width=\"3\" height=\"14\">\
                             <title>{t}</title></rect>",
                            a = x - 1,
                            b = y - 7,
                            t = esc(&tip)
                        );
                    }
                }
            }
        }
        let axis = height - 8;
        for k in 0..=4 {
            let at = self.from_ms + (self.to_ms - self.from_ms) * k / 4;
            let x = self.x(at);
            let anchor = match k {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            let label = if k == 4 { "now".to_owned() } else { stamp(at) };
            let _ = write!(
                out,
                "<text class=\"tl-axis\" x=\"{x}\" y=\"{axis}\" text-anchor=\"{anchor}\">{}</text>",
                esc(&label)
            );
        }
        out.push_str("<line id=\"tl-cursor\" class=\"tl-cursor\" x1=\"-10\" y1=\"4\" x2=\"-10\" y2=\"84\"/></svg>");
    }
}

/// `2026-01-02 15:04:05Z`.
fn stamp(ms: i64) -> String {
    humantime::format_rfc3339_seconds(crate::recovery::from_epoch_ms(ms)).to_string().replace('T', " ")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::storage::FileInfo;

    fn f(level: u32, min: u64, max: u64, secs: u64) -> FileInfo {
        FileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 4096,
            created: Some(UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }

    #[test]
    fn lanes_hold_snapshots_compacted_files_and_the_l0_tail_one_mark_per_column() {
        let mut files = vec![f(9, 1, 10, 1000), f(1, 1, 10, 1000), f(1, 11, 20, 1030), f(0, 21, 21, 1031)];
        // A burst of L0 files within one column: only the newest is drawn.
        files.extend((22..30).map(|t| f(0, t, t, 1031)));
        // A torn file (an interrupted upload) is damaged: not a point to restore to.
        files.push(FileInfo { size: 10, ..f(0, 22, 25, 1090) });
        let cat = Catalog::new(files);
        let w = cat.window().unwrap_or_else(|e| panic!("{e}"));
        let t = Timeline::new(&cat, &w, UNIX_EPOCH + Duration::from_secs(1100)).unwrap_or_else(|| panic!("no start"));
        assert_eq!((t.from_ms, t.to_ms), (1_000_000, 1_100_000));
        let lane = |l: &str| t.marks.iter().filter(|m| m.lane == l).map(|m| m.max_txid).collect::<Vec<_>>();
        assert_eq!(lane("snapshot"), [10]);
        assert_eq!(lane("compacted"), [10, 20]);
        assert_eq!(lane("l0"), [29], "the newest of the burst");
        assert_eq!(t.omitted, 8);
        let mut svg = String::new();
        t.svg(&mut svg);
        assert!(svg.starts_with("<svg id=\"timeline\"") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("class=\"tl-mark").count(), 4);
        assert!(svg.contains("data-txid=\"29\""));
        assert!(!svg.contains("style="), "no inline style under the CSP");
    }
}
