//! The `dense` profile: busy rooms for the whole stream, as documented in `dense.rs`.

use super::*;
use crate::dense::{EVENTS_PER_MINUTE, PRODUCTS, VIEWERS};

fn dense(rooms: u32, minutes: i64, seed: u64) -> Vec<Vec<u8>> {
    let mut sim = Simulator::with_profile(params(rooms, minutes, seed), Profile::Dense);
    let mut v = Vec::new();
    let mut buf = Vec::new();
    while sim.next_message(&mut buf) {
        v.push(std::mem::take(&mut buf));
    }
    v
}

#[test]
fn dense_rooms_are_busy_for_the_whole_stream() {
    let msgs = dense(3, 6, 8);
    assert!(msgs.iter().all(|m| decode(m).is_ok()), "every message is valid by default");
    let events = accepted(&msgs);
    for room in ["room-0001", "room-0002", "room-0003"] {
        let evs: Vec<&Event<'_>> = events.iter().filter(|e| e.room_id == room).collect();
        let start = evs.iter().find(|e| e.kind == EventType::SessionStart).expect("a start").ts;
        let end = evs.iter().find(|e| e.kind == EventType::SessionEnd).expect("an end").ts;
        assert!(start < params(1, 1, 1).start_ms + 10_000 && end > start + 5 * MIN, "{room}");
        let per_minute = evs.len() as f64 / ((end - start) as f64 / MIN as f64);
        assert!(
            (0.9 * EVENTS_PER_MINUTE..1.1 * EVENTS_PER_MINUTE).contains(&per_minute),
            "{room}: {per_minute} events per minute"
        );
        // Online viewers by the presence rules (no timeout can pass: every viewer
        // is picked about once a minute), at the fifth minute.
        let mut online: HashMap<&str, bool> = HashMap::new();
        for e in evs.iter().filter(|e| e.ts < start + 5 * MIN) {
            match e.kind {
                EventType::Enter => {
                    online.insert(e.user_id.as_deref().unwrap(), true);
                }
                EventType::Leave => {
                    online.insert(e.user_id.as_deref().unwrap(), false);
                }
                _ => {}
            }
        }
        let n = online.values().filter(|&&o| o).count();
        assert!(n > 8 * VIEWERS as usize / 10 && n <= VIEWERS as usize, "{room}: {n} online");
        let products: HashSet<&str> = evs.iter().filter_map(|e| e.product_id.as_deref()).collect();
        assert!(products.len() > 9 * usize::from(PRODUCTS) / 10, "{room}: {} products", products.len());
        assert!(products.len() <= usize::from(PRODUCTS));
        let paid = evs.iter().filter(|e| e.kind == EventType::OrderPaid).count();
        assert!(paid > 50, "{room}: {paid} orders paid");
        let classes: HashSet<SourceClass> = evs
            .iter()
            .filter(|e| e.kind == EventType::Enter)
            .filter_map(|e| e.source.map(|s| s.class()))
            .collect();
        assert_eq!(classes.len(), 3, "{room}: private, public and paid viewers");
    }
}

#[test]
fn dense_streams_are_reproducible_and_rooms_independent() {
    let a = dense(2, 2, 3);
    assert_eq!(a, dense(2, 2, 3));
    assert_ne!(a, dense(2, 2, 4));
    let room2 = |msgs: &[Vec<u8>]| -> Vec<Vec<u8>> {
        msgs.iter()
            .filter(|m| String::from_utf8_lossy(m).contains("\"room_id\":\"room-0002\""))
            .cloned()
            .collect()
    };
    assert_eq!(room2(&a), room2(&dense(5, 2, 3)));
    assert_eq!(Profile::parse("dense"), Some(Profile::Dense));
    assert_eq!(Profile::parse("standard"), Some(Profile::Standard));
    assert_eq!(Profile::parse("busy"), None);
}
