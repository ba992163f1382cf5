//! The pipeline under test: `livefunnel run` as a child process with its configuration
//! file, or `pipeline::run` in-process with the test's settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_core::TimeMode;
use livefunnel_pipeline::{self as pipeline, Settings, SinkKind, Status, World};
use tokio_util::sync::CancellationToken;

use super::{engine_config, TOPIC};

/// A loopback address with a port that is free now.
pub fn free_local_addr() -> SocketAddr {
    format!("127.0.0.1:{}", livefunnel_testkit::free_port()).parse().unwrap()
}

/// What goes into `run`'s configuration file.
pub struct RunConfig<'a> {
    pub brokers: &'a str,
    /// `[clickhouse]`: url, database, user and batch interval (the password never: it
    /// comes from the environment where a test needs one).
    pub clickhouse: &'a ClickHouseConfig,
    pub group: &'a str,
    /// Where `/metrics` and `/readyz` are served.
    pub http: SocketAddr,
    /// `time.idle_timeout`; `None`: the default.
    pub idle_timeout: Option<&'a str>,
    /// Extra librdkafka properties under `[kafka]`.
    pub kafka: &'a [(&'a str, &'a str)],
    /// `checkpoint.interval`.
    pub checkpoint_interval: &'a str,
    /// More TOML after everything else (a `[privacy]` table, say).
    pub extra: &'a str,
}

impl<'a> RunConfig<'a> {
    /// Checkpoints every second, the default idle timeout, nothing extra.
    pub fn new(brokers: &'a str, clickhouse: &'a ClickHouseConfig, group: &'a str, http: SocketAddr) -> Self {
        RunConfig {
            brokers,
            clickhouse,
            group,
            http,
            idle_timeout: None,
            kafka: &[],
            checkpoint_interval: "1s",
            extra: "",
        }
    }
}

/// Writes `dir/livefunnel.toml`, with checkpoint files in `dir/state`.
pub fn write_run_config(dir: &Path, c: &RunConfig<'_>) -> PathBuf {
    let time = c.idle_timeout.map(|t| format!("[time]\nidle_timeout = \"{t}\"\n\n")).unwrap_or_default();
    let props: String = c.kafka.iter().map(|(k, v)| format!("\"{k}\" = \"{v}\"\n")).collect();
    let ch = c.clickhouse;
    let text = format!(
        r#"
{time}[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{TOPIC}"]
{props}
[clickhouse]
url = "{url}"
database = "{db}"
user = "{user}"
batch_interval = "{batch}"

[checkpoint]
dir = "{state}"
interval = "{interval}"

[http]
listen = "{http}"
{extra}"#,
        brokers = c.brokers,
        group = c.group,
        url = ch.url,
        db = ch.database,
        user = ch.user,
        batch = ch.batch_interval,
        state = dir.join("state").display(),
        interval = c.checkpoint_interval,
        http = c.http,
        extra = c.extra,
    );
    let path = dir.join("livefunnel.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `livefunnel run --config CONFIG` logging at `info` (or as `TESTKIT_RUST_LOG` says:
/// `info,librdkafka=debug` with `LIVEFUNNEL_KAFKA__DEBUG=cgrp` shows librdkafka's view of
/// a consumer group), its output appended to `log`.
pub fn run_command(config: &Path, log: &Path) -> Command {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_livefunnel"));
    cmd.args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", std::env::var("TESTKIT_RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    cmd
}

/// `livefunnel run` as a child process, killed when dropped so a failing test leaves
/// nothing running.
pub struct Run {
    pub child: Child,
    /// Where it serves `/metrics` and `/readyz`.
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Run {
    pub fn start(config: &Path, addr: SocketAddr, log: &Path) -> Run {
        Run::spawn(run_command(config, log), addr, log)
    }

    /// Starts `cmd`: [`run_command`] with more settings.
    pub fn spawn(mut cmd: Command, addr: SocketAddr, log: &Path) -> Run {
        let child = cmd.spawn().expect("starting livefunnel run");
        Run { child, addr, log: log.to_owned() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Panics with `what` and the end of the process's log.
    pub fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("{what}\n--- {} (tail):\n{}", self.log.display(), self.log_tail(60))
    }

    /// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`); `None` once it exited.
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find_map(|l| {
            l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok()
        })
    }

    /// The resident memory in KiB, 0 when unknown.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS").unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn assert_alive(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            self.fail(format!("livefunnel run exited with {st}"));
        }
    }

    pub fn signal(&self, sig: i32) {
        // The `kill` command: the workspace forbids unsafe code, so no libc::kill.
        let pid = self.pid().to_string();
        let rc = Command::new("kill").arg(format!("-{sig}")).arg(&pid).status().unwrap();
        assert!(rc.success(), "kill -{sig} {pid}");
    }

    /// Waits for the exit; fails after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > limit {
                self.fail(format!("livefunnel run did not exit within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for the exit (at most 30 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(15);
        self.wait_exit(Duration::from_secs(30))
    }

    /// SIGTERM unless it exited already, then waits for the exit (at most `limit`).
    pub fn stop(&mut self, limit: Duration) -> ExitStatus {
        if self.alive() {
            self.signal(15);
        }
        self.wait_exit(limit)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The settings of an in-process pipeline: live mode with [`engine_config`], the
/// input topic, rows to ClickHouse, checkpoint files in `state` every second.
pub fn test_settings(brokers: &str, group: &str, ch: ClickHouseConfig, state: &Path) -> Settings {
    let kafka = livefunnel_pipeline::config::KafkaConfig {
        brokers: brokers.to_owned(),
        topics: vec![TOPIC.to_owned()],
        group_id: group.to_owned(),
        ..Default::default()
    };
    let engine = engine_config(TimeMode::Live);
    Settings {
        signals: livefunnel_pipeline::config::SignalsConfig::default().resolve(&engine.windows),
        detectors: livefunnel::detectors_config::DetectorsConfig::default().resolve(),
        engine,
        kafka,
        sink: SinkKind::ClickHouse(ch),
        state_dir: state.to_owned(),
        shared_store: None,
        checkpoint_interval_ms: 1_000,
        series_ttl_ms: 15 * 60_000,
        max_room_series: livefunnel_metrics::DEFAULT_MAX_ROOMS,
        engine_threads: 0,
        privacy: None,
        wall: livefunnel_pipeline::wall::WallConfig::default(),
    }
}

/// The pipeline running in-process.
pub struct Pipeline {
    pub shutdown: CancellationToken,
    /// Where it serves `/metrics` and `/readyz`.
    pub addr: SocketAddr,
    pub handle: tokio::task::JoinHandle<Result<(), pipeline::Fatal>>,
}

/// Spawns the pipeline on the current runtime, serving on a loopback port.
pub async fn start_pipeline(settings: Settings) -> Pipeline {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let world = World {
        registry: prometheus::Registry::new(),
        http: Some(listener),
        shutdown: shutdown.clone(),
        abort: CancellationToken::new(),
    };
    let handle = tokio::spawn(pipeline::run(settings, world, Arc::new(Status::default())));
    Pipeline { shutdown, addr, handle }
}
