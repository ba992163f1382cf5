//! The engine never panics on input: valid events with any field values the decoder
//! lets through, timestamps anywhere in the i64 range, any order. In debug builds the
//! engine's own invariants (`debug_assert!`) are checked along the way.

use std::borrow::Cow;

use livefunnel_core::{Engine, EngineConfig, Event, EventType, Outcome, Platform, Row, Source, WindowSpec};
use proptest::prelude::*;

fn ts_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => (0i64..3_600_000).prop_map(|d| 1_767_225_600_000 + d),
        1 => any::<i64>(),
        1 => prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1i64), Just(0i64), Just(i64::MAX - 1)],
    ]
}

fn event_strategy() -> impl Strategy<Value = Event<'static>> {
    (
        0usize..EventType::ALL.len(),
        ts_strategy(),
        0u8..3,
        0u8..3,
        0u8..4,
        0usize..Source::ALL.len(),
        any::<bool>(),
        prop_oneof![Just(0i64), Just(1), Just(19_900), Just(i64::MAX)],
        prop_oneof![Just(1i64), Just(3), Just(i64::MAX)],
        0u8..4,
    )
        .prop_map(|(kind, ts, room, session, user, source, follower, amount, quantity, n)| {
            let kind = EventType::ALL[kind];
            let mut e =
                Event::minimal(&format!("e{n}-{ts}"), kind, ts, &format!("r{room}"), &format!("s{session}"));
            if kind.is_viewer_event() {
                e.user_id = Some(Cow::Owned(format!("u{user}")));
            }
            if kind.requires_source() || n == 0 {
                e.source = Some(Source::ALL[source]);
            }
            if kind.requires_product_id() {
                e.product_id = Some(Cow::Owned(format!("p{n}")));
            }
            if kind.requires_order_id() {
                e.order_id = Some(Cow::Owned(format!("o{n}")));
            }
            if kind.requires_amount() {
                e.amount_cents = Some(amount);
            }
            e.quantity = Some(quantity);
            e.is_follower = follower;
            e.plan_id = (n == 1).then_some(Cow::Borrowed("plan"));
            e.platform = Some(Platform::ALL[usize::from(n) % Platform::ALL.len()]);
            e.buyer_city = (n == 2).then_some(Cow::Borrowed("sh"));
            e.home_city = (n == 3).then_some(Cow::Borrowed("hz"));
            e
        })
}

fn configs() -> impl Strategy<Value = EngineConfig> {
    prop_oneof![
        Just(EngineConfig::default()),
        Just(EngineConfig {
            windows: ["1m", "90s/30s", "session"].iter().map(|w| WindowSpec::parse(w).unwrap()).collect(),
            allowed_lateness_ms: 30_000,
            presence_timeout_ms: 60_000,
            session_idle_timeout_ms: 155_000,
            ..EngineConfig::default()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_stream_is_processed_without_panic(
        cfg in configs(),
        events in prop::collection::vec(event_strategy(), 1..80),
    ) {
        let mut engine = Engine::new(cfg.clone());
        let mut rows = Vec::new();
        let mut accepted = 0u64;
        let mut running = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if let Outcome::Accepted { .. } = engine.process(e, 0, &mut rows) {
                accepted += 1;
            }
            if i % 8 == 0 {
                engine.running(&mut running);
            }
        }
        engine.running(&mut running);
        // Whatever the state, it survives a snapshot and a restore.
        let mut engine = Engine::restore(cfg, &engine.snapshot()).expect("a snapshot restores");
        engine.running(&mut running);
        engine.finish(&mut rows);
        prop_assert_eq!(engine.stats().accepted, accepted);
        let mut json = Vec::new();
        for row in &rows {
            prop_assert!(row.version() >= 1);
            json.clear();
            row.write_jsonl(&mut json);
            let value: serde_json::Value = serde_json::from_slice(&json).expect("every row is valid json");
            prop_assert!(value.is_object());
            if let Row::Window(w) = row {
                prop_assert!(w.window_start <= w.window_end);
            }
        }
    }
}
