//! Property tests of `decode`: it never panics, whatever it accepts satisfies
//! contract §1.1, and on generated events its reason agrees with an
//! independent model of §1.4 written over the generator's own structure
//! (which knows what each value really is, where the decoder only sees text).

use std::fmt::Write as _;

use livefunnel_core::decode::MAX_EVENT_BYTES;
use livefunnel_core::{decode, Event, EventType, Platform, Reason, Source};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

// ---------------------------------------------------------------------------
// A JSON value as the generator means it.

#[derive(Clone, Debug)]
enum V {
    Null,
    Bool(bool),
    Int(i128),
    /// A number literal the decoder must not take as an integer. `finite` is
    /// false for literals that overflow f64.
    Float {
        text: &'static str,
        finite: bool,
    },
    /// `escape` writes every character as `\uXXXX`, to exercise unescaping.
    Str {
        s: String,
        escape: bool,
    },
    Arr(Vec<V>),
    Obj(Vec<(String, V)>),
}

fn render_str(out: &mut String, s: &str, escape: bool) {
    if !escape {
        out.push_str(&serde_json::to_string(s).unwrap());
        return;
    }
    out.push('"');
    for c in s.chars() {
        let mut buf = [0u16; 2];
        for unit in c.encode_utf16(&mut buf) {
            write!(out, "\\u{unit:04x}").unwrap();
        }
    }
    out.push('"');
}

fn render(out: &mut String, v: &V) {
    match v {
        V::Null => out.push_str("null"),
        V::Bool(b) => write!(out, "{b}").unwrap(),
        V::Int(i) => write!(out, "{i}").unwrap(),
        V::Float { text, .. } => out.push_str(text),
        V::Str { s, escape } => render_str(out, s, *escape),
        V::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(out, item);
            }
            out.push(']');
        }
        V::Obj(members) => render_object(out, members.iter().map(|(k, v)| (k.as_str(), false, v))),
    }
}

fn render_object<'a>(out: &mut String, members: impl Iterator<Item = (&'a str, bool, &'a V)>) {
    out.push('{');
    for (i, (key, escape, value)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        render_str(out, key, escape);
        out.push(':');
        render(out, value);
    }
    out.push('}');
}

fn non_finite_inside(v: &V) -> bool {
    match v {
        V::Float { finite, .. } => !finite,
        V::Arr(items) => items.iter().any(non_finite_inside),
        V::Obj(members) => members.iter().any(|(_, v)| non_finite_inside(v)),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// The model of contract §1.4, reasons 1–5.

const BASE_REQUIRED: [&str; 5] = ["event_id", "type", "ts", "room_id", "session_id"];

const STRING_LIMITS: [(&str, usize); 12] = [
    ("event_id", 128),
    ("room_id", 128),
    ("session_id", 128),
    ("org_id", 64),
    ("account_id", 128),
    ("user_id", 128),
    ("source_raw", 128),
    ("plan_id", 128),
    ("product_id", 128),
    ("order_id", 128),
    ("buyer_city", 64),
    ("home_city", 64),
];

fn own_required(kind: EventType) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (required, field) in [
        (kind.is_viewer_event(), "user_id"),
        (kind.requires_source(), "source"),
        (kind.requires_product_id(), "product_id"),
        (kind.requires_order_id(), "order_id"),
        (kind.requires_amount(), "amount_cents"),
    ] {
        if required {
            out.push(field);
        }
    }
    out
}

/// What the model expects: a reason, or the event's values.
fn model(members: &[Member], rendered_len: usize) -> Result<Event<'static>, Reason> {
    if rendered_len > MAX_EVENT_BYTES {
        return Err(Reason::Oversize);
    }
    let mut seen = std::collections::HashSet::new();
    for m in members {
        if !seen.insert(m.key.as_str()) || non_finite_inside(&m.value) {
            return Err(Reason::MalformedJson);
        }
    }
    let get =
        |key: &str| members.iter().find(|m| m.key == key).map(|m| &m.value).filter(|v| !matches!(v, V::Null));

    if BASE_REQUIRED.iter().any(|k| get(k).is_none()) {
        return Err(Reason::MissingField);
    }
    let kind = match get("type") {
        Some(V::Str { s, .. }) => EventType::parse(s),
        _ => None,
    };
    if let Some(kind) = kind {
        if own_required(kind).iter().any(|k| get(k).is_none()) {
            return Err(Reason::MissingField);
        }
    }
    let Some(kind) = kind else {
        return Err(if matches!(get("type"), Some(V::Str { .. })) {
            Reason::UnknownEventType
        } else {
            Reason::BadField
        });
    };

    let string = |key: &str, limit: usize| -> Result<Option<String>, Reason> {
        match get(key) {
            None => Ok(None),
            Some(V::Str { s, .. }) if !s.is_empty() && s.len() <= limit => Ok(Some(s.clone())),
            Some(_) => Err(Reason::BadField),
        }
    };
    let int = |key: &str| -> Result<Option<i64>, Reason> {
        match get(key) {
            None => Ok(None),
            Some(V::Int(i)) => i64::try_from(*i).map(Some).map_err(|_| Reason::BadField),
            Some(_) => Err(Reason::BadField),
        }
    };
    let mut strings = std::collections::HashMap::new();
    for (key, limit) in STRING_LIMITS {
        strings.insert(key, string(key, limit)?);
    }
    let ts = int("ts")?.ok_or(Reason::MissingField)?;
    let amount_cents = int("amount_cents")?;
    if amount_cents.is_some_and(|a| a < 0) {
        return Err(Reason::BadField);
    }
    let quantity = int("quantity")?;
    if quantity.is_some_and(|q| q < 1) {
        return Err(Reason::BadField);
    }
    let platform = match get("platform") {
        None => None,
        Some(V::Str { s, .. }) => Some(Platform::parse(s).ok_or(Reason::BadField)?),
        Some(_) => return Err(Reason::BadField),
    };
    let source = match get("source") {
        None => None,
        Some(V::Str { s, .. }) => Some(Source::parse(s).ok_or(Reason::BadField)?),
        Some(_) => return Err(Reason::BadField),
    };
    let is_follower = match get("is_follower") {
        None => false,
        Some(V::Bool(b)) => *b,
        Some(_) => return Err(Reason::BadField),
    };
    let mut s = |key: &str| strings.remove(key).flatten();
    let mut ev = Event::minimal(
        &s("event_id").unwrap_or_default(),
        kind,
        ts,
        &s("room_id").unwrap_or_default(),
        &s("session_id").unwrap_or_default(),
    );
    ev.org_id = s("org_id").map(Into::into);
    ev.account_id = s("account_id").map(Into::into);
    ev.user_id = s("user_id").map(Into::into);
    ev.source_raw = s("source_raw").map(Into::into);
    ev.plan_id = s("plan_id").map(Into::into);
    ev.product_id = s("product_id").map(Into::into);
    ev.order_id = s("order_id").map(Into::into);
    ev.buyer_city = s("buyer_city").map(Into::into);
    ev.home_city = s("home_city").map(Into::into);
    ev.platform = platform;
    ev.source = source;
    ev.is_follower = is_follower;
    ev.amount_cents = amount_cents;
    ev.quantity = quantity;
    Ok(ev)
}

// ---------------------------------------------------------------------------
// Invariants any accepted event must satisfy, whatever the input.

fn check_accepted(ev: &Event<'_>) -> Result<(), TestCaseError> {
    let len_ok = |s: &str, limit: usize| !s.is_empty() && s.len() <= limit;
    prop_assert!(len_ok(&ev.event_id, 128));
    prop_assert!(len_ok(&ev.room_id, 128));
    prop_assert!(len_ok(&ev.session_id, 128));
    for (value, limit) in [
        (&ev.org_id, 64),
        (&ev.account_id, 128),
        (&ev.user_id, 128),
        (&ev.source_raw, 128),
        (&ev.plan_id, 128),
        (&ev.product_id, 128),
        (&ev.order_id, 128),
        (&ev.buyer_city, 64),
        (&ev.home_city, 64),
    ] {
        if let Some(s) = value {
            prop_assert!(len_ok(s, limit), "{s:?} over {limit}");
        }
    }
    prop_assert!(ev.amount_cents.is_none_or(|a| a >= 0));
    prop_assert!(ev.quantity.is_none_or(|q| q >= 1));
    prop_assert!(!ev.kind.is_viewer_event() || ev.user_id.is_some());
    prop_assert!(!ev.kind.requires_source() || ev.source.is_some());
    prop_assert!(!ev.kind.requires_product_id() || ev.product_id.is_some());
    prop_assert!(!ev.kind.requires_order_id() || ev.order_id.is_some());
    prop_assert!(!ev.kind.requires_amount() || ev.amount_cents.is_some());
    // Encoding the event back gives the same event.
    let json = encode(ev);
    let again = decode(json.as_bytes());
    prop_assert_eq!(again.as_ref(), Ok(ev), "{}", json);
    Ok(())
}

fn encode(ev: &Event<'_>) -> String {
    let mut map = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        map.insert(k.to_owned(), v);
    };
    put("event_id", ev.event_id.as_ref().into());
    put("type", ev.kind.as_str().into());
    put("ts", ev.ts.into());
    put("room_id", ev.room_id.as_ref().into());
    put("session_id", ev.session_id.as_ref().into());
    for (k, v) in [
        ("org_id", &ev.org_id),
        ("account_id", &ev.account_id),
        ("user_id", &ev.user_id),
        ("source_raw", &ev.source_raw),
        ("plan_id", &ev.plan_id),
        ("product_id", &ev.product_id),
        ("order_id", &ev.order_id),
        ("buyer_city", &ev.buyer_city),
        ("home_city", &ev.home_city),
    ] {
        if let Some(v) = v {
            put(k, v.as_ref().into());
        }
    }
    if let Some(p) = ev.platform {
        put("platform", p.as_str().into());
    }
    if let Some(s) = ev.source {
        put("source", s.as_str().into());
    }
    put("is_follower", ev.is_follower.into());
    if let Some(a) = ev.amount_cents {
        put("amount_cents", a.into());
    }
    if let Some(q) = ev.quantity {
        put("quantity", q.into());
    }
    serde_json::Value::Object(map).to_string()
}

// ---------------------------------------------------------------------------
// Generators.

#[derive(Clone, Debug)]
struct Member {
    key: String,
    /// Writes the key as `\uXXXX` escapes: the decoder must still know it.
    escape_key: bool,
    value: V,
}

fn text(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[a-z0-9_]{1,12}",
        1 => Just(String::new()),
        1 => "[a-zé中😀\"\\\\\n\t ]{1,20}",
        // Around the byte limits, in one- and three-byte characters.
        1 => (max - 2..=max + 1).prop_map(|n| "x".repeat(n)),
        1 => (max / 3 - 1..=max / 3 + 1).prop_map(|n| "中".repeat(n)),
    ]
    .boxed()
}

fn string_value(max: usize) -> BoxedStrategy<V> {
    (text(max), prop::bool::weighted(0.2)).prop_map(|(s, escape)| V::Str { s, escape }).boxed()
}

fn int_value() -> BoxedStrategy<V> {
    prop_oneof![
        3 => (0i128..2_000_000_000_000).prop_map(V::Int),
        // The bounds of `amount_cents` (>= 0) and `quantity` (>= 1).
        3 => (-2i128..3).prop_map(V::Int),
        1 => any::<i64>().prop_map(|i| V::Int(i.into())),
        1 => prop_oneof![
            Just(i64::MAX as i128),
            Just(i64::MIN as i128),
            Just(i64::MAX as i128 + 1),
            Just(i64::MIN as i128 - 1),
            Just(u64::MAX as i128),
            Just(u64::MAX as i128 + 1),
            Just(-(u64::MAX as i128) - 7),
        ]
        .prop_map(V::Int),
    ]
    .boxed()
}

fn float_value() -> BoxedStrategy<V> {
    prop::sample::select(vec![
        ("1.0", true),
        ("1e3", true),
        ("1E2", true),
        ("-0", true),
        ("0.5", true),
        ("-2.5e-3", true),
        ("1e-400", true),
        ("1.7976931348623157e308", true),
        ("1e400", false),
        ("-1e400", false),
        ("2e308", false),
    ])
    .prop_map(|(text, finite)| V::Float { text, finite })
    .boxed()
}

fn any_value() -> BoxedStrategy<V> {
    let leaf = prop_oneof![
        Just(V::Null),
        any::<bool>().prop_map(V::Bool),
        int_value(),
        float_value(),
        string_value(128),
        prop::sample::select(EventType::ALL.map(|t| t.as_str()).to_vec())
            .prop_map(|s| V::Str { s: s.to_owned(), escape: false }),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(V::Arr),
            prop::collection::vec(("[a-c]{1,2}", inner), 0..4).prop_map(V::Obj),
        ]
    })
    .boxed()
}

fn enum_value(names: Vec<&'static str>) -> BoxedStrategy<V> {
    prop_oneof![
        8 => prop::sample::select(names).prop_map(|s| V::Str { s: s.to_owned(), escape: false }),
        1 => prop::sample::select(vec!["", "tiktok", "Other", "MOMENTS", "nope"])
            .prop_map(|s| V::Str { s: s.to_owned(), escape: false }),
    ]
    .boxed()
}

/// A plausible value for a known field: usually valid, sometimes not.
fn value_for(key: &'static str) -> BoxedStrategy<V> {
    match key {
        "type" => enum_value(EventType::ALL.map(|t| t.as_str()).to_vec()),
        "ts" | "amount_cents" | "quantity" => int_value(),
        "platform" => enum_value(Platform::ALL.map(|p| p.as_str()).to_vec()),
        "source" => enum_value(Source::ALL.map(|s| s.as_str()).to_vec()),
        "is_follower" => any::<bool>().prop_map(V::Bool).boxed(),
        _ => {
            let limit = STRING_LIMITS.iter().find(|(k, _)| *k == key).map_or(128, |(_, l)| *l);
            string_value(limit)
        }
    }
}

const OPTIONAL: [&str; 14] = [
    "org_id",
    "account_id",
    "platform",
    "user_id",
    "source",
    "source_raw",
    "plan_id",
    "is_follower",
    "product_id",
    "order_id",
    "amount_cents",
    "quantity",
    "buyer_city",
    "home_city",
];

/// A valid event of a random type, then mutated.
fn event_members() -> impl Strategy<Value = Vec<Member>> {
    let valid = prop::sample::select(EventType::ALL.to_vec()).prop_flat_map(|kind| {
        let mut keys: Vec<&'static str> = BASE_REQUIRED.to_vec();
        keys.extend(own_required(kind));
        let optional = prop::sample::subsequence(OPTIONAL.to_vec(), 0..=OPTIONAL.len());
        (Just(kind), Just(keys), optional)
    });
    valid
        .prop_flat_map(|(kind, mut keys, optional)| {
            for k in optional {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            let values: Vec<BoxedStrategy<(&'static str, V)>> = keys
                .iter()
                .map(|&k| {
                    let good = match k {
                        "type" => Just(V::Str { s: kind.as_str().to_owned(), escape: false }).boxed(),
                        "ts" => (0i128..2_000_000_000_000).prop_map(V::Int).boxed(),
                        // Mostly valid, often right at the bound, sometimes past it.
                        "amount_cents" => {
                            prop_oneof![4 => 0i128..1_000_000, 1 => -1i128..1].prop_map(V::Int).boxed()
                        }
                        "quantity" => prop_oneof![4 => 1i128..10, 1 => 0i128..2].prop_map(V::Int).boxed(),
                        "platform" => enum_value(Platform::ALL.map(|p| p.as_str()).to_vec()),
                        "source" => enum_value(Source::ALL.map(|s| s.as_str()).to_vec()),
                        _ => value_for(k),
                    };
                    good.prop_map(move |v| (k, v)).boxed()
                })
                .collect();
            values
        })
        .prop_flat_map(|pairs| (Just(pairs), prop::collection::vec(mutation(), 0..4)))
        .prop_map(|(pairs, mutations)| {
            let mut members: Vec<Member> = pairs
                .into_iter()
                .map(|(k, v)| Member { key: k.to_owned(), escape_key: false, value: v })
                .collect();
            for m in mutations {
                m.apply(&mut members);
            }
            members
        })
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(prop::sample::Index),
    Null(prop::sample::Index),
    Replace(prop::sample::Index, V),
    ReplaceKnown(&'static str, V),
    AddUnknown(String, V),
    Duplicate(prop::sample::Index),
    EscapeKey(prop::sample::Index),
    Shuffle(prop::sample::Index, prop::sample::Index),
}

impl Mutation {
    fn apply(self, members: &mut Vec<Member>) {
        if members.is_empty() {
            return;
        }
        let n = members.len();
        match self {
            Mutation::Delete(i) => {
                members.remove(i.index(n));
            }
            Mutation::Null(i) => members[i.index(n)].value = V::Null,
            Mutation::Replace(i, v) => members[i.index(n)].value = v,
            Mutation::ReplaceKnown(key, v) => match members.iter_mut().find(|m| m.key == key) {
                Some(m) => m.value = v,
                None => members.push(Member { key: key.to_owned(), escape_key: false, value: v }),
            },
            Mutation::AddUnknown(key, v) => {
                members.push(Member { key, escape_key: false, value: v });
            }
            Mutation::Duplicate(i) => {
                let copy = members[i.index(n)].clone();
                members.push(copy);
            }
            Mutation::EscapeKey(i) => members[i.index(n)].escape_key = true,
            Mutation::Shuffle(a, b) => members.swap(a.index(n), b.index(n)),
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let known =
        prop::sample::select(BASE_REQUIRED.iter().chain(OPTIONAL.iter()).copied().collect::<Vec<_>>())
            .prop_flat_map(|k| (Just(k), prop_oneof![3 => value_for(k), 1 => any_value()]));
    prop_oneof![
        3 => any::<prop::sample::Index>().prop_map(Mutation::Delete),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Null),
        2 => (any::<prop::sample::Index>(), any_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        6 => known.prop_map(|(k, v)| Mutation::ReplaceKnown(k, v)),
        2 => ("x[a-z]{0,3}", any_value()).prop_map(|(k, v)| Mutation::AddUnknown(k, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
        1 => any::<prop::sample::Index>().prop_map(Mutation::EscapeKey),
        2 => (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Mutation::Shuffle(a, b)),
    ]
}

fn render_members(members: &[Member]) -> String {
    let mut out = String::new();
    render_object(&mut out, members.iter().map(|m| (m.key.as_str(), m.escape_key, &m.value)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(ev) = decode(&bytes) {
            check_accepted(&ev)?;
        }
    }

    #[test]
    fn corrupted_events_never_panic(
        members in event_members(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = render_members(&members).into_bytes();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => bytes.truncate(i),
            }
        }
        if let Ok(ev) = decode(&bytes) {
            check_accepted(&ev)?;
        }
    }

    #[test]
    fn mutated_events_match_the_model(members in event_members()) {
        let json = render_members(&members);
        let expected = model(&members, json.len());
        let got = decode(json.as_bytes());
        match (&got, &expected) {
            (Ok(ev), Ok(want)) => {
                prop_assert_eq!(ev, want, "{}", json);
                check_accepted(ev)?;
            }
            (Err(r), Err(want)) => prop_assert_eq!(r.reason, *want, "{} ({})", json, r.detail),
            _ => prop_assert!(false, "{json}: decoder {got:?}, model {expected:?}"),
        }
    }
}

#[test]
fn the_generator_reaches_every_reason() {
    // Guards against a generator that silently stopped producing some class
    // of input, which would make the model comparison vacuous.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    let mut accepted = 0;
    for _ in 0..3000 {
        let members = event_members().new_tree(&mut runner).unwrap().current();
        let json = render_members(&members);
        match decode(json.as_bytes()) {
            Ok(_) => accepted += 1,
            Err(r) => {
                seen.insert(r.reason);
            }
        }
    }
    assert!(accepted > 300, "only {accepted} accepted");
    for reason in [Reason::MalformedJson, Reason::MissingField, Reason::UnknownEventType, Reason::BadField] {
        assert!(seen.contains(&reason), "{reason:?} never produced");
    }
}
