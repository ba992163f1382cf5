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
    if let Some(event) = flat::event(text) {
        return Ok(event);
    }
    let mut fields: Fields<'_> = Default::default();
    parse::parse(text, &mut fields)?;
    validate::validate(&mut fields)
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
    /// Every field, in `Fields` order.
    #[cfg(test)]
    const ALL: [Field; FIELD_COUNT] = [
        Field::EventId,
        Field::Type,
        Field::Ts,
        Field::RoomId,
        Field::SessionId,
        Field::OrgId,
        Field::AccountId,
        Field::Platform,
        Field::UserId,
        Field::Source,
        Field::SourceRaw,
        Field::PlanId,
        Field::IsFollower,
        Field::ProductId,
        Field::OrderId,
        Field::AmountCents,
        Field::Quantity,
        Field::BuyerCity,
        Field::HomeCity,
    ];
}

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

mod flat;
mod parse;
mod validate;

#[cfg(test)]
mod tests;
