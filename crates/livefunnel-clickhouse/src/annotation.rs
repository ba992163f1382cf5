//! Operator actions and broadcast boundaries, stored for Grafana annotations (§5).

use livefunnel_core::{Event, EventType};

/// One row of the `annotations` table: a `product_pin`, `lucky_bag`,
/// `session_start` or `session_end` event, with its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub org_id: String,
    pub room_id: String,
    pub session_id: String,
    /// [`livefunnel_core::Platform::as_str`].
    pub platform: &'static str,
    /// The event type, [`EventType::as_str`].
    pub kind: &'static str,
    pub ts_ms: i64,
    pub event_id: String,
    pub product_id: Option<String>,
    /// What Grafana shows, e.g. `product pin: sku-42`.
    pub text: String,
}

impl Annotation {
    /// Whether events of this type become annotations.
    pub fn is_annotated(kind: EventType) -> bool {
        matches!(
            kind,
            EventType::ProductPin | EventType::LuckyBag | EventType::SessionStart | EventType::SessionEnd
        )
    }

    /// The annotation of an accepted event, if its type is annotated.
    pub fn from_event(ev: &Event<'_>) -> Option<Annotation> {
        if !Annotation::is_annotated(ev.kind) {
            return None;
        }
        let product_id = ev.product_id.as_deref().map(str::to_string);
        let text = match (ev.kind, product_id.as_deref()) {
            (EventType::ProductPin, Some(p)) => format!("product pin: {p}"),
            (EventType::ProductPin, None) => "product pin".to_string(),
            (EventType::LuckyBag, Some(p)) => format!("lucky bag: {p}"),
            (EventType::LuckyBag, None) => "lucky bag".to_string(),
            (EventType::SessionStart, _) => format!("session start: {}", ev.session_id),
            _ => format!("session end: {}", ev.session_id),
        };
        Some(Annotation {
            org_id: ev.org_id().to_string(),
            room_id: ev.room_id.to_string(),
            session_id: ev.session_id.to_string(),
            platform: ev.platform().as_str(),
            kind: ev.kind.as_str(),
            ts_ms: ev.ts,
            event_id: ev.event_id.to_string(),
            product_id,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn only_operator_and_session_events_are_annotated() {
        let mut ev = Event::minimal("e1", EventType::ProductPin, 1_767_225_600_123, "r1", "s1");
        ev.product_id = Some(Cow::Borrowed("sku-42"));
        let a = Annotation::from_event(&ev).unwrap();
        assert_eq!(a.kind, "product_pin");
        assert_eq!(a.org_id, "default");
        assert_eq!(a.platform, "other");
        assert_eq!(a.product_id.as_deref(), Some("sku-42"));
        assert_eq!(a.text, "product pin: sku-42");
        assert_eq!(a.ts_ms, 1_767_225_600_123);

        let end = Event::minimal("e2", EventType::SessionEnd, 5, "r1", "s1");
        assert_eq!(Annotation::from_event(&end).unwrap().text, "session end: s1");
        let enter = Event::minimal("e3", EventType::Enter, 5, "r1", "s1");
        assert_eq!(Annotation::from_event(&enter), None);
    }
}
