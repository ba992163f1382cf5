//! The input event of contract §1: one decoded, validated event.
//!
//! Strings borrow from the input bytes when they contain no escape, so decoding
//! a typical event allocates nothing.

use std::borrow::Cow;

/// Contract §1.2. `as_str` gives the exact wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum EventType {
    SessionStart,
    SessionEnd,
    RoomImpression,
    Enter,
    Leave,
    Heartbeat,
    ProductImpression,
    ProductClick,
    OrderCreated,
    OrderPaid,
    Refund,
    Comment,
    Like,
    Share,
    Follow,
    FanClubJoin,
    ReservationCreate,
    ReservationOpen,
    ProductPin,
    LuckyBag,
}

impl EventType {
    pub const ALL: [EventType; 20] = [
        EventType::SessionStart,
        EventType::SessionEnd,
        EventType::RoomImpression,
        EventType::Enter,
        EventType::Leave,
        EventType::Heartbeat,
        EventType::ProductImpression,
        EventType::ProductClick,
        EventType::OrderCreated,
        EventType::OrderPaid,
        EventType::Refund,
        EventType::Comment,
        EventType::Like,
        EventType::Share,
        EventType::Follow,
        EventType::FanClubJoin,
        EventType::ReservationCreate,
        EventType::ReservationOpen,
        EventType::ProductPin,
        EventType::LuckyBag,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionStart => "session_start",
            EventType::SessionEnd => "session_end",
            EventType::RoomImpression => "room_impression",
            EventType::Enter => "enter",
            EventType::Leave => "leave",
            EventType::Heartbeat => "heartbeat",
            EventType::ProductImpression => "product_impression",
            EventType::ProductClick => "product_click",
            EventType::OrderCreated => "order_created",
            EventType::OrderPaid => "order_paid",
            EventType::Refund => "refund",
            EventType::Comment => "comment",
            EventType::Like => "like",
            EventType::Share => "share",
            EventType::Follow => "follow",
            EventType::FanClubJoin => "fan_club_join",
            EventType::ReservationCreate => "reservation_create",
            EventType::ReservationOpen => "reservation_open",
            EventType::ProductPin => "product_pin",
            EventType::LuckyBag => "lucky_bag",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Operator actions and session markers carry no viewer (§1.1 `user_id`).
    pub fn is_viewer_event(self) -> bool {
        !matches!(
            self,
            EventType::SessionStart | EventType::SessionEnd | EventType::ProductPin | EventType::LuckyBag
        )
    }

    /// Types on which `source` is required (§1.1).
    pub fn requires_source(self) -> bool {
        matches!(
            self,
            EventType::Enter
                | EventType::RoomImpression
                | EventType::ReservationCreate
                | EventType::ReservationOpen
        )
    }

    /// §1.1 (v1.1): not `refund`, which platforms often send without it.
    pub fn requires_product_id(self) -> bool {
        matches!(
            self,
            EventType::ProductImpression
                | EventType::ProductClick
                | EventType::OrderCreated
                | EventType::OrderPaid
                | EventType::ProductPin
        )
    }

    pub fn requires_order_id(self) -> bool {
        matches!(self, EventType::OrderCreated | EventType::OrderPaid | EventType::Refund)
    }

    pub fn requires_amount(self) -> bool {
        matches!(self, EventType::OrderPaid | EventType::Refund)
    }
}

/// Contract §1.3 traffic sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Source {
    PrivateGroup,
    Moments,
    OfficialAccount,
    Wecom,
    ShareLink,
    Reservation,
    RecommendFeed,
    LiveSquare,
    FollowFeed,
    ShortVideo,
    Search,
    ProfileShop,
    Nearby,
    PaidBoost,
    PaidAds,
    Other,
}

/// The class of a source: private domain (私域), public (公域) or paid (付费).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceClass {
    Private,
    Public,
    Paid,
}

impl Source {
    pub const COUNT: usize = 16;
    pub const ALL: [Source; 16] = [
        Source::PrivateGroup,
        Source::Moments,
        Source::OfficialAccount,
        Source::Wecom,
        Source::ShareLink,
        Source::Reservation,
        Source::RecommendFeed,
        Source::LiveSquare,
        Source::FollowFeed,
        Source::ShortVideo,
        Source::Search,
        Source::ProfileShop,
        Source::Nearby,
        Source::PaidBoost,
        Source::PaidAds,
        Source::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::PrivateGroup => "private_group",
            Source::Moments => "moments",
            Source::OfficialAccount => "official_account",
            Source::Wecom => "wecom",
            Source::ShareLink => "share_link",
            Source::Reservation => "reservation",
            Source::RecommendFeed => "recommend_feed",
            Source::LiveSquare => "live_square",
            Source::FollowFeed => "follow_feed",
            Source::ShortVideo => "short_video",
            Source::Search => "search",
            Source::ProfileShop => "profile_shop",
            Source::Nearby => "nearby",
            Source::PaidBoost => "paid_boost",
            Source::PaidAds => "paid_ads",
            Source::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn class(self) -> SourceClass {
        match self {
            Source::PrivateGroup
            | Source::Moments
            | Source::OfficialAccount
            | Source::Wecom
            | Source::ShareLink
            | Source::Reservation => SourceClass::Private,
            Source::PaidBoost | Source::PaidAds => SourceClass::Paid,
            _ => SourceClass::Public,
        }
    }
}

/// Contract §1.1 `platform`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Platform {
    WechatChannels,
    Douyin,
    Kuaishou,
    Taobao,
    #[default]
    Other,
}

impl Platform {
    pub const ALL: [Platform; 5] =
        [Platform::WechatChannels, Platform::Douyin, Platform::Kuaishou, Platform::Taobao, Platform::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::WechatChannels => "wechat_channels",
            Platform::Douyin => "douyin",
            Platform::Kuaishou => "kuaishou",
            Platform::Taobao => "taobao",
            Platform::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A validated event. Optional fields that were absent or `null` are `None`;
/// defaults of §1.1 (`org_id` = `default`, `platform` = `other`, `quantity` = 1)
/// are applied by the accessors, not stored, so the decoder stays a pure mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub kind: EventType,
    pub ts: i64,
    pub room_id: Cow<'a, str>,
    pub session_id: Cow<'a, str>,
    pub org_id: Option<Cow<'a, str>>,
    pub account_id: Option<Cow<'a, str>>,
    pub platform: Option<Platform>,
    pub user_id: Option<Cow<'a, str>>,
    pub source: Option<Source>,
    pub source_raw: Option<Cow<'a, str>>,
    pub plan_id: Option<Cow<'a, str>>,
    pub is_follower: bool,
    pub product_id: Option<Cow<'a, str>>,
    pub order_id: Option<Cow<'a, str>>,
    pub amount_cents: Option<i64>,
    pub quantity: Option<i64>,
    pub buyer_city: Option<Cow<'a, str>>,
    pub home_city: Option<Cow<'a, str>>,
}

impl Event<'_> {
    pub fn org_id(&self) -> &str {
        self.org_id.as_deref().unwrap_or("default")
    }

    pub fn platform(&self) -> Platform {
        self.platform.unwrap_or_default()
    }

    pub fn quantity(&self) -> i64 {
        self.quantity.unwrap_or(1)
    }

    pub fn amount_cents(&self) -> i64 {
        self.amount_cents.unwrap_or(0)
    }

    /// A minimal event, for tests and generators: every optional field absent.
    pub fn minimal(
        event_id: &str,
        kind: EventType,
        ts: i64,
        room_id: &str,
        session_id: &str,
    ) -> Event<'static> {
        Event {
            event_id: Cow::Owned(event_id.to_owned()),
            kind,
            ts,
            room_id: Cow::Owned(room_id.to_owned()),
            session_id: Cow::Owned(session_id.to_owned()),
            org_id: None,
            account_id: None,
            platform: None,
            user_id: None,
            source: None,
            source_raw: None,
            plan_id: None,
            is_follower: false,
            product_id: None,
            order_id: None,
            amount_cents: None,
            quantity: None,
            buyer_city: None,
            home_city: None,
        }
    }

    pub fn into_owned(self) -> Event<'static> {
        fn own(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        Event {
            event_id: own(self.event_id),
            kind: self.kind,
            ts: self.ts,
            room_id: own(self.room_id),
            session_id: own(self.session_id),
            org_id: self.org_id.map(own),
            account_id: self.account_id.map(own),
            platform: self.platform,
            user_id: self.user_id.map(own),
            source: self.source,
            source_raw: self.source_raw.map(own),
            plan_id: self.plan_id.map(own),
            is_follower: self.is_follower,
            product_id: self.product_id.map(own),
            order_id: self.order_id.map(own),
            amount_cents: self.amount_cents,
            quantity: self.quantity,
            buyer_city: self.buyer_city.map(own),
            home_city: self.home_city.map(own),
        }
    }
}

/// Why an event was not accepted (contract §1.4), in check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Oversize,
    MalformedJson,
    MissingField,
    UnknownEventType,
    BadField,
    TsOutOfRange,
    TooLate,
    RoomLimit,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Oversize,
        Reason::MalformedJson,
        Reason::MissingField,
        Reason::UnknownEventType,
        Reason::BadField,
        Reason::TsOutOfRange,
        Reason::TooLate,
        Reason::RoomLimit,
    ];

    /// The exact string of §1.4, used in DLQ headers, metrics labels and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Oversize => "oversize",
            Reason::MalformedJson => "malformed_json",
            Reason::MissingField => "missing_field",
            Reason::UnknownEventType => "unknown_event_type",
            Reason::BadField => "bad_field",
            Reason::TsOutOfRange => "ts_out_of_range",
            Reason::TooLate => "too_late",
            Reason::RoomLimit => "room_limit",
        }
    }
}

/// A rejected event: the reason code and a human detail naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}", reason = .reason.as_str())]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Rejection {
        Rejection { reason, detail: detail.into() }
    }
}
