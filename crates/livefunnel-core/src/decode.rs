//! Decoding and validation of one input message: reasons 1–5 of contract §1.4
//! (`oversize`, `malformed_json`, `missing_field`, `unknown_event_type`,
//! `bad_field`). Reasons 6–7 depend on engine state and live there.
//!
//! One streaming pass with serde_json and hand-written visitors: no `Value`
//! tree, and strings without escapes borrow from the input, so a typical
//! event allocates nothing. Parsing only captures the known fields loosely
//! typed ([`Raw`]); the typed checks run afterwards, because the contract
//! orders reasons by kind (every missing field before any bad one), not by
//! where the fields happen to sit in the message.

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashSet;
use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::event::{Event, EventType, Platform, Reason, Rejection, Source};

/// Contract §1.4 reason 1: the largest message accepted, newline excluded.
pub const MAX_EVENT_BYTES: usize = 65_536;

/// Decodes and validates one message (one Kafka value, or one replay line
/// without its line ending). Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, Rejection> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(Rejection::new(
            Reason::Oversize,
            format!("message is {} bytes, the limit is {MAX_EVENT_BYTES}", bytes.len()),
        ));
    }
    // Validating up front lets serde_json's `StrRead` skip its per-string
    // UTF-8 checks, and gives a clearer detail than a JSON syntax error.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(Reason::MalformedJson, format!("invalid utf-8 at byte {}", e.valid_up_to()))
    })?;
    let mut fields: Fields<'_> = Default::default();
    parse(text, &mut fields)?;
    validate(&mut fields)
}

// ---------------------------------------------------------------------------
// Known fields

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    EventId,
    Type,
    Ts,
    RoomId,
    SessionId,
    OrgId,
    AccountId,
    Platform,
    UserId,
    Source,
    SourceRaw,
    PlanId,
    IsFollower,
    ProductId,
    OrderId,
    AmountCents,
    Quantity,
    BuyerCity,
    HomeCity,
}

const FIELD_COUNT: usize = 19;

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::EventId => "event_id",
            Field::Type => "type",
            Field::Ts => "ts",
            Field::RoomId => "room_id",
            Field::SessionId => "session_id",
            Field::OrgId => "org_id",
            Field::AccountId => "account_id",
            Field::Platform => "platform",
            Field::UserId => "user_id",
            Field::Source => "source",
            Field::SourceRaw => "source_raw",
            Field::PlanId => "plan_id",
            Field::IsFollower => "is_follower",
            Field::ProductId => "product_id",
            Field::OrderId => "order_id",
            Field::AmountCents => "amount_cents",
            Field::Quantity => "quantity",
            Field::BuyerCity => "buyer_city",
            Field::HomeCity => "home_city",
        }
    }

    fn from_key(key: &str) -> Option<Field> {
        Some(match key {
            "event_id" => Field::EventId,
            "type" => Field::Type,
            "ts" => Field::Ts,
            "room_id" => Field::RoomId,
            "session_id" => Field::SessionId,
            "org_id" => Field::OrgId,
            "account_id" => Field::AccountId,
            "platform" => Field::Platform,
            "user_id" => Field::UserId,
            "source" => Field::Source,
            "source_raw" => Field::SourceRaw,
            "plan_id" => Field::PlanId,
            "is_follower" => Field::IsFollower,
            "product_id" => Field::ProductId,
            "order_id" => Field::OrderId,
            "amount_cents" => Field::AmountCents,
            "quantity" => Field::Quantity,
            "buyer_city" => Field::BuyerCity,
            "home_city" => Field::HomeCity,
            _ => return None,
        })
    }
}

/// A known field's value as parsed, before any typing: the type checks need
/// to see what was actually sent to say what is wrong with it.
#[derive(Debug)]
enum Raw<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Raw<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Bool(_) => "a bool",
            Raw::I64(_) | Raw::U64(_) | Raw::F64(_) => "a number",
            Raw::Str(_) => "a string",
            Raw::Array => "an array",
            Raw::Object => "an object",
        }
    }
}

type Fields<'a> = [Option<Raw<'a>>; FIELD_COUNT];

// ---------------------------------------------------------------------------
// Parsing (reason 2)

/// Fills `fields` in place: they are a few hundred bytes, not worth moving
/// through serde's layers of `Result`.
fn parse<'a>(text: &'a str, fields: &mut Fields<'a>) -> Result<(), Rejection> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut duplicate = None;
    let parsed = (&mut de).deserialize_any(TopVisitor { fields, duplicate: &mut duplicate });
    // `end` rejects anything but whitespace after the object.
    parsed.and_then(|()| de.end()).map_err(|err| malformed(&err, duplicate))
}

fn malformed(err: &serde_json::Error, duplicate: Option<String>) -> Rejection {
    let (line, column) = (err.line(), err.column());
    if let Some(key) = duplicate {
        return Rejection::new(
            Reason::MalformedJson,
            format!("duplicate key `{}` at line {line} column {column}", Shown(&key)),
        );
    }
    // serde_json appends the position to its message; it is moved to the front
    // so every malformed detail reads the same way.
    let message = err.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = message.strip_suffix(suffix.as_str()).unwrap_or(&message);
    Rejection::new(Reason::MalformedJson, format!("invalid json at line {line} column {column}: {message}"))
}

/// The top level: must be an object; captures known fields, skips the rest.
struct TopVisitor<'s, 'de> {
    fields: &'s mut Fields<'de>,
    /// The de::Error of a duplicate key loses its structure inside serde_json,
    /// so the key is handed out on the side for a clean detail.
    duplicate: &'s mut Option<String>,
}

impl<'de> Visitor<'de> for TopVisitor<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut unknown = KeySet::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Known(field) => {
                    let slot = &mut self.fields[field as usize];
                    if slot.is_some() {
                        *self.duplicate = Some(field.name().to_owned());
                        return Err(de::Error::custom("duplicate key"));
                    }
                    *slot = Some(map.next_value_seed(RawSeed)?);
                }
                Key::Unknown(key) => {
                    if let Err(key) = unknown.insert(key) {
                        *self.duplicate = Some(key.into_owned());
                        return Err(de::Error::custom("duplicate key"));
                    }
                    map.next_value_seed(Skip)?;
                }
            }
        }
        Ok(())
    }
}

enum Key<'a> {
    Known(Field),
    Unknown(Cow<'a, str>),
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::from_key(v).map_or(Key::Unknown(Cow::Borrowed(v)), Key::Known))
    }

    // An escaped key is compared by its decoded text: `"t\u0073"` is `ts`.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::from_key(v).map_or_else(|| Key::Unknown(Cow::Owned(v.to_owned())), Key::Known))
    }
}

/// Unknown top-level keys seen so far, for duplicate detection. Most events
/// carry none or a few, so a linear scan with no allocation serves them; a
/// set takes over only when a message piles up keys, to stay linear.
#[derive(Default)]
struct KeySet<'a> {
    few: Vec<Cow<'a, str>>,
    many: Option<FxHashSet<Cow<'a, str>>>,
}

impl<'a> KeySet<'a> {
    const FEW: usize = 16;

    /// Gives the key back when it was already present.
    fn insert(&mut self, key: Cow<'a, str>) -> Result<(), Cow<'a, str>> {
        if let Some(many) = &mut self.many {
            if many.contains(&key) {
                return Err(key);
            }
            many.insert(key);
            return Ok(());
        }
        if self.few.contains(&key) {
            return Err(key);
        }
        if self.few.len() < Self::FEW {
            self.few.push(key);
        } else {
            let mut many: FxHashSet<_> = self.few.drain(..).collect();
            many.insert(key);
            self.many = Some(many);
        }
        Ok(())
    }
}

struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = Raw<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Raw::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Raw::I64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Raw::U64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        finite(v).map(Raw::F64)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(seq).map(|()| Raw::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Skip.visit_map(map).map(|()| Raw::Object)
    }
}

/// Skips a value while still parsing its numbers: serde's `IgnoredAny` only
/// checks number syntax, so `1e400` in an unknown field would pass unseen.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        finite(v).map(drop)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    // Nested duplicate keys are not looked for: the contract's duplicate rule
    // is about the event's own fields, and tracking every level costs memory.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// serde_json already refuses numbers that overflow `f64`; this keeps the
/// contract's "not finite" rule independent of that detail.
fn finite<E: de::Error>(v: f64) -> Result<f64, E> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(E::custom("number is not finite"))
    }
}

// ---------------------------------------------------------------------------
// Validation (reasons 3–5)

/// Byte limits of §1.1; the minimum is 1 for every string field.
fn max_len(field: Field) -> usize {
    match field {
        Field::OrgId | Field::BuyerCity | Field::HomeCity => 64,
        _ => 128,
    }
}

fn validate<'a>(fields: &mut Fields<'a>) -> Result<Event<'a>, Rejection> {
    // Reason 3. A null counts as absent everywhere; the detail still tells
    // the two apart for whoever debugs the producer.
    let mut null = [false; FIELD_COUNT];
    for (slot, was_null) in fields.iter_mut().zip(null.iter_mut()) {
        if matches!(slot, Some(Raw::Null)) {
            *slot = None;
            *was_null = true;
        }
    }
    let missing = |field: Field, kind: Option<EventType>| {
        let why = if null[field as usize] { "is null" } else { "is missing" };
        let detail = match kind {
            Some(kind) => format!("field `{}` {why}, required on `{}`", field.name(), kind.as_str()),
            None => format!("field `{}` {why}", field.name()),
        };
        Rejection::new(Reason::MissingField, detail)
    };
    for field in [Field::EventId, Field::Type, Field::Ts, Field::RoomId, Field::SessionId] {
        if fields[field as usize].is_none() {
            return Err(missing(field, None));
        }
    }
    let kind = match &fields[Field::Type as usize] {
        Some(Raw::Str(s)) => EventType::parse(s),
        _ => None,
    };
    if let Some(kind) = kind {
        let own = [
            (kind.is_viewer_event(), Field::UserId),
            (kind.requires_source(), Field::Source),
            (kind.requires_product_id(), Field::ProductId),
            (kind.requires_order_id(), Field::OrderId),
            (kind.requires_amount(), Field::AmountCents),
        ];
        for (required, field) in own {
            if required && fields[field as usize].is_none() {
                return Err(missing(field, Some(kind)));
            }
        }
    }

    // Reason 4: only a string can be an unknown type; anything else is a bad
    // `type` field, found below.
    if let (None, Some(Raw::Str(s))) = (kind, &fields[Field::Type as usize]) {
        return Err(Rejection::new(Reason::UnknownEventType, format!("unknown event type `{}`", Shown(s))));
    }

    // Reason 5, in the field order of §1.1 so the detail is deterministic.
    let mut take = |field: Field| fields[field as usize].take();
    let event_id = required(take_str(Field::EventId, take(Field::EventId))?, Field::EventId)?;
    let kind = match (kind, take(Field::Type)) {
        (Some(kind), _) => kind,
        (None, raw) => return Err(wrong_type(Field::Type, "a string", raw.as_ref())),
    };
    let ts = required(take_int(Field::Ts, take(Field::Ts))?, Field::Ts)?;
    let room_id = required(take_str(Field::RoomId, take(Field::RoomId))?, Field::RoomId)?;
    let session_id = required(take_str(Field::SessionId, take(Field::SessionId))?, Field::SessionId)?;
    let org_id = take_str(Field::OrgId, take(Field::OrgId))?;
    let account_id = take_str(Field::AccountId, take(Field::AccountId))?;
    let platform = take_enum(Field::Platform, take(Field::Platform), Platform::parse)?;
    let user_id = take_str(Field::UserId, take(Field::UserId))?;
    let source = take_enum(Field::Source, take(Field::Source), Source::parse)?;
    let source_raw = take_str(Field::SourceRaw, take(Field::SourceRaw))?;
    let plan_id = take_str(Field::PlanId, take(Field::PlanId))?;
    let is_follower = match take(Field::IsFollower) {
        None => false,
        Some(Raw::Bool(b)) => b,
        Some(raw) => return Err(wrong_type(Field::IsFollower, "a bool", Some(&raw))),
    };
    let product_id = take_str(Field::ProductId, take(Field::ProductId))?;
    let order_id = take_str(Field::OrderId, take(Field::OrderId))?;
    let amount_cents = take_int(Field::AmountCents, take(Field::AmountCents))?;
    if let Some(amount) = amount_cents.filter(|&a| a < 0) {
        return Err(bad(Field::AmountCents, format!("must be >= 0, got {amount}")));
    }
    let quantity = take_int(Field::Quantity, take(Field::Quantity))?;
    if let Some(quantity) = quantity.filter(|&q| q < 1) {
        return Err(bad(Field::Quantity, format!("must be >= 1, got {quantity}")));
    }
    let buyer_city = take_str(Field::BuyerCity, take(Field::BuyerCity))?;
    let home_city = take_str(Field::HomeCity, take(Field::HomeCity))?;

    Ok(Event {
        event_id,
        kind,
        ts,
        room_id,
        session_id,
        org_id,
        account_id,
        platform,
        user_id,
        source,
        source_raw,
        plan_id,
        is_follower,
        product_id,
        order_id,
        amount_cents,
        quantity,
        buyer_city,
        home_city,
    })
}

fn bad(field: Field, why: impl fmt::Display) -> Rejection {
    Rejection::new(Reason::BadField, format!("field `{}` {why}", field.name()))
}

fn wrong_type(field: Field, expected: &str, got: Option<&Raw<'_>>) -> Rejection {
    bad(field, format_args!("must be {expected}, got {}", got.map_or("nothing", Raw::describe)))
}

/// Required fields were checked present under reason 3; this only keeps the
/// code free of `unwrap`.
fn required<T>(value: Option<T>, field: Field) -> Result<T, Rejection> {
    value.ok_or_else(|| Rejection::new(Reason::MissingField, format!("field `{}` is missing", field.name())))
}

fn take_str(field: Field, raw: Option<Raw<'_>>) -> Result<Option<Cow<'_, str>>, Rejection> {
    match raw {
        None => Ok(None),
        Some(Raw::Str(s)) => {
            let limit = max_len(field);
            if s.is_empty() {
                Err(bad(field, "is empty"))
            } else if s.len() > limit {
                Err(bad(field, format_args!("is {} bytes, the limit is {limit}", s.len())))
            } else {
                Ok(Some(s))
            }
        }
        Some(raw) => Err(wrong_type(field, "a string", Some(&raw))),
    }
}

fn take_int(field: Field, raw: Option<Raw<'_>>) -> Result<Option<i64>, Rejection> {
    match raw {
        None => Ok(None),
        Some(Raw::I64(v)) => Ok(Some(v)),
        Some(Raw::U64(v)) => match i64::try_from(v) {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(bad(field, format_args!("is outside the i64 range, got {v}"))),
        },
        // serde_json turns integers beyond u64/i64 into floats, so a whole
        // float that large was most likely written as an integer.
        Some(Raw::F64(v)) if v.fract() == 0.0 && v.abs() >= 9.223_372_036_854_776e18 => {
            Err(bad(field, format_args!("is outside the i64 range, got {v:e}")))
        }
        Some(Raw::F64(v)) => Err(bad(field, format_args!("must be an integer, got float {v:?}"))),
        Some(raw) => Err(wrong_type(field, "an integer", Some(&raw))),
    }
}

fn take_enum<T>(
    field: Field,
    raw: Option<Raw<'_>>,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, Rejection> {
    match raw {
        None => Ok(None),
        Some(Raw::Str(s)) if s.is_empty() => Err(bad(field, "is empty")),
        Some(Raw::Str(s)) => match parse(&s) {
            Some(v) => Ok(Some(v)),
            None => Err(bad(field, format_args!("has unknown value `{}`", Shown(&s)))),
        },
        Some(raw) => Err(wrong_type(field, "a string", Some(&raw))),
    }
}

/// Echoes untrusted text into a detail: escaped so control characters cannot
/// break a log line or header, and cut short since a value may be 64 KiB.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        let mut end = self.0.len().min(MAX);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}", self.0[..end].escape_debug())?;
        if end < self.0.len() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        let ev =
            ok(r#"{"event_id":"e","type":"like","t\u0073":5,"room_id":"r","session_id":"s","user_id":"u"}"#);
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
        for kind in
            [EventType::SessionStart, EventType::SessionEnd, EventType::ProductPin, EventType::LuckyBag]
        {
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
                assert_eq!(
                    bad_detail_of(field, value),
                    format!("field `{field}` must be a string, got {got}")
                );
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
        assert_eq!(
            ok_with("buyer_city", &format!(r#""{at_64}""#)).buyer_city.as_deref(),
            Some(at_64.as_str())
        );
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
        assert_eq!(
            bad_detail(r#","is_follower":"true""#),
            "field `is_follower` must be a bool, got a string"
        );
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
}
