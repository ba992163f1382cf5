//! Decoder tests: every field, every reason of contract §1.4, in check order.

use super::*;

fn reject(input: &str) -> Rejection {
    match decode(input.as_bytes()) {
        Ok(ev) => panic!("expected a rejection for {input}, got {ev:?}"),
        Err(r) => r,
    }
}

fn reason(input: &str) -> Reason {
    reject(input).reason
}

fn ok(input: &str) -> Event<'_> {
    match decode(input.as_bytes()) {
        Ok(ev) => ev,
        Err(r) => panic!("expected {input} to decode, got {r}"),
    }
}

const BASE: &str = r#""event_id":"e1","ts":1700000000000,"room_id":"r1","session_id":"s1""#;

/// A valid `like` with extra members spliced in.
fn like(extra: &str) -> String {
    format!(r#"{{{BASE},"type":"like","user_id":"u1"{extra}}}"#)
}

/// The minimal valid JSON of every type and the event expected from it.
fn minimal_of(kind: EventType) -> (String, Event<'static>) {
    let mut json = format!(r#"{{{BASE},"type":"{}""#, kind.as_str());
    let mut ev = Event::minimal("e1", kind, 1_700_000_000_000, "r1", "s1");
    if kind.is_viewer_event() {
        json.push_str(r#","user_id":"u1""#);
        ev.user_id = Some("u1".into());
    }
    if kind.requires_source() {
        json.push_str(r#","source":"moments""#);
        ev.source = Some(Source::Moments);
    }
    if kind.requires_product_id() {
        json.push_str(r#","product_id":"p1""#);
        ev.product_id = Some("p1".into());
    }
    if kind.requires_order_id() {
        json.push_str(r#","order_id":"o1""#);
        ev.order_id = Some("o1".into());
    }
    if kind.requires_amount() {
        json.push_str(r#","amount_cents":1990"#);
        ev.amount_cents = Some(1990);
    }
    json.push('}');
    (json, ev)
}

#[test]
fn every_type_round_trips() {
    for kind in EventType::ALL {
        let (json, expected) = minimal_of(kind);
        assert_eq!(ok(&json), expected, "{json}");
    }
}

#[test]
fn every_type_round_trips_with_every_optional_field() {
    for kind in EventType::ALL {
        let (json, mut expected) = minimal_of(kind);
        let mut all = json.trim_end_matches('}').to_owned();
        all.push_str(
            r#","org_id":"o","account_id":"a","platform":"douyin","source_raw":"raw","plan_id":"pl","is_follower":true,"buyer_city":"杭州","home_city":"上海","quantity":3"#,
        );
        expected.org_id = Some("o".into());
        expected.account_id = Some("a".into());
        expected.platform = Some(Platform::Douyin);
        expected.source_raw = Some("raw".into());
        expected.plan_id = Some("pl".into());
        expected.is_follower = true;
        expected.buyer_city = Some("杭州".into());
        expected.home_city = Some("上海".into());
        expected.quantity = Some(3);
        for (cond, key, val) in [
            (!kind.is_viewer_event(), "user_id", "u9"),
            (!kind.requires_product_id(), "product_id", "p9"),
            (!kind.requires_order_id(), "order_id", "o9"),
        ] {
            if cond {
                all.push_str(&format!(r#","{key}":"{val}""#));
            }
        }
        if !kind.is_viewer_event() {
            expected.user_id = Some("u9".into());
        }
        if !kind.requires_product_id() {
            expected.product_id = Some("p9".into());
        }
        if !kind.requires_order_id() {
            expected.order_id = Some("o9".into());
        }
        if !kind.requires_source() {
            all.push_str(r#","source":"paid_ads""#);
            expected.source = Some(Source::PaidAds);
        }
        if !kind.requires_amount() {
            all.push_str(r#","amount_cents":0"#);
            expected.amount_cents = Some(0);
        }
        all.push('}');
        assert_eq!(ok(&all), expected, "{all}");
    }
}

#[test]
fn every_platform_and_source_parses() {
    for p in Platform::ALL {
        assert_eq!(ok(&like(&format!(r#","platform":"{}""#, p.as_str()))).platform, Some(p));
    }
    for s in Source::ALL {
        assert_eq!(ok(&like(&format!(r#","source":"{}""#, s.as_str()))).source, Some(s));
    }
}

#[test]
fn defaults_are_not_applied() {
    let input = like("");
    let ev = ok(&input);
    assert_eq!(ev.org_id, None);
    assert_eq!(ev.platform, None);
    assert_eq!(ev.quantity, None);
    assert_eq!(ev.amount_cents, None);
    assert!(!ev.is_follower);
    assert_eq!(ev.org_id(), "default");
}

#[test]
fn strings_without_escapes_borrow() {
    let input = like(r#","org_id":"acme""#);
    let ev = ok(&input);
    assert!(matches!(ev.room_id, Cow::Borrowed(_)));
    assert!(matches!(ev.event_id, Cow::Borrowed(_)));
    assert!(matches!(ev.org_id, Some(Cow::Borrowed(_))));
}

#[test]
fn escapes_are_decoded() {
    let input = r#"{"event_id":"e\"1","type":"l\u0069ke","ts":1,"room_id":"\u623f\u95f4","session_id":"a\\b\nc","user_id":"\ud83d\ude00"}"#;
    let ev = ok(input);
    assert_eq!(ev.event_id, "e\"1");
    assert_eq!(ev.kind, EventType::Like);
    assert_eq!(ev.room_id, "房间");
    assert!(matches!(ev.room_id, Cow::Owned(_)));
    assert_eq!(ev.session_id, "a\\b\nc");
    assert_eq!(ev.user_id.as_deref(), Some("😀"));
}

#[test]
fn escaped_keys_are_matched_by_their_text() {
    let ev = ok(r#"{"event_id":"e","type":"like","t\u0073":5,"room_id":"r","session_id":"s","user_id":"u"}"#);
    assert_eq!(ev.ts, 5);
    let r = reject(&like(r#","t\u0073":5"#));
    assert_eq!(r.reason, Reason::MalformedJson);
    assert!(r.detail.starts_with("duplicate key `ts`"), "{}", r.detail);
}

#[test]
fn field_order_is_free() {
    let a = ok(r#"{"user_id":"u","session_id":"s","room_id":"r","ts":7,"type":"like","event_id":"e"}"#);
    let b = ok(r#"{"event_id":"e","type":"like","ts":7,"room_id":"r","session_id":"s","user_id":"u"}"#);
    assert_eq!(a, b);
}

#[test]
fn unknown_fields_are_ignored() {
    let input = like(
        r#","extra":1,"nested":{"a":[1,2.5,{"b":null}],"ts":"x","a":1},"list":[true,false,"x"],"z":-3e10,"empty":{},"s":"\u0041""#,
    );
    assert_eq!(ok(&input), ok(&like("")));
}

#[test]
fn null_optional_fields_are_absent() {
    let input = like(
        r#","org_id":null,"account_id":null,"platform":null,"source":null,"source_raw":null,"plan_id":null,"is_follower":null,"product_id":null,"order_id":null,"amount_cents":null,"quantity":null,"buyer_city":null,"home_city":null"#,
    );
    assert_eq!(ok(&input), ok(&like("")));
}

#[test]
fn surrounding_whitespace_is_fine() {
    let input = format!(" \t{}\t ", like(""));
    assert_eq!(ok(&input).kind, EventType::Like);
}

// --- reason 1: oversize

#[test]
fn oversize() {
    let big = vec![b'x'; MAX_EVENT_BYTES + 1];
    let r = decode(&big).unwrap_err();
    assert_eq!(r.reason, Reason::Oversize);
    assert_eq!(r.detail, "message is 65537 bytes, the limit is 65536");
    // Oversize wins over everything, even a valid event.
    let mut valid = like("").into_bytes();
    valid.resize(MAX_EVENT_BYTES + 1, b' ');
    assert_eq!(decode(&valid).unwrap_err().reason, Reason::Oversize);
    // Oversize wins over invalid utf-8.
    assert_eq!(decode(&vec![0xff; 70_000]).unwrap_err().reason, Reason::Oversize);
}

#[test]
fn exactly_the_limit_is_accepted() {
    let mut valid = like(r#","pad":""#).into_bytes();
    valid.pop(); // the closing brace
    let pad = MAX_EVENT_BYTES - valid.len() - 2;
    valid.extend(std::iter::repeat_n(b'a', pad));
    valid.extend_from_slice(b"\"}");
    assert_eq!(valid.len(), MAX_EVENT_BYTES);
    assert!(decode(&valid).is_ok());
    assert_eq!(decode(&vec![b'x'; MAX_EVENT_BYTES]).unwrap_err().reason, Reason::MalformedJson);
}

// --- reason 2: malformed_json

#[test]
fn malformed_json() {
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   ".to_vec(),
        b"{".to_vec(),
        b"}".to_vec(),
        b"nope".to_vec(),
        b"{\"event_id\":}".to_vec(),
        b"{\"event_id\" \"e\"}".to_vec(),
        b"{'event_id':'e'}".to_vec(),
        b"{\"a\":1,}".to_vec(),
        b"{\"a\":01}".to_vec(),
        b"{\"a\":NaN}".to_vec(),
        b"{\"a\":Infinity}".to_vec(),
        b"{\"a\":\"\x01\"}".to_vec(),
        b"{\"a\":\"\\ud800\"}".to_vec(),
        b"{\"a\":\"\\x\"}".to_vec(),
        // not an object at the top level
        b"[]".to_vec(),
        b"[{}]".to_vec(),
        b"\"event\"".to_vec(),
        b"5".to_vec(),
        b"null".to_vec(),
        b"true".to_vec(),
        // trailing garbage
        format!("{} x", like("")).into_bytes(),
        format!("{}{{}}", like("")).into_bytes(),
        format!("{},", like("")).into_bytes(),
        // invalid utf-8, inside and outside strings
        b"{\"event_id\":\"\xff\"}".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(),
        {
            let mut v = like("").into_bytes();
            v.insert(20, 0xc3);
            v
        },
    ];
    for case in cases {
        let r = decode(&case).unwrap_err();
        assert_eq!(r.reason, Reason::MalformedJson, "{}", String::from_utf8_lossy(&case));
    }
}

#[test]
fn malformed_wins_over_later_reasons() {
    // Missing fields, unknown type and bad fields, all behind a syntax error.
    assert_eq!(reason(r#"{"type":"nope","ts":"x","#), Reason::MalformedJson);
    assert_eq!(reason(r#"{"type":"nope","ts":1e400}"#), Reason::MalformedJson);
    assert_eq!(reason(r#"{"ts":1,"ts":1}"#), Reason::MalformedJson);
}

#[test]
fn duplicate_keys() {
    let r = reject(&like(r#","ts":1700000000000"#));
    assert_eq!(r.reason, Reason::MalformedJson);
    assert!(r.detail.starts_with("duplicate key `ts` at line 1 column "), "{}", r.detail);
    // Even when both copies are null, or one is.
    assert_eq!(reason(&like(r#","org_id":null,"org_id":null"#)), Reason::MalformedJson);
    assert_eq!(reason(&like(r#","org_id":"a","org_id":null"#)), Reason::MalformedJson);
    // Unknown keys too.
    let r = reject(&like(r#","x":1,"y":2,"x":{}"#));
    assert_eq!(r.reason, Reason::MalformedJson);
    assert!(r.detail.starts_with("duplicate key `x`"), "{}", r.detail);
    // Past the small-set threshold as well.
    let many: String = (0..40).map(|i| format!(r#","k{i}":{i}"#)).collect();
    assert!(decode(like(&many).as_bytes()).is_ok());
    let r = reject(&like(&format!(r#"{many},"k3":0"#)));
    assert!(r.detail.starts_with("duplicate key `k3`"), "{}", r.detail);
    let r = reject(&like(&format!(r#"{many},"k39":0"#)));
    assert!(r.detail.starts_with("duplicate key `k39`"), "{}", r.detail);
    // Nested duplicates inside unknown fields are allowed.
    assert!(decode(like(r#","x":{"a":1,"a":2}"#).as_bytes()).is_ok());
}

#[test]
fn non_finite_numbers() {
    for extra in [
        r#","x":1e400"#,
        r#","x":-1e400"#,
        r#","x":[1,{"y":[1e999]}]"#,
        r#","x":{"y":2e308}"#,
        r#","amount_cents":1e400"#,
        r#","ts2":1.8e308"#,
    ] {
        let r = reject(&like(extra));
        assert_eq!(r.reason, Reason::MalformedJson, "{extra}");
        assert!(r.detail.starts_with("invalid json at line 1 column "), "{}", r.detail);
    }
    // Finite extremes are fine in unknown fields.
    assert!(decode(like(r#","x":1.7976931348623157e308,"y":5e-324,"z":1e-400"#).as_bytes()).is_ok());
    // A missing ts does not matter: malformed comes first.
    assert_eq!(reason(r#"{"type":"like","x":1e400}"#), Reason::MalformedJson);
}

#[test]
fn deep_nesting_is_rejected_without_overflow() {
    let deep = format!(r#","x":{}{}"#, "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(reason(&like(&deep)), Reason::MalformedJson);
    let ok_depth = format!(r#","x":{}{}"#, "[".repeat(100), "]".repeat(100));
    assert!(decode(like(&ok_depth).as_bytes()).is_ok());
}

#[test]
fn malformed_detail_names_the_position() {
    let r = reject(r#"{"event_id":"e","ts":}"#);
    assert_eq!(r.detail, "invalid json at line 1 column 22: expected value");
    let r = reject("5");
    assert!(r.detail.contains("expected a json object"), "{}", r.detail);
    let r = decode(b"{\"a\":\"\xff\"}").unwrap_err();
    assert_eq!(r.detail, "invalid utf-8 at byte 6");
}

// --- reason 3: missing_field

#[test]
fn missing_base_fields_in_order() {
    let all = [
        ("event_id", r#""e""#),
        ("type", r#""like""#),
        ("ts", "1"),
        ("room_id", r#""r""#),
        ("session_id", r#""s""#),
    ];
    for (i, (name, _)) in all.iter().enumerate() {
        // Drop this field and every later one: the detail names this one.
        let mut members: Vec<String> = all[..i].iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
        members.push(r#""user_id":"u""#.into());
        let r = reject(&format!("{{{}}}", members.join(",")));
        assert_eq!(r.reason, Reason::MissingField);
        assert_eq!(r.detail, format!("field `{name}` is missing"));
        // Null counts as missing.
        let mut members: Vec<String> = all.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
        members[i] = format!(r#""{name}":null"#);
        members.push(r#""user_id":"u""#.into());
        let r = reject(&format!("{{{}}}", members.join(",")));
        assert_eq!(r.reason, Reason::MissingField);
        assert_eq!(r.detail, format!("field `{name}` is null"));
    }
    assert_eq!(reject("{}").detail, "field `event_id` is missing");
}

#[test]
fn missing_own_fields_per_type() {
    for kind in EventType::ALL {
        let (json, _) = minimal_of(kind);
        for (required, field) in [
            (kind.is_viewer_event(), "user_id"),
            (kind.requires_source(), "source"),
            (kind.requires_product_id(), "product_id"),
            (kind.requires_order_id(), "order_id"),
            (kind.requires_amount(), "amount_cents"),
        ] {
            if !required {
                continue;
            }
            let start = json.find(&format!(r#","{field}":"#)).unwrap();
            let end = json[start + 1..].find([',', '}']).unwrap() + start + 1;
            let without = format!("{}{}", &json[..start], &json[end..]);
            let r = reject(&without);
            assert_eq!(r.reason, Reason::MissingField, "{without}");
            assert_eq!(r.detail, format!("field `{field}` is missing, required on `{}`", kind.as_str()));
            let nulled = format!("{},\"{field}\":null{}", &json[..start], &json[end..]);
            assert_eq!(reason(&nulled), Reason::MissingField, "{nulled}");
        }
    }
}

#[test]
fn own_fields_are_not_required_elsewhere() {
    for kind in [EventType::SessionStart, EventType::SessionEnd, EventType::ProductPin, EventType::LuckyBag] {
        assert!(ok(&minimal_of(kind).0).user_id.is_none());
    }
    assert!(ok(&like("")).source.is_none());
}

#[test]
fn missing_wins_over_later_reasons() {
    // Missing room_id and a bad ts.
    let r = reject(r#"{"event_id":"e","type":"like","ts":"x","session_id":"s","user_id":"u"}"#);
    assert_eq!((r.reason, r.detail.as_str()), (Reason::MissingField, "field `room_id` is missing"));
    // Missing session_id and an unknown type.
    assert_eq!(reason(r#"{"event_id":"e","type":"nope","ts":1,"room_id":"r"}"#), Reason::MissingField);
    // A missing own field and a bad optional one.
    let input = format!(
        r#"{{{BASE},"type":"order_paid","user_id":"u","product_id":"p","order_id":"o","quantity":0}}"#
    );
    let r = reject(&input);
    assert_eq!(r.reason, Reason::MissingField);
    assert!(r.detail.starts_with("field `amount_cents` is missing"));
    // A bad base field and a missing own field: missing wins.
    assert_eq!(
        reason(&format!(r#"{{{BASE},"type":"enter","user_id":"","platform":"x"}}"#)),
        Reason::MissingField
    );
}

// --- reason 4: unknown_event_type

#[test]
fn unknown_event_type() {
    for t in ["ENTER", "Enter", "", "nope", "enter ", " enter", "order-paid", "房间"] {
        let r = reject(&format!(r#"{{{BASE},"type":"{t}","user_id":"u"}}"#));
        assert_eq!(r.reason, Reason::UnknownEventType, "{t}");
        assert_eq!(r.detail, format!("unknown event type `{t}`"));
    }
}

#[test]
fn unknown_type_wins_over_bad_fields_and_skips_own_fields() {
    let r = reject(&format!(r#"{{{BASE},"type":"nope","amount_cents":-5,"platform":"x","user_id":""}}"#));
    assert_eq!(r.reason, Reason::UnknownEventType);
    // No user_id needed: the own fields of an unknown type are unknown.
    assert_eq!(reason(&format!(r#"{{{BASE},"type":"nope"}}"#)), Reason::UnknownEventType);
}

#[test]
fn unknown_type_detail_is_escaped_and_cut() {
    let long = "x".repeat(1000);
    let r = reject(&format!(r#"{{{BASE},"type":"{long}"}}"#));
    assert_eq!(r.detail, format!("unknown event type `{}…`", "x".repeat(64)));
    let r = reject(&format!(r#"{{{BASE},"type":"a\nb"}}"#));
    assert_eq!(r.detail, "unknown event type `a\\nb`");
    // Cutting never splits a character.
    let r = reject(&format!(r#"{{{BASE},"type":"{}"}}"#, "中".repeat(30)));
    assert_eq!(r.detail, format!("unknown event type `{}…`", "中".repeat(21)));
}

// --- reason 5: bad_field

fn bad_detail(extra: &str) -> String {
    let r = reject(&like(extra));
    assert_eq!(r.reason, Reason::BadField, "{extra}: {}", r.detail);
    r.detail
}

#[test]
fn type_of_wrong_json_type() {
    for t in ["5", "true", "[]", "{}", r#"["like"]"#, "1.5"] {
        let r = reject(&format!(r#"{{{BASE},"type":{t},"user_id":"u"}}"#));
        assert_eq!(r.reason, Reason::BadField, "{t}");
        assert!(r.detail.starts_with("field `type` must be a string, got "), "{}", r.detail);
    }
    // A non-string type does not bring its own required fields.
    assert_eq!(reason(&format!(r#"{{{BASE},"type":5}}"#)), Reason::BadField);
}

#[test]
fn integers() {
    assert_eq!(bad_detail_of("ts", "1.0"), "field `ts` must be an integer, got float 1.0");
    assert_eq!(bad_detail_of("ts", "1e3"), "field `ts` must be an integer, got float 1000.0");
    assert_eq!(bad_detail_of("ts", "1.5"), "field `ts` must be an integer, got float 1.5");
    assert_eq!(bad_detail_of("ts", "-0"), "field `ts` must be an integer, got float -0.0");
    assert_eq!(bad_detail_of("ts", r#""1""#), "field `ts` must be an integer, got a string");
    assert_eq!(bad_detail_of("ts", "true"), "field `ts` must be an integer, got a bool");
    assert_eq!(bad_detail_of("ts", "[1]"), "field `ts` must be an integer, got an array");
    assert_eq!(bad_detail_of("ts", r#"{"v":1}"#), "field `ts` must be an integer, got an object");
    assert_eq!(
        bad_detail_of("ts", "9223372036854775808"),
        "field `ts` is outside the i64 range, got 9223372036854775808"
    );
    assert!(bad_detail_of("ts", "18446744073709551615").contains("outside the i64 range"));
    assert!(bad_detail_of("ts", "18446744073709551616").contains("outside the i64 range"));
    assert!(bad_detail_of("ts", "-9223372036854775809").contains("outside the i64 range"));
    assert!(bad_detail_of("ts", "123456789012345678901234567890").contains("outside the i64 range"));
    assert_eq!(ok_with("ts", "9223372036854775807").ts, i64::MAX);
    assert_eq!(ok_with("ts", "-9223372036854775808").ts, i64::MIN);
    assert_eq!(ok_with("ts", "0").ts, 0);
    assert_eq!(ok_with("ts", "-5").ts, -5);
}

fn with(field: &str, value: &str) -> String {
    let mut members = vec![
        ("event_id", r#""e1""#.to_owned()),
        ("type", r#""like""#.to_owned()),
        ("ts", "1".to_owned()),
        ("room_id", r#""r1""#.to_owned()),
        ("session_id", r#""s1""#.to_owned()),
        ("user_id", r#""u1""#.to_owned()),
    ];
    match members.iter_mut().find(|(k, _)| *k == field) {
        Some(m) => m.1 = value.to_owned(),
        None => members.push((field, value.to_owned())),
    }
    let body: Vec<String> = members.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
    format!("{{{}}}", body.join(","))
}

fn bad_detail_of(field: &str, value: &str) -> String {
    let input = with(field, value);
    let r = reject(&input);
    assert_eq!(r.reason, Reason::BadField, "{input}: {}", r.detail);
    r.detail
}

fn ok_with(field: &str, value: &str) -> Event<'static> {
    ok(&with(field, value)).into_owned()
}

#[test]
fn amount_and_quantity_bounds() {
    assert_eq!(bad_detail(r#","amount_cents":-5"#), "field `amount_cents` must be >= 0, got -5");
    assert_eq!(ok(&like(r#","amount_cents":0"#)).amount_cents, Some(0));
    assert_eq!(bad_detail(r#","quantity":0"#), "field `quantity` must be >= 1, got 0");
    assert_eq!(bad_detail(r#","quantity":-1"#), "field `quantity` must be >= 1, got -1");
    assert_eq!(ok(&like(r#","quantity":1"#)).quantity, Some(1));
    assert!(bad_detail(r#","quantity":2.0"#).contains("must be an integer"));
    assert!(bad_detail(r#","amount_cents":"100""#).contains("must be an integer"));
    assert!(bad_detail(r#","amount_cents":19.9"#).contains("must be an integer"));
    // Checked on types that do not use it.
    assert!(bad_detail(r#","amount_cents":-1"#).contains("amount_cents"));
}

#[test]
fn strings() {
    for field in [
        "event_id",
        "room_id",
        "session_id",
        "org_id",
        "account_id",
        "user_id",
        "source_raw",
        "plan_id",
        "product_id",
        "order_id",
        "buyer_city",
        "home_city",
    ] {
        assert_eq!(bad_detail_of(field, r#""""#), format!("field `{field}` is empty"));
        for (value, got) in [
            ("5", "a number"),
            ("5.5", "a number"),
            ("true", "a bool"),
            ("[]", "an array"),
            (r#"{"a":"b"}"#, "an object"),
        ] {
            assert_eq!(bad_detail_of(field, value), format!("field `{field}` must be a string, got {got}"));
        }
    }
}

#[test]
fn string_limits_count_utf8_bytes() {
    // 42 × 3-byte chars + 2 ASCII = 128 bytes but only 44 chars.
    let at_128 = format!("{}ab", "中".repeat(42));
    let at_129 = format!("{}abc", "中".repeat(42));
    let at_129_mb = "中".repeat(43);
    assert_eq!(at_128.len(), 128);
    assert_eq!(at_129.len(), 129);
    assert_eq!(at_129_mb.len(), 129);
    for field in ["event_id", "room_id", "session_id", "account_id", "user_id", "source_raw", "plan_id"] {
        assert!(decode(with(field, &format!(r#""{at_128}""#)).as_bytes()).is_ok(), "{field}");
        for long in [&at_129, &at_129_mb] {
            assert_eq!(
                bad_detail_of(field, &format!(r#""{long}""#)),
                format!("field `{field}` is 129 bytes, the limit is 128")
            );
        }
    }
    for field in ["product_id", "order_id"] {
        assert!(decode(with(field, &format!(r#""{at_128}""#)).as_bytes()).is_ok(), "{field}");
        assert!(bad_detail_of(field, &format!(r#""{at_129_mb}""#)).contains("129 bytes"));
    }
    // An escape counts by its decoded bytes: 43 × `\u4e2d` is 129 bytes.
    let escaped = "\\u4e2d".repeat(43);
    assert!(bad_detail_of("room_id", &format!(r#""{escaped}""#)).contains("129 bytes"));
    let escaped = format!("{}ab", "\\u4e2d".repeat(42));
    assert_eq!(ok_with("room_id", &format!(r#""{escaped}""#)).room_id, at_128);

    let at_64 = format!("{}a", "市".repeat(21));
    let at_65 = format!("{}ab", "市".repeat(21));
    assert_eq!((at_64.len(), at_65.len()), (64, 65));
    for field in ["org_id", "buyer_city", "home_city"] {
        assert!(decode(with(field, &format!(r#""{at_64}""#)).as_bytes()).is_ok());
        assert_eq!(
            bad_detail_of(field, &format!(r#""{at_65}""#)),
            format!("field `{field}` is 65 bytes, the limit is 64")
        );
    }
    assert_eq!(ok_with("buyer_city", &format!(r#""{at_64}""#)).buyer_city.as_deref(), Some(at_64.as_str()));
}

#[test]
fn enums_and_bools() {
    assert_eq!(bad_detail(r#","platform":"tiktok""#), "field `platform` has unknown value `tiktok`");
    assert_eq!(bad_detail(r#","platform":"Douyin""#), "field `platform` has unknown value `Douyin`");
    assert_eq!(bad_detail(r#","platform":"""#), "field `platform` is empty");
    assert_eq!(bad_detail(r#","platform":1"#), "field `platform` must be a string, got a number");
    assert_eq!(bad_detail(r#","source":"unknown""#), "field `source` has unknown value `unknown`");
    assert_eq!(bad_detail(r#","source":"""#), "field `source` is empty");
    assert_eq!(bad_detail(r#","source":["moments"]"#), "field `source` must be a string, got an array");
    assert_eq!(bad_detail(r#","is_follower":"true""#), "field `is_follower` must be a bool, got a string");
    assert_eq!(bad_detail(r#","is_follower":1"#), "field `is_follower` must be a bool, got a number");
    assert!(ok(&like(r#","is_follower":true"#)).is_follower);
    assert!(!ok(&like(r#","is_follower":false"#)).is_follower);
}

#[test]
fn bad_fields_are_reported_in_table_order() {
    let r = reject(&like(r#","quantity":0,"platform":"x","amount_cents":-1"#));
    assert_eq!(r.detail, "field `platform` has unknown value `x`");
    let r = reject(r#"{"event_id":5,"type":5,"ts":1,"room_id":"r","session_id":"s"}"#);
    assert_eq!(r.detail, "field `event_id` must be a string, got a number");
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic sweep; the property tests go further.
    let seed = like(r#","amount_cents":5,"x":[1.5,{"y":null}]"#).into_bytes();
    for i in 0..seed.len() {
        for b in [b'"', b'{', b'}', b'\\', b'1', b'-', b'e', 0xff, b',', b':'] {
            let mut v = seed.clone();
            v[i] = b;
            let _ = decode(&v);
            let _ = decode(&v[..i]);
        }
    }
}

#[test]
fn refunds_need_no_product_id_and_orders_still_do() {
    // Contract v1.1 §1.1: platforms often send refunds without the product.
    let refund = format!(r#"{{{BASE},"type":"refund","user_id":"u","order_id":"o","amount_cents":500}}"#);
    let ev = ok(&refund);
    assert_eq!((ev.kind, ev.product_id.as_deref(), ev.amount_cents), (EventType::Refund, None, Some(500)));
    let with = format!(
        r#"{{{BASE},"type":"refund","user_id":"u","order_id":"o","amount_cents":500,"product_id":"p1"}}"#
    );
    assert_eq!(ok(&with).product_id.as_deref(), Some("p1"));
    for kind in ["order_created", "order_paid"] {
        let input = format!(r#"{{{BASE},"type":"{kind}","user_id":"u","order_id":"o","amount_cents":500}}"#);
        let r = reject(&input);
        assert_eq!(r.reason, Reason::MissingField, "{kind}");
        assert!(r.detail.contains("product_id"), "{kind}: {}", r.detail);
    }
}

mod flat_parser {
    use proptest::prelude::*;

    use super::super::{flat, parse, validate, Fields};

    /// The fast path's event, and the general path's event or rejection.
    fn both(text: &str) -> (Option<String>, Result<String, String>) {
        let fast = flat::event(text).map(|e| format!("{e:?}"));
        let mut fields: Fields<'_> = Default::default();
        let slow = parse::parse(text, &mut fields)
            .and_then(|()| validate::validate(&mut fields))
            .map(|e| format!("{e:?}"))
            .map_err(|r| r.to_string());
        (fast, slow)
    }

    const KEYS: &[&str] = &[
        "event_id",
        "type",
        "ts",
        "room_id",
        "session_id",
        "user_id",
        "amount_cents",
        "quantity",
        "is_follower",
        "source",
        "platform",
        "org_id",
        "home_city",
        "product_id",
        "order_id",
        "x",
        "t\\u0073",
        "Ts",
    ];

    const VALUES: &[&str] = &[
        "\"e1\"",
        "\"\"",
        "\"直播间\"",
        "\"a\\\"b\"",
        "\"a\\u0041\"",
        "\"tab\there\"",
        "\"\u{7f}\"",
        "\"enter\"",
        "\"order_paid\"",
        "\"session_start\"",
        "\"douyin\"",
        "\"nearby\"",
        "\"Enter\"",
        "\"12345678901234567890123456789012345678901234567890123456789012345\"",
        "0",
        "-0",
        "7",
        "-7",
        "01",
        "-01",
        "1.5",
        "1e3",
        "1E3",
        "-1.0e-2",
        "18446744073709551615",
        "18446744073709551616",
        "9999999999999999999",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775807",
        "-9223372036854775808",
        "-9223372036854775809",
        "1700000000000",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "truex",
        "falsey",
        "[1,2]",
        "{\"a\":1}",
        "[]",
        "{}",
        "-",
        "\"unterminated",
        "+1",
        "1x",
    ];

    /// The members of a valid event of each kind the tests start from.
    const BASES: &[&[(&str, &str)]] = &[
        &[
            ("event_id", "\"e\""),
            ("type", "\"session_start\""),
            ("ts", "1"),
            ("room_id", "\"r\""),
            ("session_id", "\"s\""),
        ],
        &[
            ("event_id", "\"e\""),
            ("type", "\"enter\""),
            ("ts", "1700000000000"),
            ("room_id", "\"r\""),
            ("session_id", "\"s\""),
            ("user_id", "\"u\""),
            ("source", "\"nearby\""),
        ],
        &[
            ("event_id", "\"e\""),
            ("type", "\"order_paid\""),
            ("ts", "-3"),
            ("room_id", "\"直播间\""),
            ("session_id", "\"s\""),
            ("user_id", "\"u\""),
            ("product_id", "\"p\""),
            ("order_id", "\"o\""),
            ("amount_cents", "5"),
        ],
    ];

    /// Optional members, valid on every kind.
    const OPTIONAL: &[(&str, &str)] = &[
        ("org_id", "\"o\""),
        ("account_id", "\"a\""),
        ("platform", "\"douyin\""),
        ("source_raw", "\"sr\""),
        ("plan_id", "\"p\""),
        ("is_follower", "true"),
        ("is_follower", "false"),
        ("quantity", "2"),
        ("buyer_city", "\"长沙\""),
        ("home_city", "\"h\""),
    ];

    /// A valid event, then maybe one change: a value or a key replaced, or a member
    /// left out. About half the texts are valid events.
    fn text() -> impl Strategy<Value = String> {
        (
            0..BASES.len(),
            prop::collection::vec(0..OPTIONAL.len(), 0..3),
            (0..6usize, 0..16usize, 0..KEYS.len(), 0..VALUES.len()),
            (prop::collection::vec(0..4usize, 12), 0..6usize, 0..12usize),
        )
            .prop_map(|(base, optional, (edit, at, k, v), (pads, lead, tail))| {
                let mut members: Vec<(&str, &str)> = BASES[base].to_vec();
                members.extend(optional.iter().map(|&i| OPTIONAL[i]));
                let at = at % members.len();
                match edit {
                    0 => members[at].1 = VALUES[v],
                    1 => members[at].0 = KEYS[k],
                    2 => {
                        members.remove(at);
                    }
                    _ => {}
                }
                let body: Vec<String> = members
                    .iter()
                    .zip(pads.iter().cycle())
                    .map(|((key, value), &ws)| {
                        let pad = [" ", "", "\n\t", "\r "][ws];
                        format!("{pad}\"{key}\"{pad}:{pad}{value}{pad}")
                    })
                    .collect();
                // Mostly a plain object; sometimes a byte order mark, a trailing comma,
                // bytes after it, or no end.
                let lead = ["", " ", "\u{feff}", "", "", ""][lead];
                let tail = ["}", "} ", "}\n", ",}", "}x", ""].get(tail).unwrap_or(&"}");
                format!("{lead}{{{}{tail}", body.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]

        /// Whatever the fast path accepts, the general one accepts as the same event;
        /// what it gives up on is left to the general one.
        #[test]
        fn the_flat_path_agrees_with_the_general_one(text in text()) {
            let (fast, slow) = both(&text);
            if let Some(fast) = fast {
                prop_assert_eq!(Ok(fast), slow, "{}", text);
            }
        }
    }

    #[test]
    fn simulated_events_take_the_flat_path() {
        use livefunnel_sim::{Profile, SimParams, Simulator};
        for profile in [Profile::Standard, Profile::Dense] {
            let params = SimParams { rooms: 20, duration_ms: 10 * 60_000, ..SimParams::default() };
            let mut sim = Simulator::with_profile(params, profile);
            let (mut buf, mut n) = (Vec::new(), 0);
            while sim.next_message(&mut buf) && n < 20_000 {
                let text = std::str::from_utf8(&buf).unwrap();
                let (fast, slow) = both(text);
                assert!(fast.is_some(), "{profile:?}: the flat path gives up on {text}");
                assert_eq!(fast.ok_or(()), slow.map_err(|_| ()), "{text}");
                buf.clear();
                n += 1;
            }
            assert!(n > 1_000, "{profile:?}: {n} messages");
        }
    }

    /// An event with every field, each given as the fast path reads it.
    const FULL: &str = r#"{"event_id":"e","type":"order_paid","ts":-5,"room_id":"r","session_id":"s","org_id":"o","account_id":"a","platform":"douyin","user_id":"u","source":"nearby","source_raw":"sr","plan_id":"pl","is_follower":true,"product_id":"p","order_id":"or","amount_cents":0,"quantity":3,"buyer_city":"b","home_city":"h"}"#;

    #[test]
    fn every_known_key_takes_the_flat_path() {
        let (fast, slow) = both(FULL);
        assert!(fast.is_some());
        assert_eq!(fast.ok_or(()), slow.map_err(|_| ()));
        for (i, field) in super::super::Field::ALL.into_iter().enumerate() {
            assert_eq!(field as usize, i);
            let name = field.name();
            assert_eq!(super::super::Field::from_key(name), Some(field));
            let key = format!("\"{name}\":");
            assert!(FULL.contains(&key), "{name}");
            // The key is read whole, and a longer one is not taken for it.
            for other in [format!("\"{name}x\":"), format!("\"{name}\\u0000\":")] {
                let text = FULL.replacen(&key, &other, 1);
                assert_eq!(both(&text).0, None, "{text}");
            }
        }
    }

    #[test]
    fn what_the_flat_path_gives_up_on() {
        let base = r#""event_id":"e","type":"session_start","room_id":"r","session_id":"s""#;
        let ok = format!(r#"{{{base},"ts":1}}"#);
        assert!(both(&ok).0.is_some(), "{ok}");
        for member in [
            r#""ts":-0"#,
            r#""ts":1.0"#,
            r#""ts":01"#,
            r#""ts":1,"ts":2"#,
            r#""ts":1,"x":1"#,
            r#""ts\u0000":1"#,
            r#""t\u0073":1"#,
            r#""ts":1,"user_id":"a\"b""#,
            r#""ts":1,"user_id":"""#,
            r#""ts":1,"user_id":null"#,
            r#""ts":1,"platform":"tiktok""#,
            r#""ts":1,"is_follower":1"#,
            r#""ts":1,"quantity":0"#,
            r#""ts":1,"amount_cents":-1"#,
            r#""ts":1,"org_id":"12345678901234567890123456789012345678901234567890123456789012345""#,
            r#""ts":1,"#,
            r#""ts":[1]"#,
            r#""ts":9223372036854775808"#,
            r#""ts":"1""#,
        ] {
            let text = format!("{{{base},{member}}}");
            assert_eq!(both(&text).0, None, "{text}");
        }
        for text in [
            format!("{{{base}}}"),
            format!("{{{base},\"ts\":1}} x"),
            format!(r#"{{"type":"enter",{base},"ts":1}}"#),
        ] {
            assert_eq!(both(&text).0, None, "{text}");
        }
        let spaced = format!(" {{ {} , \"ts\" : 1 , \"home_city\" : \"直播\" }} ", base.replace(',', " , "));
        assert!(both(&spaced).0.is_some(), "{spaced}");
    }
}
