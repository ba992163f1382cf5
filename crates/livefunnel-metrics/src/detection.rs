//! The room alert detectors ([`livefunnel_detectors`]) inside a partition's tracker:
//! which rows feed them, their values on the signal series, and their checkpoint
//! section. `livefunnel eval-alerts` drives the same code through
//! [`crate::RoomTracker::on_rows`], so what it measures is what the pipeline exports.

use std::collections::BTreeMap;
use std::sync::Arc;

use livefunnel_core::{BreakdownKind, BreakdownRow, SessionRow, WindowRow};
use livefunnel_detectors::{DetectorConfig, MinuteTotals, PaidPart, PaidSource, RoomDetectors, STATE_FORMAT};
use serde::Serialize;

use crate::series::{Series, SignalValues};
use crate::signals::RoomSignals;

/// The window whose rows (with their source breakdown rows) feed the order detectors.
pub const MINUTE_WINDOW: &str = "1m";

/// A checkpoint's tracker section that cannot be used (retrying does not help).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("room counters and signals cannot be decoded: {0}")]
    Decode(#[from] postcard::Error),
    #[error(
        "the alert detectors' state is in format {found}, this livefunnel reads format {expected}: the \
         checkpoint was written by another version of livefunnel; run that version, or delete the \
         checkpoint to start the partition afresh (docs/runbook.md, \"Deleting the state\")"
    )]
    Format { found: u8, expected: u8 },
}

fn room_of<'a>(rooms: &'a mut BTreeMap<String, RoomSignals>, room_id: &str) -> &'a mut RoomSignals {
    crate::room::room_mut(rooms, room_id)
}

/// Remembers a room whose detectors have rows to settle.
fn touch(room: &RoomSignals, room_id: &Arc<str>, was: bool, touched: &mut Vec<Arc<str>>) {
    if !was && room.detect.unsettled() {
        touched.push(room_id.clone());
    }
}

/// A window row: the `1m` row of a minute, or a row of the online window (the cliff).
pub(crate) fn on_window(
    room: &mut RoomSignals,
    w: &WindowRow,
    minute: bool,
    online: bool,
    touched: &mut Vec<Arc<str>>,
) {
    let was = room.detect.unsettled();
    let session = &*w.identity.session_id;
    if minute {
        let c = &w.counts;
        let totals = MinuteTotals {
            orders_paid: c.orders_paid,
            watch_pv: c.watch_pv,
            watch_ms: c.watch_ms as f64,
            gmv_cents: c.gmv_cents,
            gmv_cents_paid: c.gmv_cents_paid,
        };
        room.detect.on_minute(session, w.window_end, w.version, totals);
    }
    if online {
        room.detect.on_online(session, w.window_end, w.version, w.counts.online_end);
    }
    touch(room, &w.room_id, was, touched);
}

/// A breakdown row: only the `1m` rows of the paid sources matter.
pub(crate) fn on_breakdown(
    rooms: &mut BTreeMap<String, RoomSignals>,
    b: &BreakdownRow,
    touched: &mut Vec<Arc<str>>,
) {
    if b.kind != BreakdownKind::Source || &*b.window != MINUTE_WINDOW {
        return;
    }
    let Some(source) = PaidSource::from_key(&b.key) else { return };
    let room = room_of(rooms, &b.room_id);
    let was = room.detect.unsettled();
    let part = PaidPart { orders_paid: b.counts.orders_paid, watch_pv: b.counts.watch_pv };
    room.detect.on_paid(b.window_end, b.version, source, part);
    touch(room, &b.room_id, was, touched);
}

pub(crate) fn on_session(room: &mut RoomSignals, r: &SessionRow, touched: &mut Vec<Arc<str>>) {
    let was = room.detect.unsettled();
    room.detect.on_session(&r.session_id, r.session_start_ts, r.session_end_ts.is_some());
    touch(room, &r.room_id, was, touched);
}

/// Settles the detectors of the rooms rows reached (once per batch of rows: a
/// minute's window row and its breakdown rows come in the same batch).
pub(crate) fn settle(rooms: &mut BTreeMap<String, RoomSignals>, touched: &[Arc<str>], c: &DetectorConfig) {
    for room_id in touched {
        if let Some(room) = rooms.get_mut(&**room_id) {
            room.detect.settle(c);
            room.dirty = true;
        }
    }
}

/// Puts the detectors' values on the signal series: NaN where a detector has none.
pub(crate) fn fill(values: &mut SignalValues, d: &RoomDetectors, c: &DetectorConfig) {
    let v = d.values(c);
    let nan = |x: Option<f64>| Some(x.unwrap_or(f64::NAN));
    let online = |x: Option<u64>| Some(x.map_or(f64::NAN, |n| n as f64));
    let mut set = |s: Series, x: Option<f64>| values.0[s as usize] = x;
    set(Series::GpmDropEvidence, nan(v.gpm_drop_evidence));
    set(Series::SalesStallEvidence, nan(v.sales_stall_evidence));
    set(Series::OrdersExpectedPerMinute, nan(v.orders_expected_per_minute));
    set(Series::GpmBaseline, nan(v.gpm_baseline));
    set(Series::GpmDropHorizon, nan(v.gpm_drop_horizon_seconds));
    set(Series::DropOrdersObserved, nan(v.drop_orders_observed));
    set(Series::DropOrdersExpected, nan(v.drop_orders_expected));
    let live_online = |x: Option<u64>| if v.live { online(x) } else { Some(f64::NAN) };
    set(Series::OnlineEnd, live_online(v.cliff.online_end));
    set(Series::OnlineEnd60sAgo, live_online(v.cliff.online_end_60s_ago));
    set(Series::OnlineCliffEvidence, nan(v.cliff.evidence.filter(|_| v.live)));
    set(Series::PooledOrdersObserved, Some(v.pooled_observed as f64));
    set(Series::PooledOrdersExpected, Some(v.pooled_expected));
}

/// The detectors of every room, written after the rest of the tracker's checkpoint:
/// its format, then the rooms whose detectors hold something.
pub(crate) struct SavedDetectors<'a>(pub &'a BTreeMap<String, RoomSignals>);

impl Serialize for SavedDetectors<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Rooms<'a>(&'a BTreeMap<String, RoomSignals>);
        impl Serialize for Rooms<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let kept = || self.0.iter().filter(|(_, r)| r.detect != RoomDetectors::default());
                // postcard writes the length first.
                let mut m = s.serialize_map(Some(kept().count()))?;
                for (id, r) in kept() {
                    m.serialize_entry(id, &r.detect)?;
                }
                m.end()
            }
        }
        (STATE_FORMAT, Rooms(self.0)).serialize(s)
    }
}

/// Reads the section [`SavedDetectors`] wrote (`rest`: the bytes after the tracker's
/// other sections; empty in a checkpoint from before the detectors). Returns the
/// bytes after it: the sections that follow.
pub(crate) fn restore<'a>(
    rest: &'a [u8],
    rooms: &mut BTreeMap<String, RoomSignals>,
) -> Result<&'a [u8], CheckpointError> {
    if rest.is_empty() {
        return Ok(rest);
    }
    let (found, rest) = postcard::take_from_bytes::<u8>(rest)?;
    if found != STATE_FORMAT {
        return Err(CheckpointError::Format { found, expected: STATE_FORMAT });
    }
    let (saved, rest) = postcard::take_from_bytes::<BTreeMap<String, RoomDetectors>>(rest)?;
    for (room_id, d) in saved {
        room_of(rooms, &room_id).detect = d;
    }
    Ok(rest)
}

#[cfg(test)]
#[path = "detection_tests.rs"]
mod tests;
