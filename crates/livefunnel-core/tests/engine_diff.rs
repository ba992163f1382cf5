//! Differential test: the engine against the first engine (`engine_v1`, built by the
//! test-only feature `engine-v1`), call for call, on the property test's random
//! streams (replay and live mode with wall-clock ticks, across snapshots and
//! restores), on the shipped sample and on simulated standard and dense rooms. Both
//! must give the same outcomes and the same rows in the same order with the same
//! versions, the same counters and the same running values.
//!
//! Run: `cargo test -p livefunnel-core --release --test engine_diff` (at least 1000
//! random cases; `PROPTEST_CASES` may raise it).

// `fmt_event` serves the other tests only.
#[allow(dead_code)]
mod gen;

use livefunnel_core::engine_v1;
use livefunnel_core::{decode, Engine, EngineConfig, Event, Row, TimeMode};
use livefunnel_sim::{Profile, SimParams, Simulator};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use gen::{case, proptest_config, Call, Case};

/// What both engines offer, with their own result types shown as `Debug` text.
trait Eng: Sized {
    fn new(cfg: EngineConfig) -> Self;
    fn process(&mut self, ev: &Event<'_>, wall: i64, out: &mut Vec<Row>) -> String;
    fn tick(&mut self, wall: i64, out: &mut Vec<Row>);
    fn finish(&mut self, out: &mut Vec<Row>);
    fn running(&mut self) -> String;
    fn stats(&self) -> String;
    fn snapshot(&self) -> Vec<u8>;
    fn restore(cfg: EngineConfig, bytes: &[u8], exact: bool) -> Result<Self, String>;
    fn set_version_epoch(&mut self, epoch: u32);
}

macro_rules! impl_eng {
    ($t:ty) => {
        impl Eng for $t {
            fn new(cfg: EngineConfig) -> Self {
                <$t>::new(cfg)
            }
            fn process(&mut self, ev: &Event<'_>, wall: i64, out: &mut Vec<Row>) -> String {
                format!("{:?}", <$t>::process(self, ev, wall, out))
            }
            fn tick(&mut self, wall: i64, out: &mut Vec<Row>) {
                <$t>::tick(self, wall, out)
            }
            fn finish(&mut self, out: &mut Vec<Row>) {
                <$t>::finish(self, out)
            }
            fn running(&mut self) -> String {
                let mut v = Vec::new();
                <$t>::running(self, &mut v);
                format!("{v:#?}")
            }
            fn stats(&self) -> String {
                format!(
                    "{:?} rooms={} partition_max_ts={:?}",
                    <$t>::stats(self),
                    self.rooms(),
                    self.partition_max_ts()
                )
            }
            fn snapshot(&self) -> Vec<u8> {
                <$t>::snapshot(self)
            }
            fn restore(cfg: EngineConfig, bytes: &[u8], exact: bool) -> Result<Self, String> {
                let r = if exact { <$t>::restore_exact(cfg, bytes) } else { <$t>::restore(cfg, bytes) };
                r.map_err(|e| format!("{} does not restore its snapshot: {e}", stringify!($t)))
            }
            fn set_version_epoch(&mut self, epoch: u32) {
                <$t>::set_version_epoch(self, epoch).expect("a higher epoch")
            }
        }
    };
}

impl_eng!(Engine);
impl_eng!(engine_v1::Engine);

/// One call into an engine.
#[derive(Debug, Clone, Copy)]
enum Action {
    Event(usize, i64),
    Tick(i64),
    /// Running values, compared between the engines.
    Running,
    /// Snapshot and restore (exact, or after a crash with the next epoch).
    Restore {
        exact: bool,
    },
}

impl From<Call> for Action {
    fn from(c: Call) -> Action {
        match c {
            Call::Event(i, wall) => Action::Event(i, wall),
            Call::Tick(wall) => Action::Tick(wall),
        }
    }
}

/// The calls for a case: `gen::script`'s events and ticks, with running values now and
/// then and one or two restores.
fn script(case: &Case, seed: u64) -> Vec<Action> {
    gen::script(case, seed, |next, out| match next() % 64 {
        0..=5 => out.push(Action::Running),
        6 => out.push(Action::Restore { exact: true }),
        7 => out.push(Action::Restore { exact: false }),
        _ => {}
    })
}

/// What one engine did: a transcript line per call, and every row.
fn run<E: Eng>(case: &Case, actions: &[Action]) -> Result<(Vec<String>, Vec<Row>), String> {
    let mut e = E::new(case.cfg.clone());
    let mut epoch = 0;
    let mut log = Vec::new();
    let mut rows = Vec::new();
    for a in actions {
        match *a {
            Action::Event(i, wall) => log.push(e.process(&case.events[i], wall, &mut rows)),
            Action::Tick(wall) => e.tick(wall, &mut rows),
            Action::Running => log.push(e.running()),
            Action::Restore { exact } => {
                let snap = e.snapshot();
                e = E::restore(case.cfg.clone(), &snap, exact)?;
                if !exact {
                    epoch += 1;
                    e.set_version_epoch(epoch);
                }
            }
        }
    }
    e.finish(&mut rows);
    log.push(e.stats());
    log.push(e.running());
    Ok((log, rows))
}

/// The first differing line of two texts, with the lines before it.
fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)).unwrap_or(0);
    let context: Vec<&str> = a[i.saturating_sub(12).min(a.len())..i.min(a.len())].to_vec();
    format!(
        "{}\n  engine_v1: {}\n  engine:    {}",
        context.join("\n"),
        a.get(i).unwrap_or(&"(end)"),
        b.get(i).unwrap_or(&"(end)")
    )
}

fn compare(what: &str, old: (Vec<String>, Vec<Row>), new: (Vec<String>, Vec<Row>)) -> Result<(), String> {
    if let Some(i) = (0..old.0.len().max(new.0.len())).find(|&i| old.0.get(i) != new.0.get(i)) {
        let (a, b) = (old.0.get(i).map_or("(none)", |s| s), new.0.get(i).map_or("(none)", |s| s));
        return Err(format!("{what}: call #{i} differs:\n{}", first_difference(a, b)));
    }
    if let Some(i) = (0..old.1.len().max(new.1.len())).find(|&i| old.1.get(i) != new.1.get(i)) {
        let (a, b) = (format!("{:#?}", old.1.get(i)), format!("{:#?}", new.1.get(i)));
        return Err(format!(
            "{what}: row #{i} differs (of {} and {}):\n{}",
            old.1.len(),
            new.1.len(),
            first_difference(&a, &b)
        ));
    }
    Ok(())
}

fn check(case: &Case, seed: u64) -> Result<(), String> {
    let actions = script(case, seed);
    compare("random stream", run::<engine_v1::Engine>(case, &actions)?, run::<Engine>(case, &actions)?)
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn engine_matches_engine_v1_row_for_row(case in case(), live in any::<bool>(), seed in any::<u64>()) {
        let mut case = case;
        if live {
            case.cfg.mode = TimeMode::Live;
        }
        check(&case, seed).map_err(|e| TestCaseError::fail(format!("{e}\n{case:?}")))?;
    }
}

/// The valid events of a stream of messages, in arrival order.
fn decoded(messages: impl Iterator<Item = Vec<u8>>) -> Vec<Event<'static>> {
    messages.filter_map(|m| decode(&m).ok().map(Event::into_owned)).collect()
}

fn simulated(params: SimParams, profile: Profile) -> Vec<Event<'static>> {
    let mut sim = Simulator::with_profile(params, profile);
    decoded(std::iter::from_fn(move || {
        let mut buf = Vec::new();
        sim.next_message(&mut buf).then_some(buf)
    }))
}

fn same_rows(what: &str, cfg: EngineConfig, events: Vec<Event<'static>>) {
    assert!(events.len() > 1000, "{what}: a stream worth comparing");
    let case = Case { cfg, events };
    let mut actions: Vec<Action> = (0..case.events.len()).map(|i| Action::Event(i, 0)).collect();
    // A checkpoint halfway, restored exactly, and running values around it.
    let half = actions.len() / 2;
    actions.splice(half..half, [Action::Running, Action::Restore { exact: true }, Action::Running]);
    let old = run::<engine_v1::Engine>(&case, &actions).unwrap_or_else(|e| panic!("{what}: {e}"));
    let new = run::<Engine>(&case, &actions).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(old.1.len() > 100, "{what}: rows to compare");
    compare(what, old, new).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_shipped_sample_gives_the_same_rows() {
    let sample = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/sample.jsonl")).unwrap();
    let events = decoded(sample.split(|&b| b == b'\n').map(<[u8]>::to_vec));
    same_rows("data/sample.jsonl", EngineConfig::default(), events);
}

#[test]
fn simulated_standard_rooms_give_the_same_rows() {
    let params = SimParams {
        rooms: 40,
        duration_ms: 40 * 60_000,
        seed: 11,
        late_share: 0.01,
        duplicate_share: 0.01,
        ..SimParams::default()
    };
    same_rows("standard rooms", EngineConfig::default(), simulated(params, Profile::Standard));
}

#[test]
fn simulated_dense_rooms_give_the_same_rows() {
    let params = SimParams { rooms: 6, duration_ms: 4 * 60_000, seed: 5, ..SimParams::default() };
    same_rows("dense rooms", EngineConfig::default(), simulated(params, Profile::Dense));
}
