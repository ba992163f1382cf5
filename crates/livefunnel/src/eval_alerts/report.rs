//! What a simulated evaluation found: per cell, per alert, for the normal rooms and
//! pooled per org; printed as tables, written as JSON, and summed up in one last line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use livefunnel_metrics::DetectorConfig;
use serde::Serialize;

use super::plan::{Cell, Incident, RoomSpec, Size};
use super::runner::{RoomResult, ALERTS};

/// One cell's summary.
#[derive(Debug, Clone, Serialize)]
pub struct CellSummary {
    pub name: String,
    pub rooms: usize,
    /// Rooms whose expected alert fired after the onset.
    pub detected: usize,
    /// Event-time delays from the onset to the first firing, seconds, sorted; rooms
    /// without one left out.
    pub delays_s: Vec<f64>,
    /// Median over every room, an undetected room counting as infinite; `None`: fewer
    /// than half detected.
    pub median_delay_s: Option<f64>,
    /// Alerts that should not have fired: before the onset, another room's kind of
    /// alert, or anything in a room below the floor.
    pub wrong: Vec<String>,
    /// Median measured volume before the onset: organic orders a minute, viewers online.
    pub median_orders_per_minute: f64,
    pub median_online: f64,
    /// Median GPM-drop horizon at the onset, seconds (+∞: not monitored per room).
    pub median_horizon_s: f64,
    /// Largest delay over the closed form `60·(h / (μ·I(ρ)) + 1)` (order alerts).
    pub max_delay_over_formula: Option<f64>,
}

/// The normal rooms' summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NormalSummary {
    pub rooms: usize,
    pub room_hours: f64,
    /// Alert episodes by [`ALERTS`], and rooms with any.
    pub episodes: [u32; 3],
    pub rooms_alerted: usize,
    pub max_gpm_drop_evidence: f64,
    pub max_sales_stall_evidence: f64,
    pub max_cliff_evidence: f64,
    /// Pooled org alerts (windows of 2 and 10 minutes) and the largest ratio of the
    /// window log-likelihood ratio to its threshold.
    pub pooled_alerts: u32,
    pub pooled_orgs: usize,
    pub max_pooled_over_threshold: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn expected_alert(i: Incident) -> usize {
    match i {
        Incident::GpmDrop { .. } => 0,
        Incident::SalesStall => 1,
        Incident::ViewerCliff => 2,
    }
}

/// Which alert firings after the onset are wrong for this cell.
fn wrong_after_onset(cell: &Cell, alert: usize, first_after_ms: i64, onset_ms: i64) -> bool {
    if cell.below_floor {
        return true;
    }
    let orders = match cell.size {
        Size::OrdersPerMinute(s) => s,
        Size::Online(_) => 0.0,
    };
    match (cell.incident, alert) {
        (i, a) if a == expected_alert(i) => false,
        // A half drop stays above a stall's bar in rooms of 3 orders a minute and more.
        (Incident::GpmDrop { lost }, 1) => lost < 0.8 && orders >= 3.0,
        // A stall is a drop too: GPMDrop may come first, SalesStall inhibits it.
        (Incident::SalesStall, 0) => false,
        // After a cliff, orders per exposure stay: nothing else for 30 minutes.
        (Incident::ViewerCliff, _) => first_after_ms - onset_ms <= 30 * 60_000,
        _ => true,
    }
}

pub fn cell_summary(cell: &Cell, rooms: &[(&RoomSpec, &RoomResult)], c: &DetectorConfig) -> CellSummary {
    let want = expected_alert(cell.incident);
    let mut delays = Vec::new();
    let mut all = Vec::new();
    let mut wrong = Vec::new();
    let mut over_formula: Option<f64> = None;
    for (spec, r) in rooms {
        let onset = spec.onset_ms.expect("incident rooms have an onset");
        let first = r.alerts[want].first_after_onset_ms.filter(|_| !cell.below_floor);
        let delay = first.map(|t| (t - onset) as f64 / 1000.0);
        if let Some(d) = delay {
            delays.push(d);
            let rho = match cell.incident {
                Incident::GpmDrop { lost } => Some((1.0 - lost, c.gpm_drop_threshold / c.drift(1.0 - lost))),
                Incident::SalesStall => Some((0.0, c.sales_stall_threshold)),
                Incident::ViewerCliff => None,
            };
            if let (Some((_, per_order)), Some(mu)) = (rho, r.expected_per_minute.filter(|m| *m > 0.0)) {
                let formula = 60.0 * (per_order / mu + 1.0);
                over_formula = Some(over_formula.unwrap_or(0.0).max(d / formula));
            }
        }
        all.push(delay.unwrap_or(f64::INFINITY));
        for (a, name) in ALERTS.iter().enumerate() {
            let t = &r.alerts[a];
            if t.before_onset {
                wrong.push(format!("{} {name} before the onset", spec.label));
            }
            if let Some(f) = t.first_after_onset_ms {
                if wrong_after_onset(cell, a, f, onset) {
                    wrong.push(format!(
                        "{} {name} {:.0} s after the onset",
                        spec.label,
                        (f - onset) as f64 / 1e3
                    ));
                }
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    let m = median(all);
    CellSummary {
        name: cell.name.clone(),
        rooms: rooms.len(),
        detected: delays.len(),
        delays_s: delays,
        median_delay_s: m.is_finite().then_some(m),
        wrong,
        median_orders_per_minute: median(rooms.iter().map(|(_, r)| r.measured_orders_per_minute).collect()),
        median_online: median(rooms.iter().map(|(_, r)| r.measured_online).collect()),
        median_horizon_s: median(rooms.iter().map(|(_, r)| r.horizon_seconds.unwrap_or(f64::NAN)).collect()),
        max_delay_over_formula: over_formula,
    }
}

/// The normal rooms, and their pooled per-org alerts over windows of 2 and 10 minutes.
pub fn normal_summary(rooms: &[(&RoomSpec, &RoomResult)], hours: f64, c: &DetectorConfig) -> NormalSummary {
    let mut s =
        NormalSummary { rooms: rooms.len(), room_hours: rooms.len() as f64 * hours, ..Default::default() };
    for (_, r) in rooms {
        for a in 0..3 {
            s.episodes[a] += r.alerts[a].episodes;
        }
        s.rooms_alerted += usize::from(r.alerts.iter().any(|t| t.episodes > 0));
        s.max_gpm_drop_evidence = s.max_gpm_drop_evidence.max(r.max_gpm_drop_evidence);
        s.max_sales_stall_evidence = s.max_sales_stall_evidence.max(r.max_sales_stall_evidence);
        s.max_cliff_evidence = s.max_cliff_evidence.max(r.max_cliff_evidence);
    }
    // Per org and event-time minute, the pooled totals of its rooms (carried forward).
    let mut orgs: BTreeMap<&str, Vec<&RoomResult>> = BTreeMap::new();
    for (spec, r) in rooms {
        orgs.entry(spec.profile.org).or_default().push(r);
    }
    s.pooled_orgs = orgs.len();
    for rs in orgs.values() {
        let (Some(lo), Some(hi)) = (
            rs.iter().filter_map(|r| r.pooled.first().map(|p| p.0)).min(),
            rs.iter().filter_map(|r| r.pooled.last().map(|p| p.0)).max(),
        ) else {
            continue;
        };
        let n = (hi - lo + 1) as usize;
        let (mut o, mut e) = (vec![0.0; n], vec![0.0; n]);
        for r in rs {
            let mut it = r.pooled.iter().peekable();
            let (mut co, mut ce) = (0.0, 0.0);
            for m in 0..n {
                while let Some(p) = it.next_if(|p| p.0 <= lo + m as i64) {
                    (co, ce) = (p.1 as f64, p.2);
                }
                o[m] += co;
                e[m] += ce;
            }
        }
        for w in [2usize, 10] {
            let mut holding = false;
            for m in w..n {
                let llr = (e[m] - e[m - w]) * (1.0 - c.design_ratio) + (o[m] - o[m - w]) * c.ln_ratio();
                s.max_pooled_over_threshold = s.max_pooled_over_threshold.max(llr / c.pooled_threshold);
                let holds = llr >= c.pooled_threshold;
                s.pooled_alerts += u32::from(holds && !holding);
                holding = holds;
            }
        }
    }
    s
}

fn fmt_delay(d: Option<f64>) -> String {
    match d {
        Some(d) if d >= 120.0 => format!("{:.1} min", d / 60.0),
        Some(d) => format!("{d:.0} s"),
        None => "none".into(),
    }
}

/// The human report (tables).
pub fn render(normal: Option<&NormalSummary>, cells: &[CellSummary], c: &DetectorConfig) -> String {
    let mut out = String::new();
    if let Some(n) = normal {
        let pct = |x: f64, h: f64| format!("{x:.2} of {h} ({:.0} %)", 100.0 * x / h);
        let _ = writeln!(out, "normal rooms: {} ({:.0} room-hours, warm-up included)", n.rooms, n.room_hours);
        let _ = writeln!(
            out,
            "  alert episodes: GPMDrop {}, SalesStall {}, OnlineViewersCliff {}; rooms with any: {}",
            n.episodes[0], n.episodes[1], n.episodes[2], n.rooms_alerted
        );
        let _ =
            writeln!(out, "  max GPM-drop evidence   {}", pct(n.max_gpm_drop_evidence, c.gpm_drop_threshold));
        let _ = writeln!(
            out,
            "  max sales-stall evidence {}",
            pct(n.max_sales_stall_evidence, c.sales_stall_threshold)
        );
        let _ = writeln!(out, "  max online-cliff z      {}", pct(n.max_cliff_evidence, c.cliff_threshold));
        let _ = writeln!(
            out,
            "  pooled org alerts (2 and 10 min windows, {} orgs): {}; max window LLR {:.0} % of its threshold",
            n.pooled_orgs,
            n.pooled_alerts,
            100.0 * n.max_pooled_over_threshold
        );
    }
    if !cells.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<28} {:>5} {:>9} {:>7} {:>8} {:>11} {:>11} {:>11} {:>6} {:>10}",
            "cell", "rooms", "orders/m", "online", "detected", "median", "p90", "max", "wrong", "horizon"
        );
        for s in cells {
            let p90 =
                s.delays_s.get(((s.delays_s.len() as f64 * 0.9).ceil() as usize).saturating_sub(1)).copied();
            let _ = writeln!(
                out,
                "{:<28} {:>5} {:>9.2} {:>7.0} {:>8} {:>11} {:>11} {:>11} {:>6} {:>10}",
                s.name,
                s.rooms,
                s.median_orders_per_minute,
                s.median_online,
                format!("{}/{}", s.detected, s.rooms),
                fmt_delay(s.median_delay_s),
                fmt_delay(p90),
                fmt_delay(s.delays_s.last().copied()),
                s.wrong.len(),
                if s.median_horizon_s.is_finite() {
                    fmt_delay(Some(s.median_horizon_s))
                } else {
                    "inf".into()
                },
            );
        }
        for s in cells {
            for w in &s.wrong {
                let _ = writeln!(out, "  wrong: {w}");
            }
        }
    }
    out
}

/// The last line: `normal_room_alerts=N`, then each cell's median delay in seconds.
pub fn summary_line(normal: Option<&NormalSummary>, cells: &[CellSummary]) -> String {
    let n = normal.map_or(0, |n| n.episodes.iter().sum::<u32>());
    let mut line = format!("normal_room_alerts={n}");
    for s in cells {
        let m = s.median_delay_s.map_or("none".to_owned(), |d| format!("{d:.0}s"));
        let _ = write!(line, " {}={m}({}/{})", s.name, s.detected, s.rooms);
    }
    line
}
