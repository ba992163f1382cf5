//! `livefunnel run` as a process, stopped in the middle — a clean SIGTERM, then a
//! `kill -9` at a random moment — and started again: ClickHouse ends up with exactly
//! what an uninterrupted run (and `replay`) computes, and the room counters on
//! `/metrics` continue from their checkpointed values instead of restarting at 0.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_testkit::{free_port, ClickHouseServer};

const PARTITIONS: i32 = 2;

struct Proc {
    child: Child,
    addr: std::net::SocketAddr,
}

fn start_run(config: &std::path::Path, addr: std::net::SocketAddr, log: &std::path::Path) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_livefunnel"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting livefunnel run");
    Proc { child, addr }
}

fn signal(p: &Proc, sig: i32) {
    let pid = p.child.id() as i32;
    // `kill` the command: the workspace forbids unsafe code, so no libc::kill.
    let rc = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(rc.success(), "kill -{sig} {pid}");
}

fn wait_exit(p: &mut Proc, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "livefunnel run did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checkpoints(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".ckpt")).count()
    })
}

fn write_config(
    dir: &std::path::Path,
    brokers: &str,
    ch: &ClickHouseConfig,
    http: std::net::SocketAddr,
) -> std::path::PathBuf {
    let path = dir.join("livefunnel.toml");
    let text = format!(
        r#"
[time]
idle_timeout = "1s"

[kafka]
brokers = "{brokers}"
group_id = "restart"
topics = ["{TOPIC}"]

[clickhouse]
url = "{}"
database = "{}"
batch_interval_ms = 200

[checkpoint]
dir = "{}"
interval = "1s"

[http]
listen = "{http}"
"#,
        ch.url,
        ch.database,
        dir.join("state").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn sigterm_and_kill9_restarts_give_the_uninterrupted_results() {
    let server = ClickHouseServer::spawn();
    let f = Fixture::new(PARTITIONS);
    let (brokers, inputs, expected, dir) = (&f.brokers, &f.inputs, &f.expected, &f.dir);
    let ch = ClickHouseConfig { url: server.http_url(), database: "restart".into(), ..Default::default() };
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(dir.path(), brokers, &ch, http);
    let log = dir.path().join("run.log");
    let state = dir.path().join("state");
    let dump_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let (first, rest) = inputs.split_at(inputs.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    f.rt.block_on(async {
        // 1. The first third, then a clean SIGTERM once both partitions checkpointed.
        produce(brokers, first).await;
        let mut p = start_run(&config, http, &log);
        let t0 = Instant::now();
        while checkpoints(&state) < PARTITIONS as usize {
            assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoints; log:\n{}", dump_log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        signal(&p, 15);
        let st = wait_exit(&mut p, Duration::from_secs(30));
        assert!(st.success(), "SIGTERM must exit 0, got {st:?}; log:\n{}", dump_log());

        // 2. The second third with a new process, killed -9 at a random moment.
        produce(brokers, second).await;
        let mut p = start_run(&config, http, &log);
        let ms = 1_500 + (std::process::id() as u64 * 7919 + t0.elapsed().as_nanos() as u64) % 2_500;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        signal(&p, 9);
        let st = wait_exit(&mut p, Duration::from_secs(10));
        assert!(!st.success());

        // 3. The rest, and a third process that runs to the end.
        produce(brokers, third).await;
        let mut p = start_run(&config, http, &log);
        let deadline = Duration::from_secs(150);
        let t1 = Instant::now();
        loop {
            let ok = match clickhouse_latest(&ch).await {
                Ok(actual) => diff(expected, &actual),
                Err(e) => Some(e),
            };
            match ok {
                None => break,
                Some(d) if t1.elapsed() > deadline => {
                    panic!("clickhouse never matched the uninterrupted result: {d}\nlog:\n{}", dump_log())
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        // Counters continue from their checkpoints: they show the whole input's totals.
        let totals = room_totals(expected);
        let t2 = Instant::now();
        loop {
            let (_, text) = http_get(p.addr, "/metrics").await.unwrap_or((0, String::new()));
            let wrong: Vec<_> = totals
                .iter()
                .filter(|(room, _)| !room.starts_with("clock-"))
                .filter(|(room, (gmv, _, _))| {
                    series_value(&text, "livefunnel_room_gmv_cents_total", &[("room_id", room.as_str())])
                        != Some(*gmv as f64)
                })
                .map(|(room, t)| {
                    (
                        room.clone(),
                        *t,
                        series_value(&text, "livefunnel_room_gmv_cents_total", &[("room_id", room.as_str())]),
                    )
                })
                .collect();
            if wrong.is_empty() {
                break;
            }
            assert!(t2.elapsed() < Duration::from_secs(20), "room counters after restarts: {wrong:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        signal(&p, 15);
        let st = wait_exit(&mut p, Duration::from_secs(30));
        assert!(st.success(), "{st:?}; log:\n{}", dump_log());
    });
}
