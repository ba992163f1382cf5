//! `/metrics`' text for 10,000 rooms: the room series (counters, online, live, and
//! three windows' gauges, 23 series per room) and a registry with the pipeline's own
//! series. `cargo bench -p livefunnel-metrics --bench render`.

use std::borrow::Cow;

use criterion::{criterion_group, criterion_main, Criterion};
use livefunnel_core::{Counts, Event, EventType};
use livefunnel_metrics::{render_all, PipelineMetrics, RoomKey, RoomMetrics, RoomTracker};
use prometheus::Registry;

const ROOMS: usize = 10_000;

fn rooms() -> (Registry, RoomMetrics) {
    let reg = Registry::new();
    let windows = vec!["1m".to_owned(), "5m/10s".to_owned(), "10m/1m".to_owned()];
    let m = RoomMetrics::new(&reg, windows.clone()).unwrap();
    let _pipeline = PipelineMetrics::new(&reg).unwrap();
    let mut t = RoomTracker::default();
    let mut engine = livefunnel_core::Engine::new(livefunnel_core::EngineConfig::default());
    let mut touched = Vec::new();
    for r in 0..ROOMS {
        let room = format!("room-{r:06}");
        for (kind, amount) in [
            (EventType::Enter, None),
            (EventType::ProductClick, None),
            (EventType::OrderPaid, Some(19_900 + r as i64)),
            (EventType::Comment, None),
        ] {
            let id = format!("{room}-{kind:?}");
            let mut e = Event::minimal(&id, kind, 1_000, &room, "s1");
            e.user_id = Some(Cow::Borrowed("u"));
            e.amount_cents = amount;
            engine.process(&e, 0, &mut Vec::new());
        }
        engine.touched(&mut touched);
        for tr in touched.drain(..) {
            t.on_touched(&m, &tr, 0);
        }
        let counts = Counts {
            room_impressions: 400 + r as u64,
            watch_pv: 120 + r as u64 % 17,
            watch_uv: 90 + r as u64 % 13,
            gmv_cents: 19_900 * (1 + r as i64 % 5),
            orders_paid: 1 + r as u64 % 5,
            ..Counts::default()
        };
        let key = RoomKey { org_id: "default".into(), room_id: room, platform: "other".into() };
        let w: Vec<(&str, &Counts)> = windows.iter().map(|n| (n.as_str(), &counts)).collect();
        t.observe(&m, &key, 50 + r as u64 % 100, true, &w, 0);
    }
    (reg, m)
}

/// The same series as registered prometheus vectors, the way they were kept before
/// the text families: `gather()` and the crate's encoder, for the ratio.
fn as_registered(text: &str) -> Registry {
    use prometheus::{GaugeVec, Opts};
    let reg = Registry::new();
    let mut families: std::collections::BTreeMap<String, GaugeVec> = Default::default();
    for line in text.lines().filter(|l| l.starts_with("livefunnel_room_") && l.contains('{')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap();
        let pairs: Vec<(&str, &str)> = labels
            .trim_end_matches('}')
            .split(',')
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k, v.trim_matches('"'))
            })
            .collect();
        let f = families.entry(name.to_owned()).or_insert_with(|| {
            let names: Vec<&str> = pairs.iter().map(|p| p.0).collect();
            let g = GaugeVec::new(Opts::new(name, "help"), &names).unwrap();
            reg.register(Box::new(g.clone())).unwrap();
            g
        });
        let values: Vec<&str> = pairs.iter().map(|p| p.1).collect();
        f.with_label_values(&values).set(value.parse().unwrap());
    }
    reg
}

fn bench(c: &mut Criterion) {
    let (reg, m) = rooms();
    let text = render_all(&reg, &m);
    let registered = as_registered(&text);
    let mut g = c.benchmark_group("metrics");
    g.sample_size(10);
    g.bench_function(format!("render_all_{ROOMS}_rooms_{}_MiB", text.len() >> 20), |b| {
        b.iter(|| render_all(&reg, &m))
    });
    g.bench_function(format!("registered_{ROOMS}_rooms"), |b| {
        b.iter(|| livefunnel_metrics::render(&registered))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
