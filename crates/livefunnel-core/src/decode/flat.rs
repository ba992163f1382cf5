//! The fast path of decoding: one pass over the bytes of a valid event sent as the
//! flat object producers send (known keys once each, strings without escapes,
//! integers, `true`, `false`), typed and checked as it is read. Anything else, valid
//! or not (a `null`, a float, an escape, a missing field, an unknown value, an empty
//! or long string), makes it give up, and [`super::parse::parse`] and
//! [`super::validate::validate`] read the message again from the start: so every
//! rejection, and every detail of it, still comes from one place. What it accepts
//! is what those accept for the same bytes, as the same event
//! (`tests::the_flat_path_agrees_with_the_general_one`).

use std::borrow::Cow;

use super::validate::{max_len, required_by, ALWAYS_REQUIRED};
use super::{Field, FIELD_COUNT};
use crate::event::{Event, EventType};
use crate::json::special;

/// The event in `text` if it is a valid event in a flat object of the simple kind.
pub(super) fn event(text: &str) -> Option<Event<'_>> {
    // String ranges are kept in 32 bits each.
    debug_assert!(text.len() <= super::MAX_EVENT_BYTES);
    let mut p = Flat { s: text.as_bytes(), i: 0 };
    let mut values = Values::default();
    p.object(&mut values)?;
    values.event(text)
}

/// What a field's value must be on the fast path.
enum Kind {
    Str,
    Int,
    Bool,
}

fn kind(field: Field) -> Kind {
    match field {
        Field::Ts | Field::AmountCents | Field::Quantity => Kind::Int,
        Field::IsFollower => Kind::Bool,
        _ => Kind::Str,
    }
}

/// The fields read: a string as its byte range in the text (a message is at most
/// 64 KiB), an integer as itself, a bool as 0 or 1.
#[derive(Default)]
struct Values {
    seen: u32,
    value: [u64; FIELD_COUNT],
}

impl Values {
    fn has(&self, field: Field) -> bool {
        self.seen >> field as u32 & 1 != 0
    }

    fn str<'a>(&self, text: &'a str, field: Field) -> Option<&'a str> {
        let v = self.value[field as usize];
        // Both ends are ASCII quotes' neighbours in valid UTF-8: char boundaries.
        self.has(field).then(|| text.get((v >> 32) as usize..v as u32 as usize)).flatten()
    }

    fn cow<'a>(&self, text: &'a str, field: Field) -> Option<Cow<'a, str>> {
        self.str(text, field).map(Cow::Borrowed)
    }

    fn int(&self, field: Field) -> Option<i64> {
        self.has(field).then_some(self.value[field as usize] as i64)
    }

    fn event<'a>(&self, text: &'a str) -> Option<Event<'a>> {
        use Field::*;
        // `Platform` and `Source` below are fields; their types are named by path.
        let kind = EventType::parse(self.str(text, Type)?)?;
        let missing = ALWAYS_REQUIRED.iter().any(|&field| !self.has(field))
            || required_by(kind).iter().any(|&(required, field)| required && !self.has(field));
        if missing {
            return None;
        }
        let platform = match self.str(text, Platform) {
            Some(s) => Some(crate::event::Platform::parse(s)?),
            None => None,
        };
        let source = match self.str(text, Source) {
            Some(s) => Some(crate::event::Source::parse(s)?),
            None => None,
        };
        let amount_cents = self.int(AmountCents);
        let quantity = self.int(Quantity);
        if amount_cents.is_some_and(|a| a < 0) || quantity.is_some_and(|q| q < 1) {
            return None;
        }
        Some(Event {
            event_id: self.cow(text, EventId)?,
            kind,
            ts: self.int(Ts)?,
            room_id: self.cow(text, RoomId)?,
            session_id: self.cow(text, SessionId)?,
            org_id: self.cow(text, OrgId),
            account_id: self.cow(text, AccountId),
            platform,
            user_id: self.cow(text, UserId),
            source,
            source_raw: self.cow(text, SourceRaw),
            plan_id: self.cow(text, PlanId),
            is_follower: self.int(IsFollower) == Some(1),
            product_id: self.cow(text, ProductId),
            order_id: self.cow(text, OrderId),
            amount_cents,
            quantity,
            buyer_city: self.cow(text, BuyerCity),
            home_city: self.cow(text, HomeCity),
        })
    }
}

struct Flat<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Flat<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.s.get(self.i) == Some(&b)).then(|| self.i += 1)
    }

    fn object(&mut self, values: &mut Values) -> Option<()> {
        self.eat(b'{')?;
        loop {
            self.ws();
            let field = self.key()?;
            if values.has(field) {
                return None;
            }
            self.eat(b':')?;
            self.ws();
            let value = match kind(field) {
                Kind::Str => {
                    let (start, end) = self.string()?;
                    if start == end || end - start > max_len(field) {
                        return None;
                    }
                    (start as u64) << 32 | end as u64
                }
                Kind::Int => self.int()? as u64,
                Kind::Bool => self.bool()? as u64,
            };
            values.seen |= 1 << field as u32;
            values.value[field as usize] = value;
            self.ws();
            match self.s.get(self.i)? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    break;
                }
                _ => return None,
            }
        }
        self.ws();
        (self.i == self.s.len()).then_some(())
    }

    /// The byte range of a string without escapes or control characters.
    fn string(&mut self) -> Option<(usize, usize)> {
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let end = special(self.s, start);
        if self.s.get(end) != Some(&b'"') {
            return None;
        }
        self.i = end + 1;
        Some((start, end))
    }

    /// An integer that is an `i64` as serde_json reads it (`-0` is a float there).
    fn int(&mut self) -> Option<i64> {
        let negative = self.s.get(self.i) == Some(&b'-');
        self.i += usize::from(negative);
        let m = i64::try_from(self.digits()?).ok()?;
        match negative {
            true if m == 0 => None,
            true => Some(-m),
            false => Some(m),
        }
    }

    fn bool(&mut self) -> Option<bool> {
        if self.s[self.i..].starts_with(b"true") {
            self.i += 4;
            Some(true)
        } else if self.s[self.i..].starts_with(b"false") {
            self.i += 5;
            Some(false)
        } else {
            None
        }
    }

    /// A known key, compared in place with its closing quote: no scan for the string's
    /// end and no second lookup. Any other key, or one spelt with escapes, is `None`,
    /// as [`Field::from_key`] would make it.
    fn key(&mut self) -> Option<Field> {
        use Field::*;
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        let rest = &self.s[self.i + 1..];
        // Each field is a constant in its arm, so its name is too.
        let is = |f: Field| {
            let name = f.name().as_bytes();
            rest.starts_with(name) && rest.get(name.len()) == Some(&b'"')
        };
        let field = match rest.first()? {
            b'e' if is(EventId) => EventId,
            b't' if is(Type) => Type,
            b't' if is(Ts) => Ts,
            b'r' if is(RoomId) => RoomId,
            b's' if is(SessionId) => SessionId,
            b's' if is(Source) => Source,
            b's' if is(SourceRaw) => SourceRaw,
            b'o' if is(OrgId) => OrgId,
            b'o' if is(OrderId) => OrderId,
            b'a' if is(AccountId) => AccountId,
            b'a' if is(AmountCents) => AmountCents,
            b'p' if is(Platform) => Platform,
            b'p' if is(PlanId) => PlanId,
            b'p' if is(ProductId) => ProductId,
            b'u' if is(UserId) => UserId,
            b'i' if is(IsFollower) => IsFollower,
            b'q' if is(Quantity) => Quantity,
            b'b' if is(BuyerCity) => BuyerCity,
            b'h' if is(HomeCity) => HomeCity,
            _ => return None,
        };
        // The opening and closing quotes.
        self.i += field.name().len() + 2;
        Some(field)
    }

    /// An integer's digits: no leading zero, no fraction or exponent (those go to
    /// the general parser), at most 19 digits so it fits a `u64`.
    fn digits(&mut self) -> Option<u64> {
        let start = self.i;
        let len = self.s[start..].iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > 19 || (len > 1 && self.s[start] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.s.get(start + len) {
            return None;
        }
        self.i = start + len;
        Some(self.s[start..start + len].iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
    }
}
