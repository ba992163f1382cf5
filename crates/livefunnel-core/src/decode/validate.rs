//! Validation (reasons 3–5: `missing_field`, `unknown_event_type`, `bad_field`), in
//! the contract's order, over the fields the parser captured.

use super::*;

/// Byte limits of §1.1; the minimum is 1 for every string field.
pub(super) fn max_len(field: Field) -> usize {
    match field {
        Field::OrgId | Field::BuyerCity | Field::HomeCity => 64,
        _ => 128,
    }
}

/// The fields every event carries (§1.1), in the order a missing one is reported.
pub(super) const ALWAYS_REQUIRED: [Field; 5] =
    [Field::EventId, Field::Type, Field::Ts, Field::RoomId, Field::SessionId];

/// The fields an event of `kind` carries besides those, each with whether it must.
pub(super) fn required_by(kind: EventType) -> [(bool, Field); 5] {
    [
        (kind.is_viewer_event(), Field::UserId),
        (kind.requires_source(), Field::Source),
        (kind.requires_product_id(), Field::ProductId),
        (kind.requires_order_id(), Field::OrderId),
        (kind.requires_amount(), Field::AmountCents),
    ]
}

pub(super) fn validate<'a>(fields: &mut Fields<'a>) -> Result<Event<'a>, Rejection> {
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
    for field in ALWAYS_REQUIRED {
        if fields[field as usize].is_none() {
            return Err(missing(field, None));
        }
    }
    let kind = match &fields[Field::Type as usize] {
        Some(Raw::Str(s)) => EventType::parse(s),
        _ => None,
    };
    if let Some(kind) = kind {
        for (required, field) in required_by(kind) {
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
pub(super) struct Shown<'a>(pub(super) &'a str);

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
