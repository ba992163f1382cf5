//! Contract v1.1 §1.4 reason 8 in `run`: a flood of invented `room_id`s beyond
//! `limits.max_rooms_per_partition` is dead-lettered `room_limit` (never dropped, never
//! an out-of-memory), while the rooms already there go on.

mod common;

use std::time::Duration;

use common::*;
use livefunnel_pipeline::SinkKind;

const GROUP: &str = "room-limit";
const FLOOD: usize = 500;

#[test]
fn a_flood_of_new_rooms_beyond_the_limit_is_dead_lettered() {
    init_logs();
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("creating the input topic");
    mock.create_topic(DLQ_TOPIC, 1, 1).expect("creating the dead-letter topic");
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let now = livefunnel_pipeline::now_ms() / 1000 * 1000;
    let msg = |i: usize, room: &str| {
        let payload = format!(
            r#"{{"event_id":"e{i}","type":"comment","ts":{},"room_id":"{room}","session_id":"s","user_id":"u{i}"}}"#,
            now + i as i64
        );
        Input { partition: 0, key: room.as_bytes().to_vec(), payload: payload.into_bytes() }
    };
    // Two real rooms, then a flood of invented ones, then the real rooms again.
    let mut inputs = vec![msg(0, "real-1"), msg(1, "real-2")];
    inputs.extend((0..FLOOD).map(|i| msg(2 + i, &format!("invented-{i}"))));
    inputs.push(msg(FLOOD + 2, "real-1"));
    inputs.push(msg(FLOOD + 3, "real-2"));
    let rt = runtime();
    rt.block_on(async {
        produce(&brokers, &inputs).await;
        let mut settings = test_settings(&brokers, GROUP, Default::default(), &dir.path().join("state"));
        settings.sink = SinkKind::Jsonl(dir.path().join("out"));
        settings.engine.max_rooms_per_partition = 2;
        let p = start_pipeline(settings).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let text = loop {
            let text = scrape(p.addr).await;
            let seen = series_sum(&text, "livefunnel_events_accepted_total")
                + series_sum(&text, "livefunnel_events_rejected_total");
            if seen >= inputs.len() as f64 {
                break text;
            }
            assert!(std::time::Instant::now() < deadline, "only {seen} events handled:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(series_value(&text, "livefunnel_events_accepted_total", &[]), Some(4.0), "{text}");
        let limited = [("reason", "room_limit")];
        assert_eq!(series_value(&text, "livefunnel_events_rejected_total", &limited), Some(FLOOD as f64));
        assert_eq!(series_value(&text, "livefunnel_dead_letters_total", &limited), Some(FLOOD as f64));
        // Room series only for the rooms the engine holds (they show at the next tick).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let text = loop {
            let text = scrape(p.addr).await;
            if series_value(&text, "livefunnel_room_comments_total", &[("room_id", "real-2")]) == Some(2.0) {
                break text;
            }
            assert!(std::time::Instant::now() < deadline, "no series for real-2:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(series_value(&text, "livefunnel_room_comments_total", &[("room_id", "real-1")]), Some(2.0));
        assert!(series_value(&text, "livefunnel_room_comments_total", &[("room_id", "invented-0")]).is_none());
        p.shutdown.cancel();
        p.handle.await.unwrap().unwrap();
    });
    let dead = read_dead_letters(&brokers, FLOOD, Duration::from_secs(1), Duration::from_secs(60));
    assert_eq!(dead.len(), FLOOD, "every flooded message is in the dead-letter topic once");
    assert!(dead.iter().all(|d| d.reason == "room_limit" && d.source_topic == TOPIC));
    let offsets: std::collections::BTreeSet<i64> = dead.iter().map(|d| d.source_offset).collect();
    assert_eq!(offsets, (2..2 + FLOOD as i64).collect(), "the flood's own offsets");
}
