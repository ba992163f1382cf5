//! Serialization of simulated events to the JSON of contract §1, and the
//! deliberately broken variants used for `malformed_share`.

use crate::model::{Ev, Room, KIND_NAMES, NONE, SOURCE_NAMES, SOURCE_RAW};
use crate::model::{CITIES, K_ENTER, K_ORDER_PAID, K_SESSION_START};

/// How a message is broken (0 = not at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Break {
    None,
    /// Cut after this many bytes (at a char boundary), so the JSON is invalid.
    Truncate(u32),
    /// `,}` at the end: invalid JSON.
    TrailingComma,
    /// A required field left out (0 = ts, 1 = session_id, 2 = user_id or room_id).
    Omit(u8),
    /// A `type` that is not in §1.2.
    UnknownType(u8),
    /// `ts` as a string.
    TsString,
    /// `platform` not in its list.
    BadPlatform,
    /// `user_id` empty (viewer events) or `room_id` empty.
    EmptyId,
    /// Negative `amount_cents` (order_paid / refund only).
    NegativeAmount,
}

const UNKNOWN_TYPES: [&str; 4] = ["gift", "Enter", "live_gift_send", "coupon_claim"];

fn push_str_escaped(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                let hex = b"0123456789abcdef";
                out.push(hex[(b >> 4) as usize]);
                out.push(hex[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn key(out: &mut Vec<u8>, k: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

fn str_field(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, k);
    push_str_escaped(out, v);
}

fn int_field(out: &mut Vec<u8>, k: &str, v: i64) {
    key(out, k);
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

fn push_int(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// Appends one message (no newline).
pub(crate) fn write_event(out: &mut Vec<u8>, room: &Room, ev: &Ev, id: u64, brk: Break) {
    let start = out.len();
    out.extend_from_slice(b"{\"event_id\":\"");
    out.extend_from_slice(room.id.as_bytes());
    out.push(b'-');
    push_int(out, id);
    out.push(b'"');

    match brk {
        Break::UnknownType(i) => str_field(out, "type", UNKNOWN_TYPES[i as usize % UNKNOWN_TYPES.len()]),
        _ => str_field(out, "type", KIND_NAMES[ev.kind as usize]),
    }
    match brk {
        Break::Omit(0) => {}
        Break::TsString => {
            key(out, "ts");
            out.push(b'"');
            push_int(out, ev.ts as u64);
            out.push(b'"');
        }
        _ => int_field(out, "ts", ev.ts),
    }
    let viewer = crate::model::is_viewer_kind(ev.kind);
    match brk {
        Break::EmptyId if !viewer => str_field(out, "room_id", ""),
        Break::Omit(2) if !viewer => {}
        _ => str_field(out, "room_id", &room.id),
    }
    if brk != Break::Omit(1) {
        str_field(out, "session_id", &room.session_id);
    }
    str_field(out, "org_id", room.org);
    str_field(out, "account_id", &room.account);
    str_field(out, "platform", if brk == Break::BadPlatform { "wechat" } else { room.platform });
    if viewer {
        match brk {
            Break::EmptyId => str_field(out, "user_id", ""),
            Break::Omit(2) => {}
            _ => {
                key(out, "user_id");
                out.extend_from_slice(b"\"u");
                let h = room.user_hash(ev.user);
                let hex = b"0123456789abcdef";
                for i in (0..12).rev() {
                    out.push(hex[((h >> (i * 4)) & 15) as usize]);
                }
                out.push(b'"');
            }
        }
    }
    if ev.source != NONE {
        str_field(out, "source", SOURCE_NAMES[ev.source as usize]);
        if ev.kind == K_ENTER {
            str_field(out, "source_raw", SOURCE_RAW[ev.source as usize]);
        }
    }
    if ev.plan != 0 {
        key(out, "plan_id");
        out.extend_from_slice(b"\"plan-");
        out.extend_from_slice(room.id.as_bytes());
        out.push(b'-');
        push_int(out, u64::from(ev.plan));
        out.push(b'"');
    }
    if ev.follower {
        out.extend_from_slice(b",\"is_follower\":true");
    }
    if ev.product != NONE {
        key(out, "product_id");
        out.push(b'"');
        out.extend_from_slice(room.id.as_bytes());
        out.extend_from_slice(b"-p");
        if ev.product < 9 {
            out.push(b'0');
        }
        push_int(out, u64::from(ev.product) + 1);
        out.push(b'"');
    }
    if ev.order != 0 {
        key(out, "order_id");
        out.push(b'"');
        out.extend_from_slice(room.id.as_bytes());
        out.extend_from_slice(b"-o");
        push_int(out, u64::from(ev.order));
        out.push(b'"');
    }
    if ev.amount >= 0 {
        int_field(out, "amount_cents", if brk == Break::NegativeAmount { -ev.amount - 1 } else { ev.amount });
    }
    if ev.qty > 0 {
        int_field(out, "quantity", i64::from(ev.qty));
    }
    if ev.city != NONE {
        let name = CITIES[ev.city as usize];
        if ev.kind == K_ORDER_PAID {
            str_field(out, "buyer_city", name);
        } else if ev.kind == K_SESSION_START {
            str_field(out, "home_city", name);
        }
    }
    out.push(b'}');

    match brk {
        Break::TrailingComma => {
            out.pop();
            out.extend_from_slice(b",}");
        }
        Break::Truncate(n) => {
            let len = out.len() - start;
            let mut cut = start + (n as usize % (len - 2)) + 1;
            while cut > start + 1 && (out[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            out.truncate(cut);
        }
        _ => {}
    }
}
