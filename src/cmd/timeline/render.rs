//! The SVG: lanes, bars, marks, aggregation columns and the legend.

// Pixel and millisecond positions are computed in f64 and cast back; a
// float-to-integer `as` saturates, so nothing wraps.
#![allow(clippy::cast_possible_truncation)]

use super::*;

/// The whole SVG document.
pub(crate) fn render(tl: &Timeline, malformed: u64) -> String {
    let mut out = String::with_capacity(64 * 1024 + tl.attempts.len() * 400);
    let mut lo = Ms::MAX;
    let mut last = Ms::MIN;
    for a in &tl.attempts {
        lo = lo.min(a.first);
        last = last.max(a.last);
    }
    if tl.attempts.is_empty() {
        lo = 0;
        last = 0;
    }
    let geoms: Vec<Geom> = tl.attempts.iter().map(|a| geometry(a, last)).collect();
    for g in &geoms {
        lo = lo.min(g.start).min(g.wait.map_or(g.start, |w| w.0));
    }
    let (from, to) = (lo, last);
    let span = (to - from).max(1) as f64;
    let pad = (span * 0.015).max(0.5);
    let scale = Scale {
        lo: from as f64 - pad,
        px_per_ms: PLOT_W / (span + 2.0 * pad),
    };

    let lanes = lay_out_lanes(tl, &geoms, &scale);
    let lane_h = if lanes.len() <= 30 {
        26.0
    } else {
        (780.0 / lanes.len() as f64).floor().max(12.0)
    };
    let lanes_bottom = TOP + lane_h * lanes.len() as f64;

    // Acquisitions per lock, for the end of a leak's tail.
    let mut acquisitions: Vec<Vec<Ms>> = vec![Vec::new(); tl.lanes.len()];
    for (a, g) in tl.attempts.iter().zip(&geoms) {
        if g.held {
            acquisitions[a.lane].push(g.start);
        }
    }
    for v in &mut acquisitions {
        v.sort_unstable();
    }

    let mut present = [0usize; Outcome::COUNT];
    let mut nonzero = 0usize;
    for a in &tl.attempts {
        present[a.outcome().index()] += 1;
        if a.failed_exit() {
            nonzero += 1;
        }
    }
    let mut marks_present = [false; 5];
    for a in &tl.attempts {
        marks_present[0] |= a.first_signal.is_some();
        marks_present[1] |= a.final_signal.is_some();
        marks_present[2] |= a.watchdog_at.is_some() || a.outcome() == Outcome::End(Ended::Watchdog);
        marks_present[3] |= a.leak.is_some();
        marks_present[4] |= a.lease_lost.is_some();
    }
    let any_wait = geoms.iter().any(|g| g.wait.is_some());
    let any_aggregated = lanes.iter().any(|l| l.aggregated);

    // Legend items: (swatch class, text).
    let mut legend: Vec<(String, String)> = Vec::new();
    for o in Outcome::ALL {
        let n = present[o.index()];
        if n > 0 {
            let text = match o {
                Outcome::Unknown => format!("no end seen ({n})"),
                _ => format!("{} ({n})", o.name()),
            };
            legend.push((format!("swatch outcome-{}", o.name()), text));
        }
    }
    if nonzero > 0 {
        legend.push((
            "swatch outcome-exited nonzero".to_owned(),
            format!("exited, non-zero status ({nonzero})"),
        ));
    }
    if any_wait {
        legend.push(("wait".to_owned(), "waiting for the lock".to_owned()));
    }
    let item_w = |text: &str| 26.0 + text.chars().count() as f64 * 6.2;
    let mut legend_rows = 1.0;
    let mut x = 0.0;
    let avail = WIDTH - 40.0;
    let mut widths: Vec<f64> = legend.iter().map(|(_, t)| item_w(t)).collect();
    widths.extend(
        Mark::ALL
            .iter()
            .zip(marks_present)
            .filter(|(_, p)| *p)
            .map(|(m, _)| item_w(m.legend())),
    );
    for w in &widths {
        if x + w > avail && x > 0.0 {
            legend_rows += 1.0;
            x = 0.0;
        }
        x += w;
    }
    let legend_top = lanes_bottom + 22.0;
    let note_h = if any_aggregated { 18.0 } else { 0.0 };
    let height = (legend_top + legend_rows * 18.0 + note_h + 12.0).ceil();

    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\">\n<style>{STYLE}"
    );
    for o in Outcome::ALL {
        let _ = writeln!(out, ".outcome-{} {{ fill: {} }}", o.name(), o.colour());
    }
    out.push_str(
        "</style>\n<defs><linearGradient id=\"open-fade\" x1=\"0\" x2=\"1\" y1=\"0\" y2=\"0\">\
         <stop offset=\"0\" stop-color=\"#bdbdbd\"/><stop offset=\"0.7\" stop-color=\"#bdbdbd\"/>\
         <stop offset=\"1\" stop-color=\"#bdbdbd\" stop-opacity=\"0.15\"/></linearGradient></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n",
    );

    // Heading.
    let locks = tl.lanes.len();
    let day_from = date(from);
    let until = if date(to) == day_from {
        clock(to)
    } else {
        stamp(to)
    };
    let _ = writeln!(
        out,
        "<text class=\"heading\" x=\"16\" y=\"24\">locksup timeline: {} on {}, {} to {} UTC ({})</text>",
        plural(tl.attempts.len(), "attempt", "attempts"),
        plural(locks, "lock", "locks"),
        stamp(from),
        until,
        human((to - from) as f64)
    );
    let prefix = common_dir(
        lanes
            .iter()
            .filter(|l| !l.attempts.is_empty() && l.name.starts_with('/'))
            .map(|l| l.name.as_str()),
    );
    let mut sub = Vec::new();
    if prefix.len() > 1 {
        sub.push(format!("locks under {prefix}"));
    }
    if any_aggregated {
        sub.push("crowded lanes aggregated".to_owned());
    }
    if malformed > 0 {
        sub.push(format!(
            "{} skipped",
            plural(
                usize::try_from(malformed).unwrap_or(usize::MAX),
                "malformed line",
                "malformed lines"
            )
        ));
    }
    if !sub.is_empty() {
        let _ = writeln!(
            out,
            "<text class=\"sub\" x=\"16\" y=\"42\">{}</text>",
            esc(&sub.join(" · "))
        );
    }

    // Axis, grid and ticks.
    let step = Step::for_span(span + 2.0 * pad, PLOT_W / 110.0);
    let ticks = step.ticks(from - pad.ceil() as Ms, to + pad.ceil() as Ms);
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{PLOT_X}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        PLOT_X + PLOT_W,
        TOP - 1.5,
        TOP - 1.5
    );
    let mut last_context: Option<String> = None;
    out.push_str("<g class=\"ticks\">\n");
    for &t in &ticks {
        let x = scale.x(t);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{lanes_bottom:.1}\"/>",
            TOP - 6.0,
        );
        // A label that would stick out of the picture is left out.
        let label = step.label(t);
        let half = label.len() as f64 * 3.2;
        if x + half > WIDTH - 2.0 || x - half < PLOT_X - 40.0 {
            continue;
        }
        let _ = writeln!(
            out,
            "<text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\">{label}</text>",
            TOP - 10.0,
        );
        if let Some(c) = step.context(t)
            && last_context.as_ref() != Some(&c)
        {
            let _ = writeln!(
                out,
                "<text class=\"tick-date\" x=\"{x:.1}\" y=\"{:.1}\">{c}</text>",
                TOP - 24.0
            );
            last_context = Some(c);
        }
    }
    out.push_str("</g>\n");
    let _ = writeln!(
        out,
        "<text class=\"utc\" x=\"{:.1}\" y=\"{:.1}\">UTC</text>",
        PLOT_X - 30.0,
        TOP - 10.0
    );

    // Lanes.
    for (i, lane) in lanes.iter().enumerate() {
        let rows = Rows::new(TOP + lane_h * i as f64, lane_h);
        let _ = writeln!(
            out,
            "<g class=\"lane{}\" data-lock=\"{}\">",
            if lane.aggregated { " aggregated" } else { "" },
            esc(&lane.name)
        );
        if i % 2 == 0 {
            let _ = writeln!(
                out,
                "<rect class=\"lane-bg\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>",
                10.0,
                rows.top,
                WIDTH - 20.0,
                rows.h
            );
        }
        let label = if lane.name.starts_with('/') {
            short_label(&lane.label, &prefix)
        } else {
            lane.label.clone()
        };
        let count = format!(
            "{}{}",
            plural(lane.attempts.len(), "attempt", "attempts"),
            if lane.aggregated { ", aggregated" } else { "" }
        );
        let two_lines = lane_h >= 24.0;
        let _ = writeln!(
            out,
            "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\"><title>{}: {count}</title>{}</text>",
            PLOT_X - 10.0,
            if two_lines {
                rows.top + lane_h * 0.45
            } else {
                rows.top + lane_h * 0.5 + 4.0
            },
            esc(&lane.name),
            esc(&label)
        );
        if two_lines {
            let _ = writeln!(
                out,
                "<text class=\"count\" x=\"{:.1}\" y=\"{:.1}\">{count}</text>",
                PLOT_X - 10.0,
                rows.top + lane_h * 0.85
            );
        }
        let ctx = Ctx {
            tl,
            geoms: &geoms,
            scale: &scale,
            rows,
            last,
            acquisitions: &acquisitions,
        };
        if lane.aggregated {
            ctx.aggregated(&mut out, lane);
        } else {
            ctx.detailed(&mut out, lane);
        }
        out.push_str("</g>\n");
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{PLOT_X}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        PLOT_X + PLOT_W,
        lanes_bottom + 0.5,
        lanes_bottom + 0.5
    );

    // Legend.
    out.push_str("<g class=\"legend\">\n");
    let mut x = 20.0;
    let mut y = legend_top;
    let place = |w: f64, x: &mut f64, y: &mut f64| {
        if *x + w > avail && *x > 20.0 {
            *x = 20.0;
            *y += 18.0;
        }
        let at = (*x, *y);
        *x += w;
        at
    };
    for (class, text) in &legend {
        let (ix, iy) = place(item_w(text), &mut x, &mut y);
        let _ = writeln!(
            out,
            "<rect class=\"{class}\" x=\"{ix:.1}\" y=\"{:.1}\" width=\"16\" height=\"10\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            iy - 9.0,
            ix + 21.0,
            iy,
            esc(text)
        );
    }
    for (m, _) in Mark::ALL.iter().zip(marks_present).filter(|(_, p)| *p) {
        let (ix, iy) = place(item_w(m.legend()), &mut x, &mut y);
        // A lane-like box around the text's middle (4 px above its baseline).
        let mut r = Rows::new(iy - 12.0, 26.0);
        r.bar_h = 8.0;
        r.bar_y = match m {
            Mark::First => iy - 4.0,
            _ => iy - 8.0,
        };
        let mx = ix + 8.0;
        m.shape(&mut out, mx, &r, None);
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{iy:.1}\">{}</text>",
            ix + 21.0,
            m.legend()
        );
    }
    if any_aggregated {
        let _ = writeln!(
            out,
            "<text class=\"sub\" x=\"20\" y=\"{:.1}\">Aggregated lanes: each {AGG_PX} px column \
             stacks the outcomes of the attempts active in it (darker: more of them), the strip \
             below counts waiters; hover for counts.</text>",
            y + 18.0
        );
    }
    out.push_str("</g>\n</svg>\n");
    out
}

pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Group attempts into lanes (the busiest locks when there are too many),
/// sorted by path, and decide which are aggregated.
pub(super) fn lay_out_lanes(tl: &Timeline, geoms: &[Geom], scale: &Scale) -> Vec<Lane> {
    let mut per_lock: Vec<Vec<usize>> = vec![Vec::new(); tl.lanes.len()];
    for (i, a) in tl.attempts.iter().enumerate() {
        per_lock[a.lane].push(i);
    }
    let mut order: Vec<usize> = (0..tl.lanes.len()).collect();
    let mut rest: Vec<usize> = Vec::new();
    if order.len() > MAX_LANES {
        order.sort_by(|&a, &b| {
            per_lock[b]
                .len()
                .cmp(&per_lock[a].len())
                .then_with(|| natural(&tl.lanes[a], &tl.lanes[b]))
        });
        rest = order.split_off(MAX_LANES - 1);
    }
    order.sort_by(|&a, &b| natural(&tl.lanes[a], &tl.lanes[b]));
    let mut lanes: Vec<Lane> = order
        .into_iter()
        .map(|l| Lane {
            name: tl.lanes[l].clone(),
            label: tl.lanes[l].clone(),
            attempts: std::mem::take(&mut per_lock[l]),
            aggregated: false,
        })
        .collect();
    if !rest.is_empty() {
        let name = format!("({} other locks)", rest.len());
        let mut attempts: Vec<usize> = Vec::new();
        for l in rest {
            attempts.append(&mut per_lock[l]);
        }
        lanes.push(Lane {
            label: name.clone(),
            name,
            attempts,
            aggregated: false,
        });
    }
    let max_detailed = (PLOT_W / AGG_PX) as usize;
    for lane in &mut lanes {
        lane.attempts
            .sort_by_key(|&i| (geoms[i].start, geoms[i].end));
        // Bars drawn over an earlier one of the same row (hold or wait),
        // once widened to their minimum width.
        let mut ends = [f64::NEG_INFINITY; 2];
        let mut overlapping = 0;
        for &i in &lane.attempts {
            let g = &geoms[i];
            let row = usize::from(!g.held);
            let x0 = scale.x(g.start);
            let x1 = scale.x(g.end).max(x0 + min_width(g.held));
            if x0 < ends[row] - 0.01 {
                overlapping += 1;
            }
            ends[row] = ends[row].max(x1);
        }
        lane.aggregated = lane.attempts.len() > max_detailed
            || (overlapping > MAX_OVERLAPS && overlapping * 4 > lane.attempts.len());
    }
    lanes
}

/// Compare with runs of digits as numbers: `s-2` before `s-10`.
pub(super) fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (digits(a), digits(b));
                let (na, nb) = (&a[..da], &b[..db]);
                fn strip(s: &[u8]) -> &[u8] {
                    let zeros = s.iter().take_while(|&&c| c == b'0').count();
                    &s[zeros..]
                }
                let (sa, sb) = (strip(na), strip(nb));
                let o = sa
                    .len()
                    .cmp(&sb.len())
                    .then_with(|| sa.cmp(sb))
                    .then_with(|| da.cmp(&db));
                if o.is_ne() {
                    return o;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// Overlapping bars a lane drawn bar by bar may have (while they are at
/// most a quarter of its bars).
pub(super) const MAX_OVERLAPS: usize = 8;

/// The narrowest bar: a hold bar, or one in the wait row (a conflict can
/// take no time at all).
pub(super) fn min_width(held: bool) -> f64 {
    if held { 1.0 } else { 2.0 }
}

/// What drawing one lane needs.
pub(super) struct Ctx<'a> {
    pub(super) tl: &'a Timeline,
    pub(super) geoms: &'a [Geom],
    pub(super) scale: &'a Scale,
    pub(super) rows: Rows,
    pub(super) last: Ms,
    pub(super) acquisitions: &'a [Vec<Ms>],
}

impl Ctx<'_> {
    /// Where a leak's dashed tail ends: the next acquisition of the lock,
    /// or the last time seen.
    pub(super) fn leak_tail(&self, a: &Attempt, leak: Ms) -> Ms {
        let acq = &self.acquisitions[a.lane];
        let next = acq.partition_point(|&t| t <= leak);
        acq.get(next).copied().unwrap_or(self.last)
    }

    /// The hover text of one attempt.
    pub(super) fn title(&self, a: &Attempt, g: &Geom) -> String {
        let mut t = format!("attempt {}\nlock {}", a.id, self.tl.lanes[a.lane]);
        if let Some(c) = &a.command {
            let _ = write!(t, "\ncommand: {c}");
        }
        match &a.end {
            Some(e) => {
                let name = match e.other.as_deref() {
                    Some("") => "(none)",
                    Some(other) => other,
                    None => e.outcome.name(),
                };
                let _ = write!(t, "\noutcome: {name}");
                if let Some(c) = e.exit_code {
                    let _ = write!(t, ", exit code {c}");
                }
            }
            None => t.push_str(
                "\noutcome: unknown (no end event: still running, or its supervisor died)",
            ),
        }
        match &a.exited {
            Some((Some(s), _)) => {
                let _ = write!(t, "\ncommand exited with status {s}");
            }
            Some((None, Some(sig))) => {
                let _ = write!(t, "\ncommand died of {sig}");
            }
            _ => {}
        }
        // The supervisor's own measure of the wait first (from its start).
        let waited = match (a.wait_ms.filter(|_| g.held), g.wait) {
            (Some(w), _) => Some(w),
            (None, Some((w0, w1))) => Some((w1 - w0) as f64),
            (None, None) => None,
        };
        if let Some(w) = waited {
            let _ = write!(t, "\nwaited {}", human(w));
            if let Some((w0, _)) = g.wait.filter(|_| w >= 1.0) {
                let _ = write!(t, " from {}", clock(w0));
            }
        }
        let during = format!(
            "{} to {} UTC",
            stamp(g.start),
            if date(g.end) == date(g.start) {
                clock(g.end)
            } else {
                stamp(g.end)
            }
        );
        let length = human((g.end - g.start) as f64);
        match (g.held, g.open) {
            (true, false) => {
                let _ = write!(t, "\nheld {length}: {during}");
            }
            (true, true) => {
                let _ = write!(t, "\nheld at least {length} (no release seen): {during}");
            }
            (false, false) if g.end == g.start => {
                let _ = write!(t, "\nnever held the lock: at {} UTC", stamp(g.start));
            }
            (false, false) => {
                let _ = write!(t, "\nnever held the lock ({length}): {during}");
            }
            (false, true) => {
                let _ = write!(t, "\nnot holding the lock, at least {length}: {during}");
            }
        }
        let since = |ts: Ms| {
            let d = ts - g.start;
            if d >= 0 {
                format!("+{}", human(d as f64))
            } else {
                clock(ts)
            }
        };
        for s in [&a.first_signal, &a.final_signal].into_iter().flatten() {
            let _ = write!(t, "\nsignal {} ({}) at {}", s.signal, s.reason, since(s.ts));
        }
        if a.signals > 2 {
            let _ = write!(t, " ({} signals in all)", a.signals);
        }
        if a.watchdog_at.is_some() || a.outcome() == Outcome::End(Ended::Watchdog) {
            let at = a.watchdog_at.or(a.end.as_ref().map(|e| e.ts));
            match (a.last_heartbeat, at) {
                (Some(h), Some(w)) => {
                    let _ = write!(
                        t,
                        "\nlast heartbeat {} before the watchdog ({} heartbeats)",
                        human((w - h) as f64),
                        a.heartbeats
                    );
                }
                _ => t.push_str("\nno heartbeat before the watchdog"),
            }
        }
        if let Some(l) = a.leak {
            let _ = write!(t, "\nLEAK at {}: the lock outlived the attempt", since(l));
        }
        if let Some(l) = a.lease_lost {
            let _ = write!(t, "\nlease lost at {}", since(l));
        }
        if let Some(err) = a.end.as_ref().and_then(|e| e.error.as_deref()) {
            let _ = write!(t, "\nerror: {err}");
        }
        t
    }

    /// Marks of one attempt: (kind, time, hover text).
    pub(super) fn marks(&self, a: &Attempt) -> Vec<(Mark, Ms, String)> {
        let mut out = Vec::new();
        if let Some(s) = &a.first_signal {
            out.push((Mark::First, s.ts, format!("{} ({})", s.signal, s.reason)));
        }
        if let Some(s) = &a.final_signal {
            out.push((Mark::Final, s.ts, format!("{} ({})", s.signal, s.reason)));
        }
        if (a.watchdog_at.is_some() || a.outcome() == Outcome::End(Ended::Watchdog))
            && let Some(h) = a.last_heartbeat
        {
            out.push((Mark::HeartbeatLast, h, "last heartbeat".to_owned()));
        }
        if let Some(l) = a.leak {
            out.push((
                Mark::Leak,
                l,
                "leak: the lock outlived the attempt".to_owned(),
            ));
        }
        if let Some(l) = a.lease_lost {
            out.push((Mark::LeaseLost, l, "lease lost".to_owned()));
        }
        out
    }

    /// Every attempt of the lane, with its bar, its wait and its marks.
    pub(super) fn detailed(&self, out: &mut String, lane: &Lane) {
        let r = &self.rows;
        // An attempt that never held the lock and took no time (a busy
        // conflict) is a tick across the lane, drawn after the others so
        // that no wait hides it.
        let instant = |i: usize| {
            let g = &self.geoms[i];
            !g.held && self.scale.px(g.end - g.start) < min_width(false)
        };
        let (ticks, others): (Vec<usize>, Vec<usize>) =
            lane.attempts.iter().partition(|&&i| instant(i));
        for i in others.into_iter().chain(ticks) {
            let (a, g) = (&self.tl.attempts[i], &self.geoms[i]);
            let _ = write!(
                out,
                "<g class=\"attempt\" data-attempt=\"{}\"><title>{}</title>",
                esc(&a.id),
                esc(&self.title(a, g))
            );
            if let Some((w0, w1)) = g.wait {
                let w = self.scale.px(w1 - w0);
                if w >= 0.5 {
                    let _ = write!(
                        out,
                        "<rect class=\"wait\" x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\"/>",
                        self.scale.x(w0),
                        r.wait_y,
                        r.wait_h
                    );
                }
            }
            let outcome = a.outcome();
            let mut class = format!("bar outcome-{}", outcome.name());
            if g.open {
                class.push_str(" open");
            }
            if a.failed_exit() {
                class.push_str(" nonzero");
            }
            let (y, h) = if g.held {
                (r.bar_y, r.bar_h)
            } else if instant(i) {
                (r.bar_y, r.wait_y + r.wait_h - r.bar_y)
            } else {
                // Never held: a bar in the wait row, a little taller.
                (r.wait_y - 1.0, r.wait_h + 2.0)
            };
            let w = if instant(i) {
                3.0
            } else {
                self.scale.px(g.end - g.start).max(min_width(g.held))
            };
            let x = self.scale.x(g.start);
            let _ = writeln!(
                out,
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"/></g>"
            );
        }
        // Marks above every bar.
        for &i in &lane.attempts {
            let a = &self.tl.attempts[i];
            if let (Some(h), Some(w)) = (
                a.last_heartbeat.filter(|_| {
                    a.watchdog_at.is_some() || a.outcome() == Outcome::End(Ended::Watchdog)
                }),
                a.watchdog_at.or(a.end.as_ref().map(|e| e.ts)),
            ) {
                let _ = writeln!(
                    out,
                    "<line class=\"hb-gap\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
                    self.scale.x(h),
                    self.scale.x(w.max(h)),
                    r.mid(),
                    r.mid()
                );
            }
            if let Some(l) = a.leak {
                self.tail(out, a, l);
            }
            for (m, ts, text) in self.marks(a) {
                let title = format!("{text} at {} UTC, attempt {}", clock(ts), a.id);
                m.shape(out, self.scale.x(ts), r, Some(&title));
                out.push('\n');
            }
        }
    }

    pub(super) fn tail(&self, out: &mut String, a: &Attempt, leak: Ms) {
        let until = self.leak_tail(a, leak);
        let _ = writeln!(
            out,
            "<line class=\"leak-tail\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
            self.scale.x(leak),
            self.scale.x(until.max(leak)),
            self.rows.mid(),
            self.rows.mid()
        );
    }

    /// The lane as columns of [`AGG_PX`] pixels.
    pub(super) fn aggregated(&self, out: &mut String, lane: &Lane) {
        let r = &self.rows;
        let n = (PLOT_W / AGG_PX).ceil() as usize;
        let column = |t: Ms| {
            let c = ((self.scale.x(t) - PLOT_X) / AGG_PX).floor();
            c.clamp(0.0, (n - 1) as f64) as usize
        };
        let mut counts = vec![[0u32; Outcome::COUNT]; n];
        let mut waiting = vec![0u32; n];
        let mut marks = vec![[0u32; 5]; n];
        for &i in &lane.attempts {
            let (a, g) = (&self.tl.attempts[i], &self.geoms[i]);
            let o = a.outcome().index();
            for c in &mut counts[column(g.start)..=column(g.end)] {
                c[o] += 1;
            }
            if let Some((w0, w1)) = g.wait {
                for w in &mut waiting[column(w0)..=column(w1)] {
                    *w += 1;
                }
            }
            for (m, ts, _) in self.marks(a) {
                marks[column(ts)][m as usize] += 1;
            }
        }
        for &i in &lane.attempts {
            let a = &self.tl.attempts[i];
            if let Some(l) = a.leak {
                self.tail(out, a, l);
            }
        }
        let busiest = counts
            .iter()
            .map(|c| c.iter().sum::<u32>())
            .max()
            .unwrap_or(0)
            .max(1);
        let most_waiting = waiting.iter().copied().max().unwrap_or(0).max(1);
        let ms_per_col = AGG_PX / self.scale.px_per_ms;
        for c in 0..n {
            let total: u32 = counts[c].iter().sum();
            if total == 0 && waiting[c] == 0 && marks[c].iter().all(|&m| m == 0) {
                continue;
            }
            let x = PLOT_X + c as f64 * AGG_PX;
            let t0 = (self.scale.lo + c as f64 * ms_per_col).round() as Ms;
            let t1 = (self.scale.lo + (c + 1) as f64 * ms_per_col).round() as Ms;
            let mut title = format!(
                "{} to {} UTC: {}",
                stamp(t0),
                clock(t1),
                plural(total as usize, "attempt", "attempts")
            );
            let parts: Vec<String> = Outcome::ALL
                .iter()
                .filter(|o| counts[c][o.index()] > 0)
                .map(|o| format!("{} {}", counts[c][o.index()], o.name()))
                .collect();
            if !parts.is_empty() {
                let _ = write!(title, " ({})", parts.join(", "));
            }
            if waiting[c] > 0 {
                let _ = write!(title, "; {} waiting", waiting[c]);
            }
            for m in Mark::ALL {
                let k = marks[c][m as usize];
                if k > 0 {
                    let _ = write!(title, "; {k} × {}", m.legend());
                }
            }
            let shade = 0.35 + 0.65 * (f64::from(total).ln_1p() / f64::from(busiest).ln_1p());
            let _ = write!(
                out,
                "<g class=\"column\"><title>{}</title><g opacity=\"{shade:.2}\">",
                esc(&title)
            );
            let mut y = r.bar_y;
            for o in Outcome::ALL {
                let k = counts[c][o.index()];
                if k == 0 {
                    continue;
                }
                let h = r.bar_h * f64::from(k) / f64::from(total);
                let _ = write!(
                    out,
                    "<rect class=\"agg outcome-{}\" x=\"{x:.1}\" y=\"{y:.2}\" width=\"{AGG_PX}\" height=\"{h:.2}\"/>",
                    o.name()
                );
                y += h;
            }
            out.push_str("</g>");
            if waiting[c] > 0 {
                let _ = write!(
                    out,
                    "<rect class=\"wait\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{AGG_PX}\" height=\"{:.1}\" \
                     fill-opacity=\"{:.2}\"/>",
                    r.wait_y,
                    r.wait_h,
                    0.25 + 0.75 * f64::from(waiting[c]) / f64::from(most_waiting)
                );
            }
            for m in Mark::ALL {
                if marks[c][m as usize] > 0 {
                    m.shape(out, x + AGG_PX / 2.0, r, None);
                }
            }
            out.push_str("</g>\n");
        }
    }
}
