//! Memory bound: `livefunnel run` as its own process holds 10,000
//! concurrent live rooms, each with a session and 3–20 viewers present, spread over
//! 12 partitions; its resident memory (VmHWM, the peak of VmRSS) stays under
//! [`RSS_CAP_MIB`], and the test prints bytes per room in memory and in checkpoints;
//! once the rooms are quiet, checkpoints keep their encoded bytes instead of encoding
//! them again.
//!
//! A manual measurement at another scale, e.g.
//! `MEMORY_ROOMS=50000 MEMORY_PARTITIONS=16 MEMORY_RSS_CAP_MIB=4096 cargo test --release
//! -p livefunnel --test memory -- --nocapture`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use livefunnel_kafka::rdkafka::mocking::MockCluster;
use livefunnel_testkit::ClickHouseServer;

/// The cap on the process's peak resident memory at 10,000 rooms (override:
/// `MEMORY_RSS_CAP_MIB`): about 1.5 times the ~1,020 MiB peak measured when written
/// (~100 KB per room), so a regression of a third fails.
const RSS_CAP_MIB: u64 = 1_536;
const ROOMS: usize = 10_000;
const PARTITIONS: i32 = 12;
/// Rooms produced at once; the next wave waits until the pipeline has consumed this
/// one, so the mock cluster's per-partition retention (~5 MB) never drops unread data.
const WAVE_ROOMS: usize = 2_500;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Viewers of a room: 3 to 20, fixed by the room's number.
fn viewers(room: usize) -> usize {
    3 + (xxhash_rust::xxh3::xxh3_64(&room.to_le_bytes()) % 18) as usize
}

const SOURCES: [&str; 5] = ["recommend_feed", "private_group", "search", "paid_boost", "follow_feed"];

/// A room's events: `session_start`, then per viewer an `enter` and a `heartbeat`,
/// all within a few seconds of `base_ts` (live-mode times near the wall clock).
fn room_events(room: usize, base_ts: i64, partitions: i32) -> Vec<Input> {
    let id = format!("r{room:06}");
    let partition = partition_of(&id, partitions);
    let sess = format!("{id}-s");
    let ts0 = base_ts + (room % 1000) as i64;
    let mut out = vec![format!(
        r#"{{"event_id":"s","type":"session_start","ts":{ts0},"room_id":"{id}","session_id":"{sess}"}}"#
    )];
    let n = viewers(room);
    for v in 0..n {
        let (ts, src) = (ts0 + 1_000 + 10 * v as i64, SOURCES[(room + v) % SOURCES.len()]);
        out.push(format!(
            r#"{{"event_id":"e{v}","type":"enter","ts":{ts},"room_id":"{id}","session_id":"{sess}","user_id":"u{v}","source":"{src}"}}"#
        ));
    }
    for v in 0..n {
        let ts = ts0 + 4_000 + 10 * v as i64;
        out.push(format!(
            r#"{{"event_id":"h{v}","type":"heartbeat","ts":{ts},"room_id":"{id}","session_id":"{sess}","user_id":"u{v}"}}"#
        ));
    }
    out.into_iter()
        .map(|p| Input { partition, key: id.clone().into_bytes(), payload: p.into_bytes() })
        .collect()
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(p: &Run, field: &str) -> u64 {
    p.status_kib(field).unwrap_or_else(|| p.fail(format!("no {field} in /proc/{}/status", p.pid())))
}

/// Bytes of the checkpoint files in `dir`.
fn checkpoint_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ckpt"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    })
}

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn faultsuite_ten_thousand_live_rooms_stay_under_the_memory_cap() {
    let rooms = env_or("MEMORY_ROOMS", ROOMS);
    let partitions = env_or("MEMORY_PARTITIONS", PARTITIONS);
    let cap_mib = env_or("MEMORY_RSS_CAP_MIB", RSS_CAP_MIB);
    let started = Instant::now();
    let server = ClickHouseServer::spawn();
    let mock = MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, partitions, 1).expect("creating the input topic");
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "memory");
    let http = free_local_addr();
    // Checkpoints every 2 s.
    let config = write_run_config(
        dir.path(),
        &RunConfig {
            checkpoint_interval: "2s",
            // Every room with its series, however many MEMORY_ROOMS asks for.
            extra: &format!("max_room_series = {}\n", rooms.max(1)),
            ..RunConfig::new(&brokers, &ch, "memory", http)
        },
    );
    let mut p = Run::start(&config, http, &dir.path().join("run.log"));
    let rt = runtime();
    // Polls `/metrics` until `done` holds; panics with the log tail after `limit`.
    let wait = |p: &mut Run, what: &str, limit: Duration, done: &dyn Fn(&str) -> bool| {
        let t = Instant::now();
        loop {
            let text = rt.block_on(scrape(http));
            if done(&text) {
                return text;
            }
            p.assert_alive();
            if t.elapsed() > limit {
                p.fail(format!("{what}: not within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // The idle instance: partitions assigned, ClickHouse ready, nothing consumed.
    wait(&mut p, "partitions assigned", Duration::from_secs(60), &|t| {
        series_sum(t, "livefunnel_partitions_assigned") == partitions as f64
    });
    let t = Instant::now();
    while rt.block_on(http_get(http, "/readyz")).map(|(c, _)| c).unwrap_or(0) != 200 {
        p.assert_alive();
        if t.elapsed() > Duration::from_secs(60) {
            p.fail("/readyz never 200");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle_kib = status_kib(&p, "VmRSS");

    // The load, in waves.
    let base_ts = std::time::UNIX_EPOCH.elapsed().unwrap().as_millis() as i64;
    let (mut produced, mut viewers_total, mut peak_sampled) = (0usize, 0usize, 0u64);
    for wave in (0..rooms).step_by(WAVE_ROOMS) {
        let end = (wave + WAVE_ROOMS).min(rooms);
        let events: Vec<Input> = (wave..end).flat_map(|r| room_events(r, base_ts, partitions)).collect();
        viewers_total += (wave..end).map(viewers).sum::<usize>();
        produced += events.len();
        rt.block_on(produce(&brokers, &events));
        let want = produced as f64;
        wait(&mut p, &format!("consuming {produced} events"), Duration::from_secs(120), &|t| {
            series_sum(t, "livefunnel_events_consumed_total") >= want
        });
        let rss = status_kib(&p, "VmRSS");
        peak_sampled = peak_sampled.max(rss);
        eprintln!(
            "[memory +{:>5.1}s] {end} rooms, {produced} events consumed, VmRSS {:.1} MiB",
            started.elapsed().as_secs_f64(),
            rss as f64 / 1024.0
        );
        assert!(rss < cap_mib * 1024, "VmRSS {rss} KiB over the cap of {cap_mib} MiB at {end} rooms");
    }

    // Every room live, every viewer present, nothing rejected.
    let text = wait(&mut p, "all rooms live", Duration::from_secs(60), &|t| {
        series_sum(t, "livefunnel_live_rooms") == rooms as f64
            && series_sum(t, "livefunnel_events_accepted_total") == produced as f64
    });
    assert_eq!(series_sum(&text, "livefunnel_events_rejected_total"), 0.0);
    assert_eq!(series_sum(&text, "livefunnel_events_duplicate_total"), 0.0);
    assert_eq!(series_sum(&text, "livefunnel_room_live"), rooms as f64);
    assert_eq!(series_sum(&text, "livefunnel_room_online_viewers"), viewers_total as f64);
    assert_eq!(series_sum(&text, "livefunnel_room_watch_entries_total"), viewers_total as f64);

    // A checkpoint of every partition taken after the load.
    let ok = |t: &str| series_value(t, "livefunnel_checkpoints_total", &[("result", "ok")]).unwrap_or(0.0);
    let before = ok(&text);
    // A checkpoint's barrier waits behind every row queued for ClickHouse, and at
    // scale the rows of the load take a while.
    let limit = Duration::from_secs(60 + rooms as u64 / 250);
    wait(&mut p, "a checkpoint of every partition", limit, &|t| ok(t) >= before + 2.0 * partitions as f64);
    let ckpt = checkpoint_bytes(&dir.path().join("state"));
    let loaded_kib = status_kib(&p, "VmRSS");
    let exposition = rt.block_on(scrape(http));
    // Reported, not asserted: how long a scrape of this many rooms takes (request to
    // the last byte, on loopback), the best and the median of five; and how long the
    // renders took, as each next scrape shows it.
    let mut render_ms = Vec::new();
    let mut scrape_ms: Vec<f64> = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            let body = rt.block_on(scrape(http));
            assert!(body.len() * 2 > exposition.len(), "a scrape came back short");
            let took = t.elapsed().as_secs_f64() * 1000.0;
            let render = series_value(&body, "livefunnel_metrics_render_seconds", &[]);
            render_ms.push(render.expect("livefunnel_metrics_render_seconds on /metrics") * 1000.0);
            took
        })
        .collect();
    scrape_ms.sort_by(f64::total_cmp);
    render_ms.sort_by(f64::total_cmp);
    // Each shows a render that happened: none is 0, and the slowest is within twice
    // the slowest scrape (a value in the wrong unit would be far off).
    assert!(
        render_ms[0] > 0.0 && render_ms[4] < scrape_ms[4] * 2.0,
        "render {render_ms:?}, scrape {scrape_ms:?}"
    );
    let snapshot =
        |how| series_value(&exposition, "livefunnel_snapshot_rooms_total", &[("how", how)]).unwrap_or(0.0);
    let (encoded, kept) = (snapshot("encoded"), snapshot("kept"));
    eprintln!(
        "[memory] snapshots: {:.2} s encoding in {} of them, {encoded} rooms encoded, {kept} kept",
        series_value(&exposition, "livefunnel_snapshot_duration_seconds_sum", &[]).unwrap_or(0.0),
        series_value(&exposition, "livefunnel_snapshot_duration_seconds_count", &[]).unwrap_or(0.0),
    );
    // After the load, the rooms are quiet: the last checkpoints kept their bytes.
    assert!(kept > 0.0, "snapshots encoded {encoded} rooms and kept none");
    let room_series = exposition.lines().filter(|l| !l.starts_with('#') && l.contains("room_id=")).count();
    let hwm_kib = status_kib(&p, "VmHWM").max(peak_sampled);
    let per_room = (loaded_kib.saturating_sub(idle_kib) * 1024) as f64 / rooms as f64;
    eprintln!(
        "[memory] rooms {rooms} partitions {partitions} viewers {viewers_total} events {produced}: \
         idle VmRSS {:.1} MiB, loaded VmRSS {:.1} MiB, peak VmHWM {:.1} MiB (cap {cap_mib} MiB); \
         {per_room:.0} bytes per room in memory; checkpoints {:.1} MiB = {:.0} bytes per room; \
         /metrics {:.1} MiB with {room_series} room series, scraped in {:.0} ms (median {:.0} ms), rendered \
         in {:.0} ms (median {:.0} ms); wall {:.1}s",
        idle_kib as f64 / 1024.0,
        loaded_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0,
        ckpt as f64 / MIB,
        ckpt as f64 / rooms as f64,
        exposition.len() as f64 / MIB,
        scrape_ms[0],
        scrape_ms[2],
        render_ms[0],
        render_ms[2],
        started.elapsed().as_secs_f64()
    );
    assert!(hwm_kib < cap_mib * 1024, "peak VmHWM {hwm_kib} KiB over the cap of {cap_mib} MiB");
    assert!(ckpt > 0, "no checkpoint files");
    assert!(loaded_kib > idle_kib, "the rooms' state shows in VmRSS");

    // A clean stop.
    p.signal(15);
    let st = p.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "SIGTERM must exit 0, got {st}; log:\n{}", p.log_tail(40));
}
