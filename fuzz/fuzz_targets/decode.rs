//! `cargo +nightly fuzz run decode`: `decode` must never panic, and whatever
//! it accepts must satisfy the limits of contract §1.1.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = livefunnel_core::decode(data) {
        let within = |s: &str, limit: usize| !s.is_empty() && s.len() <= limit;
        assert!(within(&ev.event_id, 128) && within(&ev.room_id, 128) && within(&ev.session_id, 128));
        assert!(ev.org_id.as_deref().is_none_or(|s| within(s, 64)));
        assert!(ev.user_id.as_deref().is_none_or(|s| within(s, 128)));
        assert!(ev.amount_cents.is_none_or(|a| a >= 0));
        assert!(ev.quantity.is_none_or(|q| q >= 1));
        assert!(!ev.kind.is_viewer_event() || ev.user_id.is_some());
        // Decoding is a pure function of the bytes.
        assert_eq!(livefunnel_core::decode(data).as_ref(), Ok(&ev));
    }
});
