//! `livefunnel_room_info` and `livefunnel_room_gmv_target_cents`: the room directory
//! (names, anchors, brands, session GMV targets; `[wall] rooms_file`) for Grafana, one
//! series per room that has series and an entry in the directory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{IntGaugeVec, Opts, Registry};

use crate::room::RoomKey;

const INFO: &[&str] = &["org_id", "room_id", "platform", "name", "anchor", "brand", "account"];
const ROOM: &[&str] = &["org_id", "room_id", "platform"];

/// A room's directory entry, as its series show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomInfo {
    pub name: String,
    pub anchor: String,
    pub brand: String,
    pub account: String,
    /// The session's GMV target in fen; `None`: no target, no series.
    pub gmv_target_cents: Option<i64>,
}

#[derive(Clone)]
pub struct RoomInfoMetrics {
    info: IntGaugeVec,
    target: IntGaugeVec,
    /// What the series show, by `room_id`.
    shown: Arc<Mutex<HashMap<String, (RoomKey, RoomInfo)>>>,
}

impl RoomInfoMetrics {
    pub fn new(registry: &Registry) -> Result<RoomInfoMetrics, prometheus::Error> {
        let m = RoomInfoMetrics {
            info: IntGaugeVec::new(
                Opts::new(
                    "livefunnel_room_info",
                    "1 per room with series and a room directory entry (wall.rooms_file): its display name, \
                     anchor, brand and account",
                ),
                INFO,
            )?,
            target: IntGaugeVec::new(
                Opts::new(
                    "livefunnel_room_gmv_target_cents",
                    "the room's session GMV target in fen, from the room directory (wall.rooms_file)",
                ),
                ROOM,
            )?,
            shown: Arc::default(),
        };
        registry.register(Box::new(m.info.clone()))?;
        registry.register(Box::new(m.target.clone()))?;
        Ok(m)
    }

    /// Makes the series show exactly `rooms`: each room with series now and its
    /// directory entry. Rooms no longer listed, or whose labels or entry changed, lose
    /// their old series.
    pub fn sync<'a>(&self, rooms: impl IntoIterator<Item = (&'a RoomKey, &'a RoomInfo)>) {
        let mut shown = self.shown.lock().expect("poisoned");
        let mut next: HashMap<String, (RoomKey, RoomInfo)> = HashMap::with_capacity(shown.len());
        for (key, info) in rooms {
            match shown.remove(&key.room_id) {
                Some((k, i)) if k == *key && i == *info => {}
                old => {
                    if let Some((k, i)) = old {
                        self.remove(&k, &i);
                    }
                    self.info.with_label_values(&info_labels(key, info)).set(1);
                    if let Some(t) = info.gmv_target_cents {
                        self.target.with_label_values(&[&key.org_id, &key.room_id, &key.platform]).set(t);
                    }
                }
            }
            next.insert(key.room_id.clone(), (key.clone(), info.clone()));
        }
        for (k, i) in shown.values() {
            self.remove(k, i);
        }
        *shown = next;
    }

    fn remove(&self, key: &RoomKey, info: &RoomInfo) {
        let _ = self.info.remove_label_values(&info_labels(key, info));
        let _ = self.target.remove_label_values(&[&key.org_id, &key.room_id, &key.platform]);
    }
}

fn info_labels<'a>(key: &'a RoomKey, info: &'a RoomInfo) -> [&'a str; 7] {
    [&key.org_id, &key.room_id, &key.platform, &info.name, &info.anchor, &info.brand, &info.account]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(org: &str, room: &str) -> RoomKey {
        RoomKey { org_id: org.into(), room_id: room.into(), platform: "douyin".into() }
    }

    fn info(name: &str, target: Option<i64>) -> RoomInfo {
        RoomInfo {
            name: name.into(),
            anchor: "小雅".into(),
            brand: "星芒".into(),
            account: "xm".into(),
            gmv_target_cents: target,
        }
    }

    #[test]
    fn series_follow_the_directory_and_the_live_rooms() {
        let reg = Registry::new();
        let m = RoomInfoMetrics::new(&reg).unwrap();
        let (k1, k2) = (key("org-a", "r1"), key("org-a", "r2"));
        let (i1, i2) = (info("旗舰店", Some(5_000_000)), info("r2 \"quoted\"", None));
        m.sync([(&k1, &i1), (&k2, &i2)]);
        let text = crate::render(&reg);
        assert!(text.contains(
            "livefunnel_room_info{account=\"xm\",anchor=\"小雅\",brand=\"星芒\",name=\"旗舰店\",org_id=\"org-a\",platform=\"douyin\",room_id=\"r1\"} 1"
        ), "{text}");
        assert!(text.contains("name=\"r2 \\\"quoted\\\"\""), "{text}");
        assert!(text.contains(
            "livefunnel_room_gmv_target_cents{org_id=\"org-a\",platform=\"douyin\",room_id=\"r1\"} 5000000"
        ), "{text}");
        assert!(
            !text.contains(
                "livefunnel_room_gmv_target_cents{org_id=\"org-a\",platform=\"douyin\",room_id=\"r2\"}"
            ),
            "{text}"
        );

        // r1 renamed and moved to another org, r2 gone: their old series go.
        let k1b = key("org-b", "r1");
        let i1b = info("新名字", Some(1));
        m.sync([(&k1b, &i1b)]);
        let text = crate::render(&reg);
        assert!(!text.contains("旗舰店") && !text.contains("room_id=\"r2\""), "{text}");
        assert!(text.contains("name=\"新名字\",org_id=\"org-b\""), "{text}");
        assert!(
            text.contains(
                "livefunnel_room_gmv_target_cents{org_id=\"org-b\",platform=\"douyin\",room_id=\"r1\"} 1"
            ),
            "{text}"
        );
        m.sync([]);
        assert!(!crate::render(&reg).contains("room_id="));
    }
}
