//! The pipeline in-process against librdkafka's mock cluster and a real ClickHouse
//! server (18.16 from Debian in CI), started by the test with its own data directory.

mod common;

use std::time::Duration;

use common::*;
use livefunnel_kafka::rdkafka::topic_partition_list::Offset;
use livefunnel_testkit::ClickHouseServer;

const PARTITIONS: i32 = 2;
const GROUP: &str = "e2e";

#[test]
fn run_writes_what_replay_computes_dead_letters_and_live_metrics() {
    let server = ClickHouseServer::spawn();
    let f = Fixture::new(PARTITIONS);
    let (brokers, inputs, expected, state) = (&f.brokers, &f.inputs, &f.expected, &f.dir);
    let ch = ch_config(&server, "e2e_main");
    let unix_secs = || std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
    let started = unix_secs();
    f.rt.block_on(async {
        produce(brokers, inputs).await;
        let r = start_pipeline(test_settings(brokers, GROUP, ch.clone(), state.path())).await;
        wait_for_clickhouse(&ch, expected, Duration::from_secs(120)).await;

        // The room counters on /metrics: the same totals as the replay's minute rows.
        let (code, text) = http_get(r.addr, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        let totals = room_totals(expected);
        let mut checked = 0;
        for (room, (gmv, orders, comments)) in &totals {
            if room.starts_with("clock-") {
                continue;
            }
            let l = [("room_id", room.as_str())];
            assert_eq!(
                series_value(&text, "livefunnel_room_gmv_cents_total", &l),
                Some(*gmv as f64),
                "{room}"
            );
            assert_eq!(
                series_value(&text, "livefunnel_room_orders_paid_total", &l),
                Some(*orders as f64),
                "{room}"
            );
            assert_eq!(
                series_value(&text, "livefunnel_room_comments_total", &l),
                Some(*comments as f64),
                "{room}"
            );
            checked += 1;
        }
        assert!(checked >= 4, "{totals:?}");
        // Every room has its series: none left out by http.max_room_series.
        let rooms = latest_accepted_ts(inputs).len() as f64;
        assert_eq!(series_value(&text, "livefunnel_rooms_with_series", &[]), Some(rooms), "{text}");
        assert_eq!(series_value(&text, "livefunnel_room_series_dropped_total", &[]), Some(0.0));

        // The alert signals: what the replay rows give for each room's latest closed windows.
        let latest_ts = latest_accepted_ts(inputs);
        let mut checked = 0;
        for (room, ts) in latest_ts.iter().filter(|(room, _)| !room.starts_with("clock-")) {
            let want = expected_signals(expected, room, *ts);
            assert_eq!(want.len(), 16, "{room} has closed 10m/1m and 5m/10s windows");
            wait_for_signals(r.addr, room, &want).await;
            let (_, text) = http_get(r.addr, "/metrics").await.unwrap();
            let l = [("room_id", room.as_str())];
            let age = series_value(&text, "livefunnel_room_session_age_seconds", &l);
            assert!(age.is_some_and(f64::is_nan), "{room}'s session ended: {age:?}");
            let received = series_value(&text, "livefunnel_room_last_event_received_timestamp_seconds", &l);
            assert!(received.is_some_and(|t| t >= started.floor() && t <= unix_secs()), "{received:?}");
            checked += 1;
        }
        assert!(checked >= 4, "{latest_ts:?}");
        let (code, body) = http_get(r.addr, "/readyz").await.unwrap();
        assert_eq!(code, 200, "{body}");

        // Every rejected line is in the DLQ, with its reason.
        let summary = replay_inputs(inputs).summary;
        let rejected: u64 = summary.rejected.iter().sum();
        assert!(rejected > 0, "the sample has bad lines");
        let dlq = tokio::task::spawn_blocking({
            let b = brokers.clone();
            move || read_dead_letters(&b, rejected as usize, Duration::ZERO, Duration::from_secs(30))
        })
        .await
        .unwrap();
        assert_eq!(dlq.len() as u64, rejected);
        let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
        for d in &dlq {
            assert_eq!(d.source_topic, TOPIC);
            *by_reason.entry(d.reason.clone()).or_default() += 1;
        }
        let want: std::collections::BTreeMap<String, u64> = livefunnel_core::Reason::ALL
            .iter()
            .zip(summary.rejected)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.as_str().to_owned(), n))
            .collect();
        assert_eq!(by_reason, want);

        // A clean stop: final checkpoints, offsets committed at the end of each partition.
        r.shutdown.cancel();
        r.handle.await.unwrap().unwrap();
        let ends = partition_ends(inputs, PARTITIONS);
        let got = tokio::task::spawn_blocking({
            let b = brokers.clone();
            move || committed_offsets(&b, GROUP, PARTITIONS)
        })
        .await
        .unwrap();
        assert_eq!(got, ends.iter().map(|&e| Offset::Offset(e)).collect::<Vec<_>>());
        for p in 0..PARTITIONS {
            assert!(state.path().join(format!("{TOPIC}-{p}.ckpt")).exists());
        }
    });
}

#[test]
fn clickhouse_down_at_start_then_up() {
    let mut server = ClickHouseServer::prepare();
    let f = Fixture::new(PARTITIONS);
    let (brokers, inputs, expected, state) = (&f.brokers, &f.inputs, &f.expected, &f.dir);
    let ch = ch_config(&server, "e2e_down");
    f.rt.block_on(async {
        produce(brokers, inputs).await;
        let r = start_pipeline(test_settings(brokers, GROUP, ch.clone(), state.path())).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let (code, body) = http_get(r.addr, "/readyz").await.unwrap();
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("clickhouse"), "{body}");
        // Nothing is committed while the rows cannot be written.
        let got = tokio::task::spawn_blocking({
            let b = brokers.clone();
            move || committed_offsets(&b, GROUP, PARTITIONS)
        })
        .await
        .unwrap();
        assert!(got.iter().all(|o| *o == Offset::Invalid), "{got:?}");
        assert!(std::fs::read_dir(state.path())
            .unwrap()
            .all(|e| { !e.unwrap().file_name().to_string_lossy().ends_with(".ckpt") }));

        let server = tokio::task::spawn_blocking(move || {
            server.start();
            server
        })
        .await
        .unwrap();
        let _server = wait_ready(r.addr, server).await;
        wait_for_clickhouse(&ch, expected, Duration::from_secs(120)).await;
        r.shutdown.cancel();
        r.handle.await.unwrap().unwrap();
    });
}

/// Polls `/metrics` until every signal of `room` shows its expected value (a tick
/// after the rows, at most), or fails naming the first difference.
async fn wait_for_signals(addr: std::net::SocketAddr, room: &str, want: &[(String, &str, f64)]) {
    let same = |a: Option<f64>, b: f64| {
        a.is_some_and(|a| (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * b.abs().max(1.0))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = http_get(addr, "/metrics").await.unwrap();
        let wrong = want.iter().find_map(|(name, window, v)| {
            let got = series_value(&text, name, &[("room_id", room), ("window", window)]);
            (!same(got, *v))
                .then(|| format!("{name}{{room_id={room},window={window}}}: want {v}, got {got:?}"))
        });
        match wrong {
            None => return,
            Some(w) if std::time::Instant::now() > deadline => {
                panic!("signal series never matched replay: {w}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn wait_ready(addr: std::net::SocketAddr, server: ClickHouseServer) -> ClickHouseServer {
    for _ in 0..100 {
        if let Ok((200, _)) = http_get(addr, "/readyz").await {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/readyz never became ready after clickhouse came up");
}
