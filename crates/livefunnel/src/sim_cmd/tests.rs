use clap::Parser;
use livefunnel_sim::{RoomSet, Scenario};

use super::*;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

fn parse(args: &str) -> Result<SimArgs, String> {
    Cli::try_parse_from(std::iter::once("sim").chain(args.split_whitespace()))
        .map(|c| c.sim)
        .map_err(|e| e.to_string())
}

fn params(args: &str) -> Result<SimParams, String> {
    let a = parse(args)?;
    sim_params_from_args(&a.model, a.pacing.realtime, 1_800_000_000_000).map_err(|e| e.to_string())
}

#[test]
fn defaults_are_the_simulator_defaults() {
    let a = parse("").unwrap();
    assert_eq!(params("").unwrap(), SimParams::default());
    assert_eq!(a.output(), SimOutput::Jsonl(None));
    assert!(!a.pacing.pacer(Instant::now(), 0).is_paced());
    assert_eq!(parse("--output -").unwrap().output(), SimOutput::Jsonl(None));
    assert_eq!(parse("--output x.jsonl").unwrap().output(), SimOutput::Jsonl(Some("x.jsonl".into())));
}

#[test]
fn profile_is_standard_unless_dense_is_asked_for() {
    assert_eq!(parse("").unwrap().profile, Profile::Standard);
    assert_eq!(parse("--profile dense --rooms 1000 --duration 310s").unwrap().profile, Profile::Dense);
    let err = parse("--profile busy").unwrap_err();
    assert!(err.contains("`busy` is not a profile: use `standard` or `dense`"), "{err}");
}

#[test]
fn the_documented_sample_command_parses() {
    let p = params(
        "--rooms 4 --duration 15m --seed 28 --late-share 0.004 --duplicate-share 0.004 --malformed-share 0.005",
    )
    .unwrap();
    let want = SimParams {
        rooms: 4,
        duration_ms: 900_000,
        seed: 28,
        late_share: 0.004,
        duplicate_share: 0.004,
        malformed_share: 0.005,
        ..SimParams::default()
    };
    assert_eq!(p, want);
    assert_eq!(params("--start-ms 1767225600000 --rooms 4").unwrap().start_ms, 1_767_225_600_000);
}

#[test]
fn scenarios_repeat_in_order() {
    let p = params(
        "--rooms 10 --scenario gpm_drop:rooms=1-5:at=10m --scenario viewer_cliff:rooms=7:at=15m \
         --scenario malformed:rooms=all:share=0.01",
    )
    .unwrap();
    assert_eq!(
        p.scenarios,
        [
            RoomScenario {
                rooms: RoomSet::Ranges(vec![(1, 5)]),
                scenario: Scenario::GpmDrop { at_ms: 600_000, lost: 0.5 }
            },
            RoomScenario {
                rooms: RoomSet::Ranges(vec![(7, 7)]),
                scenario: Scenario::ViewerCliff { at_ms: 900_000 }
            },
            RoomScenario { rooms: RoomSet::All, scenario: Scenario::Malformed { share: 0.01 } },
        ]
    );
}

#[test]
fn errors_name_the_bad_part() {
    let e = parse("--scenario gpm_drop:rooms=1-5:at=10").unwrap_err();
    assert!(e.contains("`at=10` needs a unit") && e.contains("gpm_drop[:rooms=LIST]:at=DURATION"), "{e}");
    let e = parse("--scenario cliff:at=5m").unwrap_err();
    assert!(e.contains("unknown scenario `cliff`") && e.contains("viewer_cliff[:rooms=LIST]"), "{e}");
    let e = params("--rooms 5 --scenario viewer_cliff:rooms=7:at=15m").unwrap_err();
    assert!(e.contains("room 7 (room-0007)") && e.contains("only 5 rooms"), "{e}");
    let e = params("--duration 10m --scenario sales_stall:at=15m").unwrap_err();
    assert!(e.contains("sales_stall") && e.contains("15m") && e.contains("10m"), "{e}");
    let e = params("--late-share 1.5").unwrap_err();
    assert!(e.contains("--late-share"), "{e}");
    let e = params("--malformed-share 1").unwrap_err();
    assert!(e.contains("--malformed-share"), "{e}");
    let e = parse("--rate 0").unwrap_err();
    assert!(e.contains("`0` is not a positive number"), "{e}");
    let e = parse("--rate 100 --realtime").unwrap_err();
    assert!(e.contains("cannot be used with"), "{e}");
    let e = parse("--start yesterday").unwrap_err();
    assert!(e.contains("RFC 3339"), "{e}");
}

#[test]
fn kafka_flags_come_in_pairs_and_exclude_a_file() {
    let a = parse("--kafka-brokers localhost:9092,kafka-2:9093 --topic live.events").unwrap();
    let want =
        SimOutput::Kafka { brokers: "localhost:9092,kafka-2:9093".into(), topic: "live.events".into() };
    assert_eq!(a.output(), want);
    assert!(parse("--kafka-brokers localhost:9092").unwrap_err().contains("--topic"));
    assert!(parse("--topic t").unwrap_err().contains("--kafka-brokers"));
    let e = parse("--kafka-brokers localhost:9092 --topic t --output x.jsonl").unwrap_err();
    assert!(e.contains("cannot be used with"), "{e}");
    let e = parse("--kafka-brokers localhost --topic t").unwrap_err();
    assert!(e.contains("`localhost` is not HOST:PORT"), "{e}");
    let e = parse("--kafka-brokers localhost:9092 --topic a/b").unwrap_err();
    assert!(e.contains("not a Kafka topic name"), "{e}");
}

#[test]
fn realtime_starts_now_unless_told() {
    assert_eq!(params("--realtime").unwrap().start_ms, 1_800_000_000_000);
    assert_eq!(params("--rate 50").unwrap().start_ms, SimParams::default().start_ms);
    assert_eq!(params("--realtime --start 2026-01-01T08:00:00+08:00").unwrap().start_ms, 1_767_225_600_000);
}

#[test]
fn start_accepts_epoch_ms_and_rfc3339() {
    assert_eq!(parse_start_ms("1767225600000"), Ok(1_767_225_600_000));
    assert_eq!(parse_start_ms("2026-01-01T00:00:00Z"), Ok(1_767_225_600_000));
    assert_eq!(parse_start_ms("2026-01-01T00:00:00.25Z"), Ok(1_767_225_600_250));
    assert_eq!(parse_start_ms("2025-12-31T19:30:00-04:30"), Ok(1_767_225_600_000));
    assert_eq!(parse_start_ms("2024-02-29T12:00:00Z"), Ok(1_709_208_000_000));
    assert_eq!(parse_start_ms("1970-01-01T00:00:00Z"), Ok(0));
    for bad in ["2026-01-01", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00+8"] {
        assert!(parse_start_ms(bad).is_err(), "{bad}");
    }
}

/// Records what reached it and when (on the fake clock).
#[derive(Default)]
struct Recorder {
    lines: Vec<u8>,
    sent_at: Vec<(Duration, MessageMeta)>,
    keys: Vec<String>,
    flushes: usize,
    now: Duration,
}

impl MessageSink for Recorder {
    fn send(&mut self, key: &str, meta: MessageMeta, payload: &[u8]) -> anyhow::Result<ControlFlow<()>> {
        self.lines.extend_from_slice(payload);
        self.lines.push(b'\n');
        self.sent_at.push((self.now, meta));
        self.keys.push(key.to_owned());
        Ok(ControlFlow::Continue(()))
    }

    fn flush(&mut self) -> anyhow::Result<ControlFlow<()>> {
        self.flushes += 1;
        Ok(ControlFlow::Continue(()))
    }
}

/// Drives `args` with a fake clock that only moves when `drive` sleeps.
fn fake_drive(args: &str) -> Recorder {
    let a = parse(args).unwrap();
    let p = sim_params_from_args(&a.model, a.pacing.realtime, 1_800_000_000_000).unwrap();
    let t0 = Instant::now();
    let mut pacer = a.pacing.pacer(t0, p.start_ms);
    let mut sim = Simulator::new(p);
    let elapsed = std::cell::Cell::new(Duration::ZERO);
    let mut rec = Recorder::default();
    let mut clock = || t0 + elapsed.get();
    let mut sleep = |d: Duration| elapsed.set(elapsed.get() + d);
    // The recorder reads the fake time through `elapsed` after each sleep.
    struct Timed<'a> {
        rec: &'a mut Recorder,
        elapsed: &'a std::cell::Cell<Duration>,
    }
    impl MessageSink for Timed<'_> {
        fn send(&mut self, key: &str, meta: MessageMeta, payload: &[u8]) -> anyhow::Result<ControlFlow<()>> {
            self.rec.now = self.elapsed.get();
            self.rec.send(key, meta, payload)
        }
        fn flush(&mut self) -> anyhow::Result<ControlFlow<()>> {
            self.rec.flush()
        }
    }
    let sent =
        drive(&mut sim, &mut pacer, &mut Timed { rec: &mut rec, elapsed: &elapsed }, &mut clock, &mut sleep)
            .unwrap();
    assert_eq!(sent as usize, rec.sent_at.len());
    rec
}

#[test]
fn pacing_changes_when_not_what() {
    let fast = fake_drive("--rooms 3 --duration 5m --seed 3");
    let rated = fake_drive("--rooms 3 --duration 5m --seed 3 --rate 200");
    let live = fake_drive("--rooms 3 --duration 5m --seed 3 --realtime --start 1767225600000");
    assert!(fast.sent_at.len() > 500, "{}", fast.sent_at.len());
    assert!(fast.lines == rated.lines && fast.lines == live.lines, "same bytes whatever the pace");
    assert_eq!(fast.sent_at.last().unwrap().0, Duration::ZERO, "unpaced never sleeps");
    assert_eq!(fast.flushes, 1);

    let n = rated.sent_at.len() as f64;
    let took = rated.sent_at.last().unwrap().0.as_secs_f64();
    assert!((took - (n - 1.0) / 200.0).abs() < 1e-3, "{n} messages at 200/s took {took} s");

    // Real time: each message leaves when its simulated arrival comes, never early.
    for (at, meta) in &live.sent_at {
        let due = Duration::from_millis((meta.due_ms - 1_767_225_600_000) as u64);
        assert_eq!(*at, due, "{meta:?}");
    }
    assert!(live.sent_at.last().unwrap().0 > Duration::from_secs(200));
    assert!(live.keys.iter().all(|k| ["room-0001", "room-0002", "room-0003"].contains(&k.as_str())));
}

#[test]
fn jsonl_sink_stops_quietly_on_a_closed_pipe() {
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }
    let mut sim = Simulator::new(SimParams { rooms: 2, duration_ms: 300_000, ..SimParams::default() });
    let mut sink = JsonlSink::new(Closed);
    let sent = drive(&mut sim, &mut Pacer::unpaced(), &mut sink, &mut Instant::now, &mut |_| {}).unwrap();
    assert!(sent > 100, "buffered until the first flush: {sent}");
    assert!(sim.next_message(&mut Vec::new()), "stopped before the end");
}
