//! The shipped alert rules against a real Prometheus (Debian's package, on loopback)
//! scraping a running `livefunnel demo` whose simulator runs at 20× real time: a wiring
//! test (detectors → series → rules → alerts), not a measurement of delays, which
//! `livefunnel eval-alerts` makes at CPU speed (docs/alerts.md).
//!
//! Two rooms get a scenario far beyond the detectors' thresholds, so the outcome does
//! not depend on chance: a private-led room scaled to about 15 organic orders a minute
//! loses 80 % of its orders (GPMDrop's evidence grows by about 6.7 nats a minute against
//! a threshold of 15, so it fires within a few event minutes), and a room scaled to
//! about 200 viewers online loses 40 % of them (a cliff of about 5.7 Poisson units
//! against 3). Both start at minute 70 of their sessions, 20 minutes after the detectors arm.
//! GPMDrop must fire for the first room, OnlineViewersCliff for the second, both after
//! their onset, and no alert ever for any other room, nor any other alert for these
//! two, except SalesStall for the first: with 3 orders a minute left, a minute without
//! one (e^-3) is a stall by the design's own acceptance (an 80 % drop may raise both;
//! Alertmanager lets SalesStall silence GPMDrop). The volumes are kept small so that
//! the demo keeps up at 20× on a loaded machine: a pipeline that falls behind raises
//! pipeline alerts and silent rooms, which this test refuses.
//!
//! The rules are a copy of `deploy/prometheus/rules/*.yml` that differs only in the
//! `for:` durations and the groups' evaluation intervals, divided by the speed-up: the
//! evidence is computed in event time, so everything else about the rules runs
//! unchanged at 20× (`keep_firing_for` only keeps a firing alert longer). Prometheus
//! scrapes and evaluates every 500 ms, 10 s of event time.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::repo_root;
use livefunnel_testkit::free_port;
use serde_json::Value;

const SPEED: u32 = 20;
const ROOMS: u32 = 20;
const SEED: u64 = 1;
/// Event time into each room's session at which its scenario starts: 20 minutes after
/// the detectors arm (minute 50, once the baseline holds 30 orders).
const ONSET_MINUTES: u32 = 70;
/// Wall-clock limit for both alerts to fire: the onset is 3.5 wall minutes at 20×, the
/// detection a few event minutes; the rest is for start-up on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(480);

/// The rooms of the scenario: (gpm_drop room number, its scale, viewer_cliff room
/// number, its scale), from the simulator's profiles of `--rooms 20 --seed 1`.
fn scenario_rooms() -> (u32, f64, u32, f64) {
    let sim = livefunnel_sim::Simulator::new(livefunnel_sim::SimParams {
        rooms: ROOMS,
        duration_ms: 90 * 60_000,
        seed: SEED,
        ..Default::default()
    });
    let profiles: Vec<_> = (0..ROOMS).map(|r| sim.room_profile(r)).collect();
    // The private-led room that sells the most per viewer: the fewest events per order.
    let per_viewer = |r: u32| {
        let p = &profiles[r as usize];
        p.organic_orders_per_minute / p.online.max(1.0)
    };
    let gpm = (0..ROOMS)
        .filter(|&r| profiles[r as usize].private_led)
        .max_by(|&a, &b| per_viewer(a).total_cmp(&per_viewer(b)))
        .expect("a private-led room");
    let cliff = (0..ROOMS).find(|&r| r != gpm).expect("another room");
    let scale = |want: f64, per_unit: f64| (want / per_unit).min(1000.0);
    (
        gpm + 1,
        scale(15.0, profiles[gpm as usize].organic_orders_per_minute),
        cliff + 1,
        scale(200.0, profiles[cliff as usize].online),
    )
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_binary() -> PathBuf {
    let p = std::env::var_os("TESTKIT_PROMETHEUS")
        .map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from);
    assert!(
        p.exists(),
        "this test needs a prometheus server binary at {}: apt-get install -y prometheus \
         (or set TESTKIT_PROMETHEUS)",
        p.display()
    );
    p
}

/// `for: 5m` becomes `for: 15000ms` at 20×, and a group's `interval: 10s` becomes
/// `interval: 500ms` (a cliff's evidence stays above its threshold for well under a
/// minute of event time, a few wall seconds); every other line is copied as it is.
fn scale_for_durations(rules: &str, speed: u32) -> String {
    let mut out = String::with_capacity(rules.len());
    for line in rules.lines() {
        let trimmed = line.trim_start();
        let key = ["for:", "interval:"].into_iter().find(|k| trimmed.starts_with(k));
        if let Some(key) = key {
            let value = &trimmed[key.len()..];
            let indent = &line[..line.len() - trimmed.len()];
            let ms = parse_duration_ms(value.trim())
                .unwrap_or_else(|| panic!("cannot read the `{key}` duration in {line:?}"));
            out.push_str(&format!("{indent}{key} {}ms\n", (ms / u64::from(speed)).max(1)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Prometheus durations as the rules use them: `90s`, `5m`, `1h30m`, `500ms`.
fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim_matches(|c| c == '"' || c == '\'');
    let mut total = 0u64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += n * match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
    }
    (!s.is_empty()).then_some(total)
}

/// GET over HTTP/1.0 (no chunked encoding): (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// The alerts Prometheus reports as firing: (alertname, room_id or "").
fn firing(prom: SocketAddr) -> Vec<(String, String)> {
    let Some((200, body)) = get(prom, "/api/v1/alerts") else { return Vec::new() };
    let v: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("prometheus /api/v1/alerts: {e}: {body}"));
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            let l = &a["labels"];
            (
                l["alertname"].as_str().unwrap_or_default().to_owned(),
                l["room_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The room's `livefunnel_room_session_age_seconds` on the demo's `/metrics`.
fn session_age(demo: SocketAddr, room: &str) -> Option<f64> {
    let (_, body) = get(demo, "/metrics")?;
    common::series_value(&body, "livefunnel_room_session_age_seconds", &[("room_id", room)])
}

fn write_prometheus_config(dir: &Path, demo: SocketAddr) -> PathBuf {
    let rules_src = repo_root().join("deploy/prometheus/rules");
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(&rules_src).unwrap_or_else(|e| panic!("{}: {e}", rules_src.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(rules_dir.join(path.file_name().unwrap()), scale_for_durations(&text, SPEED))
                .unwrap();
            copied += 1;
        }
    }
    assert!(copied > 0, "no rule files in {}", rules_src.display());
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
             rule_files:\n  - {}/*.yml\n\
             scrape_configs:\n  - job_name: livefunnel\n    static_configs:\n      - targets: ['{demo}']\n",
            rules_dir.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn gpm_drop_and_viewer_cliff_fire_for_their_rooms_and_nothing_else_does() {
    let (gpm_n, gpm_scale, cliff_n, cliff_scale) = scenario_rooms();
    let (gpm_room, cliff_room) = (format!("room-{gpm_n:04}"), format!("room-{cliff_n:04}"));
    let dir = tempfile::tempdir().unwrap();
    let demo_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let prom_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let demo_log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let _demo = Killed(
        Command::new(env!("CARGO_BIN_EXE_livefunnel"))
            .args(["demo", "--rooms", &ROOMS.to_string(), "--duration", "90m", "--seed", &SEED.to_string()])
            .args(["--speed", &SPEED.to_string(), "--warmup", "0s"])
            .args(["--scenario", &format!("audience:rooms={gpm_n}:scale={gpm_scale}")])
            .args(["--scenario", &format!("gpm_drop:rooms={gpm_n}:at={ONSET_MINUTES}m:share=0.8")])
            .args(["--scenario", &format!("audience:rooms={cliff_n}:scale={cliff_scale}")])
            .args(["--scenario", &format!("viewer_cliff:rooms={cliff_n}:at={ONSET_MINUTES}m")])
            .arg("--http")
            .arg(demo_addr.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            // Rows are not what this test looks at; never write into a server that
            // happens to answer on 127.0.0.1:8123.
            .args(["--sink", "jsonl"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(demo_log)
            .spawn()
            .expect("starting livefunnel demo"),
    );
    let config = write_prometheus_config(dir.path(), demo_addr);
    let prom_log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = Killed(
        Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(prom_log)
            .spawn()
            .expect("starting prometheus"),
    );

    let start = Instant::now();
    let expected = [("GPMDrop", gpm_room.as_str()), ("OnlineViewersCliff", cliff_room.as_str())];
    let mut fired: [Option<(Duration, Option<f64>)>; 2] = [None, None];
    let mut unexpected: BTreeSet<(String, String)> = BTreeSet::new();
    let mut watch = |fired: &mut [Option<(Duration, Option<f64>)>; 2]| {
        for (alert, room) in firing(prom_addr) {
            match expected.iter().position(|&(a, r)| a == alert && r == room) {
                Some(i) if fired[i].is_none() => {
                    fired[i] = Some((start.elapsed(), session_age(demo_addr, &room)));
                }
                Some(_) => {}
                None if alert == "SalesStall" && room == gpm_room => {}
                // Any other alert, on any room or the pipeline, is wrong here.
                None => {
                    unexpected.insert((alert, room));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    while fired.iter().any(Option::is_none) && start.elapsed() < DEADLINE {
        watch(&mut fired);
    }
    // Keep watching: every other room must stay quiet after the onsets too.
    let quiet_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < quiet_until {
        watch(&mut fired);
    }

    let logs = || {
        let tail = |f: &str| {
            let t = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
            t.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!("demo log:\n{}\nprometheus log:\n{}", tail("demo.log"), tail("prometheus.log"))
    };
    assert!(unexpected.is_empty(), "alerts that should not have fired: {unexpected:?}\n{}", logs());
    let onset = f64::from(ONSET_MINUTES * 60);
    for (i, (name, room)) in expected.iter().enumerate() {
        let (wall, age) = fired[i].unwrap_or_else(|| panic!("{name} never fired for {room}\n{}", logs()));
        let age = age.unwrap_or_else(|| panic!("no session age for {room} on /metrics"));
        assert!(age > onset, "{name} fired at session age {age} s, before the onset at {onset} s");
        println!(
            "{name} for {room}: firing {:.0} s (wall) into the test, at session age {age:.0} s (onset {onset:.0} s)",
            wall.as_secs_f64()
        );
    }
}

#[test]
fn for_durations_are_divided_and_nothing_else_changes() {
    let rules = "groups:\n  - name: x\n    interval: 10s\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 5m\n      - alert: B\n        expr: vector(1)\n        for: 1h30m\n";
    let scaled = scale_for_durations(rules, 20);
    assert!(scaled.contains("        for: 15000ms\n"), "{scaled}");
    assert!(scaled.contains("        for: 270000ms\n"), "{scaled}");
    assert!(scaled.contains("\n    interval: 500ms\n"), "{scaled}");
    let strip = |s: &str| {
        let scaled = |l: &&str| ["for:", "interval:"].iter().any(|k| l.trim_start().starts_with(k));
        s.lines().filter(|l| !scaled(l)).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(strip(rules), strip(&scaled));
    assert_eq!(parse_duration_ms("90s"), Some(90_000));
    assert_eq!(parse_duration_ms("500ms"), Some(500));
    assert_eq!(parse_duration_ms("5x"), None);
    assert_eq!(parse_duration_ms(""), None);
}
