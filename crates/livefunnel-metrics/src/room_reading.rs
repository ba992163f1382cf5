//! The room series read back, for the wall (`livefunnel-pipeline` crate, `wall/`): what
//! `/metrics` shows of each room, from the same in-memory values, without a second
//! computation.
//!
//! Counters and signal gauges are read from their families (a read never creates a
//! series). The window gauges are ratios of the running `Counts` that
//! [`RoomMetrics::set_running`] received: those `Counts` are kept as they came, so a
//! reader gets every measure of the running window (the funnel's impressions, the
//! traffic split by source class), and the gauges' ratios by the same formula.

use std::collections::HashMap;

use livefunnel_core::Counts;

use crate::room::{CounterTotals, RoomKey};
use crate::room_metrics::RoomMetrics;
use crate::signals::{SignalValues, SERIES_COUNT};

/// What [`RoomMetrics::set_running`] last received for a room.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Running {
    pub key: RoomKey,
    pub online: u64,
    pub live: bool,
    pub windows: Vec<(String, Counts)>,
}

/// One room as `/metrics` shows it now.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomReading {
    pub key: RoomKey,
    /// `livefunnel_room_*_total`.
    pub totals: CounterTotals,
    /// `livefunnel_room_online_viewers`.
    pub online: u64,
    /// `livefunnel_room_live`.
    pub live: bool,
    /// Per configured hop or tumble window, in configured order: the running counts
    /// behind `livefunnel_room_window_*` (their ratios are `Counts::ratios`).
    pub windows: Vec<(String, Counts)>,
    /// The signal gauges, indexed by [`crate::signals::Series`]; `None` where the room has
    /// no such series.
    pub signals: SignalValues,
}

impl RoomMetrics {
    /// Every room with running values on this instance, as its series show it now.
    /// The cost is one pass over the room series; call it at most about once a second.
    pub fn read(&self) -> Vec<RoomReading> {
        let mut rooms: Vec<RoomReading> = {
            let running = self.running.lock().expect("poisoned");
            running
                .values()
                .map(|r| RoomReading {
                    key: r.key.clone(),
                    totals: CounterTotals::default(),
                    online: r.online,
                    live: r.live,
                    windows: r.windows.clone(),
                    signals: SignalValues([None; SERIES_COUNT]),
                })
                .collect()
        };
        let index: HashMap<&str, usize> =
            rooms.iter().enumerate().map(|(i, r)| (r.key.room_id.as_str(), i)).collect();
        // A room whose labels moved between the two reads is skipped: the next read sees it.
        let find = |labels: &[&str]| -> Option<usize> {
            let (org, room, platform) = (labels[0], labels[1], labels[2]);
            let i = *index.get(room)?;
            let k = &rooms[i].key;
            (k.org_id == org && k.platform == platform).then_some(i)
        };
        let mut counters = Vec::new();
        for (c, family) in self.counters().into_iter().enumerate() {
            family.for_each(|labels, v| {
                if let Some(i) = find(labels) {
                    counters.push((i, c, v as u64));
                }
            });
        }
        let mut signals = Vec::new();
        // One series per room and signal: only the configured window's are ever set.
        for (s, family) in self.signals.families().enumerate() {
            family.for_each(|labels, v| {
                if let Some(i) = find(labels) {
                    signals.push((i, s, v));
                }
            });
        }
        drop(index);
        for (i, c, v) in counters {
            let t = &mut rooms[i].totals;
            *[
                &mut t.watch_entries,
                &mut t.product_clicks,
                &mut t.orders_paid,
                &mut t.gmv_cents,
                &mut t.refund_cents,
                &mut t.comments,
            ][c] = v;
        }
        for (i, s, v) in signals {
            rooms[i].signals.0[s] = Some(v);
        }
        rooms.sort_by(|a, b| a.key.cmp(&b.key));
        rooms
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use livefunnel_core::{Event, EventType};
    use prometheus::Registry;

    use super::*;
    use crate::room_metrics::RoomGauges;
    use crate::RoomTracker;

    fn key(room: &str) -> RoomKey {
        RoomKey { org_id: "org-a".into(), room_id: room.into(), platform: "douyin".into() }
    }

    fn ev(kind: EventType, room: &str, amount: Option<i64>) -> Event<'static> {
        let mut e = Event::minimal("e", kind, 1_000, room, "s1");
        e.user_id = Some(Cow::Borrowed("u"));
        e.amount_cents = amount;
        e
    }

    #[test]
    fn a_reading_shows_what_the_scrape_shows() {
        let reg = Registry::new();
        let m = RoomMetrics::new(&reg, vec!["5m/10s".into()]).unwrap();
        let (mut t, mut feed) = (RoomTracker::default(), crate::tests::Feed::default());
        feed.accept(&mut t, &m, &ev(EventType::OrderPaid, "r1", Some(19_900)), 0);
        feed.accept(&mut t, &m, &ev(EventType::Enter, "r1", None), 0);
        let counts = Counts {
            room_impressions: 40,
            watch_pv: 10,
            gmv_cents: 19_900,
            orders_paid: 1,
            ..Counts::default()
        };
        let k = RoomKey { org_id: "default".into(), room_id: "r1".into(), platform: "other".into() };
        t.observe(&m, &k, 7, true, &[("5m/10s", &counts)], 0);

        let rooms = m.read();
        assert_eq!(rooms.len(), 1);
        let r = &rooms[0];
        assert_eq!(r.key, k);
        assert_eq!((r.online, r.live), (7, true));
        assert_eq!((r.totals.gmv_cents, r.totals.orders_paid, r.totals.watch_entries), (19_900, 1, 1));
        assert_eq!(r.windows, vec![("5m/10s".to_owned(), counts.clone())]);
        let text = crate::render_all(&reg, &m);
        let gpm = counts.ratios().gpm.unwrap();
        assert!(
            text.contains(&format!(
                "livefunnel_room_window_gpm{{org_id=\"default\",platform=\"other\",room_id=\"r1\",window=\"5m/10s\"}} {gpm}"
            )),
            "{text}"
        );
    }

    #[test]
    fn reading_creates_no_series_and_forgets_removed_rooms() {
        let reg = Registry::new();
        let m = RoomMetrics::new(&reg, vec!["5m/10s".into()]).unwrap();
        m.set_running(&key("r1"), &mut RoomGauges::default(), 3, true, &[]);
        m.set_running(&key("r2"), &mut RoomGauges::default(), 4, true, &[]);
        m.remove(&key("r1"));
        let before = crate::render_all(&reg, &m);
        let rooms = m.read();
        assert_eq!(rooms.iter().map(|r| r.key.room_id.as_str()).collect::<Vec<_>>(), ["r2"]);
        assert_eq!(crate::render_all(&reg, &m), before, "a read must not create series");
        // Labels that moved: the reading follows the room's current labels.
        let moved = RoomKey { org_id: "org-b".into(), ..key("r2") };
        m.remove(&key("r2"));
        m.set_running(&moved, &mut RoomGauges::default(), 5, false, &[]);
        let rooms = m.read();
        assert_eq!(rooms.len(), 1);
        assert_eq!((&rooms[0].key, rooms[0].online, rooms[0].live), (&moved, 5, false));
    }
}
