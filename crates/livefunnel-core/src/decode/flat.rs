//! The fast path of parsing: one pass over the bytes of the flat objects producers
//! send (known keys, strings without escapes, integers, `true`, `false`, `null`).
//! Anything else, valid or not, makes it give up, and [`super::parse::parse`] reads
//! the message again from the start: so every rejection, and every detail of it,
//! still comes from one place. What it captures is what that parser captures for the
//! same bytes (`tests::the_flat_parser_agrees_with_the_general_one`).

use std::borrow::Cow;

use super::{Field, Fields, Raw};
use crate::json::special;

/// Fills `fields` from `text` if it is a flat object of the simple kind; `false`
/// otherwise, with `fields` left partly filled (the caller starts afresh).
pub(super) fn parse_flat<'a>(text: &'a str, fields: &mut Fields<'a>) -> bool {
    let mut p = Flat { s: text.as_bytes(), text, i: 0 };
    p.object(fields).is_some()
}

struct Flat<'a> {
    s: &'a [u8],
    text: &'a str,
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

    fn object(&mut self, fields: &mut Fields<'a>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
        } else {
            loop {
                self.ws();
                let field = self.key()?;
                self.eat(b':')?;
                let value = self.value()?;
                let slot = &mut fields[field as usize];
                if slot.is_some() {
                    return None;
                }
                *slot = Some(value);
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
        }
        self.ws();
        (self.i == self.s.len()).then_some(())
    }

    /// A string without escapes or control characters, borrowed from the input.
    fn string(&mut self) -> Option<&'a str> {
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let end = special(self.s, start);
        if self.s.get(end) != Some(&b'"') {
            return None;
        }
        self.i = end + 1;
        // Both ends are ASCII bytes of valid UTF-8: char boundaries.
        self.text.get(start..end)
    }

    fn value(&mut self) -> Option<Raw<'a>> {
        self.ws();
        match *self.s.get(self.i)? {
            b'"' => self.string().map(|s| Raw::Str(Cow::Borrowed(s))),
            b't' => self.word(b"true", Raw::Bool(true)),
            b'f' => self.word(b"false", Raw::Bool(false)),
            b'n' => self.word(b"null", Raw::Null),
            b'-' => {
                self.i += 1;
                // As serde_json: a negative integer is an `i64`; `-0` is a float there.
                let m = self.digits()?;
                (m != 0 && m <= i64::MAX as u64).then(|| Raw::I64(-(m as i64)))
            }
            b'0'..=b'9' => self.digits().map(Raw::U64),
            _ => None,
        }
    }

    fn word(&mut self, w: &[u8], v: Raw<'a>) -> Option<Raw<'a>> {
        self.s[self.i..].starts_with(w).then(|| {
            self.i += w.len();
            v
        })
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
