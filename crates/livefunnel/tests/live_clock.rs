//! Contract v1.1 §2 in `run` (live mode, librdkafka's mock cluster): session timeouts
//! and room retirement wait for the wall clock as well as for partition time, so one
//! producer whose clock runs 50 minutes ahead cannot retire the other rooms of its
//! partition and make their next broadcast `too_late`.

mod common;

use std::time::Duration;

use common::*;
use livefunnel_pipeline::SinkKind;

const GROUP: &str = "live-clock";

fn event(id: &str, kind: &str, ts: i64, room: &str, session: &str, extra: &str) -> Input {
    let payload = format!(
        r#"{{"event_id":"{id}","type":"{kind}","ts":{ts},"room_id":"{room}","session_id":"{session}"{extra}}}"#
    );
    Input { partition: 0, key: room.as_bytes().to_vec(), payload: payload.into_bytes() }
}

#[test]
fn a_far_ahead_clock_does_not_make_another_rooms_next_broadcast_too_late() {
    init_logs();
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("creating the input topic");
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let now = livefunnel_pipeline::now_ms() / 1000 * 1000;
    let m = 60_000;
    let viewer = r#","user_id":"u1","source":"moments""#;
    // Room A broadcasts and ends; room C sends one event dated 50 minutes ahead (inside
    // max_future_skew); a minute after its end, A starts its next broadcast.
    let mut inputs = vec![
        event("a1", "session_start", now - 10 * m, "A", "a-1", ""),
        event("a2", "enter", now - 9 * m, "A", "a-1", viewer),
        event("a3", "session_end", now - 5 * m, "A", "a-1", ""),
        event("c1", "like", now + 50 * m, "C", "c-1", r#","user_id":"u9""#),
    ];
    let next = [
        event("b1", "session_start", now - 4 * m, "A", "a-2", ""),
        event("b2", "enter", now - 4 * m + 1_000, "A", "a-2", viewer),
        event("b3", "product_click", now - 4 * m + 2_000, "A", "a-2", r#","user_id":"u1","product_id":"p1""#),
        event(
            "b4",
            "order_paid",
            now - 4 * m + 3_000,
            "A",
            "a-2",
            r#","user_id":"u1","product_id":"p1","order_id":"o1","amount_cents":9900"#,
        ),
        event("b5", "comment", now - 4 * m + 4_000, "A", "a-2", r#","user_id":"u1""#),
    ];
    inputs.extend(next.iter().cloned());
    let rt = runtime();
    rt.block_on(async {
        produce(&brokers, &inputs).await;
        let mut settings = test_settings(&brokers, GROUP, Default::default(), &dir.path().join("state"));
        settings.sink = SinkKind::Jsonl(out.clone());
        let p = start_pipeline(settings).await;
        let text = handled(p.addr, inputs.len()).await;
        // Every event of A's next broadcast (and every other) is accepted, and A is live.
        assert_eq!(series_sum(&text, "livefunnel_events_rejected_total"), 0.0, "{text}");
        assert_eq!(series_sum(&text, "livefunnel_events_accepted_total"), inputs.len() as f64);
        // Room series follow at the next tick of the partition (200 ms).
        let a = [("room_id", "A")];
        wait_series(p.addr, "livefunnel_room_gmv_cents_total", &a, 9900.0).await;
        wait_series(p.addr, "livefunnel_room_live", &a, 1.0).await;
        // Its end is accepted too, and emits its row.
        let end = event("b6", "session_end", now - 2 * m, "A", "a-2", "");
        produce(&brokers, std::slice::from_ref(&end)).await;
        let text = handled(p.addr, inputs.len() + 1).await;
        assert_eq!(series_sum(&text, "livefunnel_events_rejected_total"), 0.0, "{text}");
        p.shutdown.cancel();
        p.handle.await.unwrap().unwrap();
    });
    // The new broadcast's rows are out, and nothing ended by timeout.
    let rows = std::fs::read_to_string(out.join("rows.jsonl")).unwrap();
    let sessions: Vec<serde_json::Value> = rows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "session" && v["room_id"] == "A")
        .collect();
    let a2 = sessions.iter().rev().find(|v| v["session_id"] == "a-2").expect("a session row of a-2");
    assert_eq!((a2["gmv_cents"].as_i64(), a2["comments"].as_i64()), (Some(9900), Some(1)), "{a2}");
    assert_eq!(a2["session_end_ts"].as_i64(), Some(now - 2 * 60_000));
    assert!(sessions.iter().all(|v| v["ended_by_timeout"] == false), "{sessions:?}");
}

/// Waits until the series `name{labels}` has the value `want` on `/metrics`.
async fn wait_series(addr: std::net::SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(addr).await;
        if series_value(&text, name, labels) == Some(want) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{name}{labels:?} never reached {want}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `/metrics` counts `n` events accepted, rejected or dropped; its text.
async fn handled(addr: std::net::SocketAddr, n: usize) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(addr).await;
        let seen = series_sum(&text, "livefunnel_events_accepted_total")
            + series_sum(&text, "livefunnel_events_rejected_total")
            + series_sum(&text, "livefunnel_events_duplicate_total");
        if seen >= n as f64 {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "only {seen} of {n} events handled:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broadcast whose `session_end` is lost ends by timeout once both clocks have passed
/// `session_idle_timeout` (20 s here): `livefunnel_room_live` drops, the session row says
/// `ended_by_timeout`, and the room retires.
#[test]
fn a_lost_session_end_ends_the_broadcast_by_timeout() {
    init_logs();
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("creating the input topic");
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let now = livefunnel_pipeline::now_ms() / 1000 * 1000;
    let inputs = [
        event("a1", "session_start", now, "A", "a-1", ""),
        event("a2", "enter", now + 1_000, "A", "a-1", r#","user_id":"u1","source":"moments""#),
    ];
    let rt = runtime();
    rt.block_on(async {
        produce(&brokers, &inputs).await;
        let mut settings = test_settings(&brokers, GROUP, Default::default(), &dir.path().join("state"));
        settings.sink = SinkKind::Jsonl(out.clone());
        let e = &mut settings.engine;
        e.windows =
            ["10s", "session"].iter().map(|w| livefunnel_core::WindowSpec::parse(w).unwrap()).collect();
        e.breakdown_windows = None;
        e.out_of_orderness_ms = 1_000;
        e.allowed_lateness_ms = 5_000;
        e.idle_grace_ms = 1_000;
        e.presence_timeout_ms = 10_000;
        e.session_idle_timeout_ms = 20_000;
        e.validate().unwrap();
        settings.signals =
            livefunnel_pipeline::config::SignalsConfig::default().resolve(&settings.engine.windows);
        let p = start_pipeline(settings).await;
        handled(p.addr, inputs.len()).await;
        let started = std::time::Instant::now();
        let live =
            || async { series_value(&scrape(p.addr).await, "livefunnel_room_live", &[("room_id", "A")]) };
        while live().await != Some(1.0) {
            assert!(started.elapsed() < Duration::from_secs(10), "A never showed as live");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = loop {
            let text = scrape(p.addr).await;
            if series_value(&text, "livefunnel_room_live", &[("room_id", "A")]) == Some(0.0) {
                break text;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "A is still live after 60 s:\n{text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(series_sum(&text, "livefunnel_sessions_timed_out_total"), 1.0, "{text}");
        p.shutdown.cancel();
        p.handle.await.unwrap().unwrap();
    });
    let rows = std::fs::read_to_string(out.join("rows.jsonl")).unwrap();
    let last = rows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|v| v["kind"] == "session" && v["session_id"] == "a-1")
        .expect("a session row");
    assert_eq!(last["ended_by_timeout"], true, "{last}");
    assert_eq!(last["session_end_ts"].as_i64(), Some(now + 1_000), "{last}");
}
