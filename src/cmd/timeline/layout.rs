//! Layout: the geometry of bars, lanes and marks, the scale, and the
//! style sheet.

// Pixel and millisecond positions are computed in f64 and cast back; a
// float-to-integer `as` saturates, so nothing wraps.
#![allow(clippy::cast_possible_truncation)]

use super::*;

pub(super) const WIDTH: f64 = 1200.0;
/// Left edge of the plot; lock labels end just before it.
pub(super) const PLOT_X: f64 = 250.0;
pub(super) const PLOT_W: f64 = WIDTH - PLOT_X - 24.0;
/// Width of an aggregation column, in pixels.
pub(crate) const AGG_PX: f64 = 4.0;
/// Lanes drawn at most; beyond, the least busy locks share the last one.
pub(crate) const MAX_LANES: usize = 120;
pub(super) const LABEL_CHARS: usize = 36;
pub(super) const TOP: f64 = 92.0;

/// Escape text for XML content and attribute values.
pub(super) fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The directory prefix (ending in `/`) shared by every path.
pub(super) fn common_dir<'a>(paths: impl Iterator<Item = &'a str>) -> String {
    let mut prefix: Option<&str> = None;
    for p in paths {
        let dir = &p[..p.rfind('/').map_or(0, |i| i + 1)];
        prefix = Some(match prefix {
            None => dir,
            Some(q) => {
                let n = q
                    .bytes()
                    .zip(dir.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                &q[..q[..n].rfind('/').map_or(0, |i| i + 1)]
            }
        });
    }
    prefix.unwrap_or("").to_owned()
}

/// A lane label: the path below `prefix`, its start elided when too long.
pub(super) fn short_label(path: &str, prefix: &str) -> String {
    let rest = path.strip_prefix(prefix).filter(|r| !r.is_empty());
    let rest = rest.unwrap_or(path);
    let n = rest.chars().count();
    if n <= LABEL_CHARS {
        return rest.to_owned();
    }
    let tail: String = rest.chars().skip(n - (LABEL_CHARS - 1)).collect();
    format!("…{tail}")
}

/// Where and how long an attempt's bar is.
pub(super) struct Geom {
    pub(super) start: Ms,
    pub(super) end: Ms,
    /// The bar runs to the last time seen: no end, no release.
    pub(super) open: bool,
    /// The lock was taken (a hold bar), or not (a wait-row bar).
    pub(super) held: bool,
    /// The wait before the acquisition.
    pub(super) wait: Option<(Ms, Ms)>,
}

pub(super) fn geometry(a: &Attempt, last: Ms) -> Geom {
    let end_ts = a.end.as_ref().map(|e| e.ts);
    match a.acquired.or(a.started) {
        Some(s) => {
            let (end, open) = match a.released.or(a.leak).or(end_ts) {
                Some(e) => (e, false),
                None => (last, true),
            };
            let from_wait_ms = a
                .acquired
                .zip(a.wait_ms)
                .map(|(acq, w)| acq - w.round() as Ms);
            let wait_start = match (a.waiting, from_wait_ms) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            Geom {
                start: s,
                end: end.max(s),
                open,
                held: true,
                wait: wait_start.filter(|&w| w < s).map(|w| (w, s)),
            }
        }
        None => {
            let start = a.waiting.unwrap_or(a.first);
            let (end, open) = match a.conflict.or(end_ts) {
                Some(e) => (e, false),
                None => (last, true),
            };
            Geom {
                start,
                end: end.max(start),
                open,
                held: false,
                wait: None,
            }
        }
    }
}

/// Vertical layout of a lane of height `h` at `top`.
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub(super) top: f64,
    pub(super) h: f64,
    pub(super) bar_y: f64,
    pub(super) bar_h: f64,
    pub(super) wait_y: f64,
    pub(super) wait_h: f64,
}

impl Rows {
    pub(super) fn new(top: f64, h: f64) -> Self {
        let bar_y = top + (h * 0.2).round();
        let bar_h = (h * 0.46).round();
        let wait_y = bar_y + bar_h + (h * 0.08).max(1.0).round();
        let wait_h = (h * 0.16).max(2.0).round();
        Self {
            top,
            h,
            bar_y,
            bar_h,
            wait_y,
            wait_h,
        }
    }

    pub(super) fn mid(&self) -> f64 {
        self.bar_y + self.bar_h / 2.0
    }

    /// Size of a mark.
    pub(super) fn mark(&self) -> f64 {
        (self.h * 0.16).clamp(2.5, 4.5)
    }
}

pub(super) struct Scale {
    pub(super) lo: f64,
    pub(super) px_per_ms: f64,
}

impl Scale {
    pub(super) fn x(&self, t: Ms) -> f64 {
        PLOT_X + (t as f64 - self.lo) * self.px_per_ms
    }

    pub(super) fn px(&self, ms: Ms) -> f64 {
        ms as f64 * self.px_per_ms
    }
}

/// Kinds of marks, in drawing order.
#[derive(Clone, Copy)]
pub(super) enum Mark {
    First,
    Final,
    HeartbeatLast,
    Leak,
    LeaseLost,
}

impl Mark {
    pub(super) const ALL: [Mark; 5] = [
        Mark::First,
        Mark::Final,
        Mark::HeartbeatLast,
        Mark::Leak,
        Mark::LeaseLost,
    ];

    pub(super) fn class(self) -> &'static str {
        match self {
            Mark::First => "signal-first",
            Mark::Final => "signal-final",
            Mark::HeartbeatLast => "heartbeat-last",
            Mark::Leak => "leak",
            Mark::LeaseLost => "lease-lost",
        }
    }

    pub(super) fn legend(self) -> &'static str {
        match self {
            Mark::First => "first signal",
            Mark::Final => "final signal (KILL)",
            Mark::HeartbeatLast => "last heartbeat before the watchdog",
            Mark::Leak => "leak (lock still held)",
            Mark::LeaseLost => "lease lost",
        }
    }

    /// The shape, centred on `x` of the lane `r`.
    pub(super) fn shape(self, out: &mut String, x: f64, r: &Rows, title: Option<&str>) {
        let s = r.mark();
        let m = r.mid();
        let class = self.class();
        let body = match self {
            Mark::First => format!(
                "<path class=\"mark {class}\" d=\"M{:.1} {:.1}h{:.1}l{:.1} {:.1}z\"",
                x - s,
                r.bar_y - s,
                2.0 * s,
                -s,
                2.0 * s
            ),
            Mark::Final => format!(
                "<path class=\"mark {class}\" d=\"M{:.1} {:.1}l{:.1} {:.1}M{:.1} {:.1}l{:.1} {:.1}\"",
                x - s,
                m - s,
                2.0 * s,
                2.0 * s,
                x + s,
                m - s,
                -2.0 * s,
                2.0 * s
            ),
            Mark::HeartbeatLast => format!(
                "<circle class=\"mark {class}\" cx=\"{x:.1}\" cy=\"{m:.1}\" r=\"{:.1}\"",
                s * 0.8
            ),
            Mark::Leak => format!(
                "<path class=\"mark {class}\" d=\"M{x:.1} {:.1}l{s:.1} {s:.1}l{:.1} {s:.1}l{:.1} {:.1}z\"",
                m - s,
                -s,
                -s,
                -s
            ),
            Mark::LeaseLost => format!(
                "<rect class=\"mark {class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"",
                x - s * 0.8,
                m - s * 0.8,
                1.6 * s,
                1.6 * s
            ),
        };
        out.push_str(&body);
        match title {
            Some(t) => {
                let _ = write!(out, "><title>{}</title></{}>", esc(t), tag(&body));
            }
            None => out.push_str("/>"),
        }
    }
}

/// The element name of an opening tag written by [`Mark::shape`].
pub(super) fn tag(open: &str) -> &str {
    open[1..].split(' ').next().unwrap_or("path")
}

/// A lane as drawn.
pub(super) struct Lane {
    /// The lock's path, or a description of the shared lane.
    pub(super) name: String,
    pub(super) label: String,
    pub(super) attempts: Vec<usize>,
    pub(super) aggregated: bool,
}

pub(super) const STYLE: &str = "
text { font-family: sans-serif; fill: #222 }
.heading { font-size: 15px; font-weight: bold }
.sub { font-size: 11px; fill: #555 }
.tick { font-size: 10px; fill: #444; text-anchor: middle }
.tick-date { font-size: 9px; fill: #777; text-anchor: middle }
.utc { font-size: 9px; fill: #777; text-anchor: end }
.label { font-size: 11px; text-anchor: end }
.count { font-size: 9px; fill: #777; text-anchor: end }
.lane-bg { fill: #f4f5f7 }
.grid { stroke: #dde1e6; stroke-width: 1 }
.axis { stroke: #888; stroke-width: 1 }
.wait { fill: #9fb0c3; opacity: 0.75 }
.bar { stroke: #fff; stroke-width: 0.6 }
.bar.open { fill: url(#open-fade) }
.bar.nonzero, .swatch.nonzero { stroke: #b2182b; stroke-width: 2 }
.outcome-unknown { stroke: #666; stroke-width: 0.8; stroke-dasharray: 3 2 }
.signal-first { fill: #fff; stroke: #111; stroke-width: 1.2 }
.signal-final { fill: none; stroke: #a50026; stroke-width: 2.2 }
.heartbeat-last { fill: #111; stroke: #fff; stroke-width: 0.8 }
.hb-gap { fill: none; stroke: #111; stroke-width: 1.2; stroke-dasharray: 1.5 2 }
.leak { fill: #d7191c; stroke: #fff; stroke-width: 0.8 }
.leak-tail { fill: none; stroke: #d7191c; stroke-width: 1.5; stroke-dasharray: 5 3 }
.lease-lost { fill: #7b3294; stroke: #fff; stroke-width: 0.8 }
.legend { font-size: 11px }
";
