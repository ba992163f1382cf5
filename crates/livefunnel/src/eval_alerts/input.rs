//! `eval-alerts --input FILE`: recorded events through the detectors as one partition;
//! every firing (before inhibition) is printed with its event time and evidence.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use livefunnel_core::{decode, Engine, EngineConfig, Outcome, Row};
use livefunnel_metrics::{DetectorConfig, RoomTracker, SignalWindows};

use super::runner::ALERTS;

pub fn run(
    path: &Path,
    engine: &EngineConfig,
    windows: &SignalWindows,
    c: &DetectorConfig,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut engine = Engine::new(engine.clone());
    let mut tracker = RoomTracker::default();
    tracker.set_signal_windows(windows.clone());
    tracker.set_detectors(Some(c.clone()));
    // Per room: its latest ts, whether each alert holds, and its firing episodes.
    let mut rooms: BTreeMap<String, (i64, [bool; 3], [u32; 3])> = BTreeMap::new();
    let mut rows = Vec::new();
    let (mut lines, mut accepted) = (0u64, 0u64);
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        let Ok(ev) = decode(line.as_bytes()) else { continue };
        if let Outcome::Accepted { .. } = engine.process(&ev, 0, &mut rows) {
            accepted += 1;
            let e = rooms.entry(ev.room_id.to_string()).or_default();
            e.0 = e.0.max(ev.ts);
        }
        if !rows.is_empty() {
            check(&mut tracker, &mut rows, &mut rooms, c);
        }
    }
    engine.finish(&mut rows);
    check(&mut tracker, &mut rows, &mut rooms, c);
    let mut fired = [0usize; 3];
    for (_, _, episodes) in rooms.values() {
        for a in 0..3 {
            fired[a] += usize::from(episodes[a] > 0);
        }
    }
    println!("{lines} lines, {accepted} events accepted, {} rooms", rooms.len());
    for (a, name) in ALERTS.iter().enumerate() {
        println!("{name}: {} rooms fired", fired[a]);
    }
    let alerted = rooms.values().filter(|r| r.2.iter().any(|&n| n > 0)).count();
    println!(
        "normal_room_alerts={} rooms_alerted={alerted}",
        rooms.values().map(|r| r.2.iter().sum::<u32>()).sum::<u32>()
    );
    Ok(())
}

fn check(
    tracker: &mut RoomTracker,
    rows: &mut Vec<Row>,
    rooms: &mut BTreeMap<String, (i64, [bool; 3], [u32; 3])>,
    c: &DetectorConfig,
) {
    let mut ids: Vec<&str> = rows.iter().map(row_room).collect();
    ids.sort_unstable();
    ids.dedup();
    let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
    tracker.on_rows(rows);
    rows.clear();
    for id in ids {
        let (Some(d), Some(room)) = (tracker.detectors(&id), rooms.get_mut(&id)) else { continue };
        let v = d.values(c);
        let f = v.firing(c);
        let evidence = [v.gpm_drop_evidence, v.sales_stall_evidence, v.cliff.evidence];
        for (a, holds) in [f.gpm_drop, f.sales_stall, f.online_cliff].into_iter().enumerate() {
            if holds && !room.1[a] {
                room.2[a] += 1;
                println!(
                    "FIRING {} room={id} event_time_ms={} evidence={:.2}",
                    ALERTS[a],
                    room.0,
                    evidence[a].unwrap_or(f64::NAN)
                );
            }
            room.1[a] = holds;
        }
    }
}

fn row_room(r: &Row) -> &str {
    match r {
        Row::Window(w) => &w.room_id,
        Row::Breakdown(b) => &b.room_id,
        Row::Session(s) => &s.room_id,
    }
}
