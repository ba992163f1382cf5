//! Result rows (contract §3) and their JSONL form (contract §6).
//!
//! Every measure is computed here from a row's own counts, so a metric's formula
//! lives in exactly one place: [`Counts::ratios`].

use std::sync::{Arc, OnceLock};

use crate::event::Platform;

/// The additive and distinct counts behind one result row. Ratios derive from these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    pub room_impressions: u64,
    pub watch_pv: u64,
    pub watch_uv: u64,
    pub online_end: u64,
    pub online_peak: u64,
    /// Presence inside the row's range, milliseconds summed over viewers.
    pub watch_ms: i128,
    /// Distinct viewers online at any instant of the range.
    pub present_uv: u64,
    pub stranger_watch_ms: i128,
    pub stranger_present_uv: u64,
    pub product_impressions: u64,
    pub product_clicks: u64,
    pub product_click_uv: u64,
    pub orders_created: u64,
    pub orders_paid: u64,
    pub buyer_uv: u64,
    pub items_sold: i64,
    pub gmv_cents: i64,
    pub refund_cents: i64,
    pub comments: u64,
    pub comment_uv: u64,
    pub likes: u64,
    pub shares: u64,
    pub follows: u64,
    pub fan_club_joins: u64,
    pub reservation_creates: u64,
    pub reservation_opens: u64,
    pub watch_uv_private: u64,
    pub watch_uv_public: u64,
    pub watch_uv_paid: u64,
    pub gmv_cents_private: i64,
    pub gmv_cents_public: i64,
    pub gmv_cents_paid: i64,
    pub orders_paid_known_city: u64,
    pub orders_paid_out_of_city: u64,
}

/// The ratio measures of §3. `None` when the denominator is 0 (JSON `null`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ratios {
    pub watch_seconds: f64,
    pub avg_watch_seconds: Option<f64>,
    pub stranger_avg_watch_seconds: Option<f64>,
    pub gpm: Option<f64>,
    pub uv_value: Option<f64>,
    pub impression_to_watch_rate: Option<f64>,
    pub product_click_rate: Option<f64>,
    pub click_to_pay_rate: Option<f64>,
    pub watch_to_pay_rate: Option<f64>,
    pub order_pay_rate: Option<f64>,
    pub aov: Option<f64>,
    pub comment_rate: Option<f64>,
    pub public_private_ratio: Option<f64>,
    pub out_of_city_order_share: Option<f64>,
    pub refund_rate: Option<f64>,
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    if den == 0.0 {
        None
    } else {
        Some(num / den)
    }
}

impl Counts {
    /// Contract §3, formula by formula, exactly as written there.
    pub fn ratios(&self) -> Ratios {
        let gmv = self.gmv_cents as f64;
        let watch_seconds = self.watch_ms as f64 / 1000.0;
        let stranger_watch_seconds = self.stranger_watch_ms as f64 / 1000.0;
        let watch_uv = self.watch_uv as f64;
        let den = |d: u64| d as f64;
        Ratios {
            watch_seconds,
            avg_watch_seconds: ratio(watch_seconds, den(self.present_uv)),
            stranger_avg_watch_seconds: ratio(stranger_watch_seconds, den(self.stranger_present_uv)),
            gpm: (self.watch_pv != 0).then(|| gmv / 100.0 / self.watch_pv as f64 * 1000.0),
            uv_value: (self.watch_uv != 0).then(|| gmv / 100.0 / watch_uv),
            impression_to_watch_rate: ratio(self.watch_pv as f64, den(self.room_impressions)),
            product_click_rate: ratio(self.product_click_uv as f64, watch_uv),
            click_to_pay_rate: ratio(self.buyer_uv as f64, den(self.product_click_uv)),
            watch_to_pay_rate: ratio(self.buyer_uv as f64, watch_uv),
            order_pay_rate: ratio(self.orders_paid as f64, den(self.orders_created)),
            aov: (self.orders_paid != 0).then(|| gmv / 100.0 / self.orders_paid as f64),
            comment_rate: ratio(self.comment_uv as f64, watch_uv),
            public_private_ratio: ratio(
                (self.watch_uv_public + self.watch_uv_paid) as f64,
                den(self.watch_uv_private),
            ),
            out_of_city_order_share: ratio(
                self.orders_paid_out_of_city as f64,
                den(self.orders_paid_known_city),
            ),
            refund_rate: ratio(self.refund_cents as f64, gmv),
        }
    }
}

/// One measure's value, as it is written out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    UInt(u64),
    Int(i64),
    Float(f64),
    /// A ratio: `None` when its denominator is 0.
    Ratio(Option<f64>),
    /// An optional time (`session_end_ts`, `peak_online_ts`): `None` is `null`.
    OptInt(Option<i64>),
}

/// How many measures a window or session row carries.
pub const MEASURE_COUNT: usize = 45;

/// Measures of a breakdown row, of either kind.
pub const BREAKDOWN_MEASURE_COUNT: usize = 8;

impl Counts {
    /// Every measure of §3 by its column name, in the contract's order: the one list
    /// that the JSON rows (and every sink after them) are written from.
    pub fn measures(&self) -> [(&'static str, Measure); MEASURE_COUNT] {
        use Measure::{Float, Int, Ratio, UInt};
        let r = self.ratios();
        [
            ("room_impressions", UInt(self.room_impressions)),
            ("watch_pv", UInt(self.watch_pv)),
            ("watch_uv", UInt(self.watch_uv)),
            ("online_end", UInt(self.online_end)),
            ("online_peak", UInt(self.online_peak)),
            ("watch_seconds", Float(r.watch_seconds)),
            ("avg_watch_seconds", Ratio(r.avg_watch_seconds)),
            ("stranger_avg_watch_seconds", Ratio(r.stranger_avg_watch_seconds)),
            ("product_impressions", UInt(self.product_impressions)),
            ("product_clicks", UInt(self.product_clicks)),
            ("product_click_uv", UInt(self.product_click_uv)),
            ("orders_created", UInt(self.orders_created)),
            ("orders_paid", UInt(self.orders_paid)),
            ("buyer_uv", UInt(self.buyer_uv)),
            ("items_sold", Int(self.items_sold)),
            ("gmv_cents", Int(self.gmv_cents)),
            ("refund_cents", Int(self.refund_cents)),
            ("comments", UInt(self.comments)),
            ("comment_uv", UInt(self.comment_uv)),
            ("likes", UInt(self.likes)),
            ("shares", UInt(self.shares)),
            ("follows", UInt(self.follows)),
            ("fan_club_joins", UInt(self.fan_club_joins)),
            ("reservation_creates", UInt(self.reservation_creates)),
            ("reservation_opens", UInt(self.reservation_opens)),
            ("watch_uv_private", UInt(self.watch_uv_private)),
            ("watch_uv_public", UInt(self.watch_uv_public)),
            ("watch_uv_paid", UInt(self.watch_uv_paid)),
            ("gmv_cents_private", Int(self.gmv_cents_private)),
            ("gmv_cents_public", Int(self.gmv_cents_public)),
            ("gmv_cents_paid", Int(self.gmv_cents_paid)),
            ("orders_paid_known_city", UInt(self.orders_paid_known_city)),
            ("orders_paid_out_of_city", UInt(self.orders_paid_out_of_city)),
            ("gpm", Ratio(r.gpm)),
            ("uv_value", Ratio(r.uv_value)),
            ("impression_to_watch_rate", Ratio(r.impression_to_watch_rate)),
            ("product_click_rate", Ratio(r.product_click_rate)),
            ("click_to_pay_rate", Ratio(r.click_to_pay_rate)),
            ("watch_to_pay_rate", Ratio(r.watch_to_pay_rate)),
            ("order_pay_rate", Ratio(r.order_pay_rate)),
            ("aov", Ratio(r.aov)),
            ("comment_rate", Ratio(r.comment_rate)),
            ("public_private_ratio", Ratio(r.public_private_ratio)),
            ("out_of_city_order_share", Ratio(r.out_of_city_order_share)),
            ("refund_rate", Ratio(r.refund_rate)),
        ]
    }
}

/// Identity columns of a row (§3): from the room's accepted event with the
/// largest `ts` below `window_end`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub session_id: Arc<str>,
    pub org_id: Arc<str>,
    pub account_id: Option<Arc<str>>,
    pub platform: Platform,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowRow {
    pub room_id: Arc<str>,
    pub window: Arc<str>,
    pub window_start: i64,
    pub window_end: i64,
    pub version: u64,
    pub identity: Identity,
    pub counts: Counts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BreakdownKind {
    Source,
    Plan,
    Product,
}

impl BreakdownKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakdownKind::Source => "source",
            BreakdownKind::Plan => "plan",
            BreakdownKind::Product => "product",
        }
    }

    /// The dimension column's name.
    pub fn column(self) -> &'static str {
        match self {
            BreakdownKind::Source => "source",
            BreakdownKind::Plan => "plan_id",
            BreakdownKind::Product => "product_id",
        }
    }
}

/// The measures of a breakdown row; which of them a row carries depends on its kind (§3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BreakdownCounts {
    pub watch_pv: u64,
    pub watch_uv: u64,
    pub product_impressions: u64,
    pub product_clicks: u64,
    pub product_click_uv: u64,
    pub orders_created: u64,
    pub orders_paid: u64,
    pub buyer_uv: u64,
    pub items_sold: i64,
    pub gmv_cents: i64,
    pub comments: u64,
}

impl BreakdownCounts {
    /// The measures a breakdown row of `kind` carries (§3), by column name, in order.
    pub fn measures(&self, kind: BreakdownKind) -> [(&'static str, Measure); BREAKDOWN_MEASURE_COUNT] {
        use Measure::{Int, UInt};
        match kind {
            BreakdownKind::Source | BreakdownKind::Plan => [
                ("watch_pv", UInt(self.watch_pv)),
                ("watch_uv", UInt(self.watch_uv)),
                ("product_clicks", UInt(self.product_clicks)),
                ("product_click_uv", UInt(self.product_click_uv)),
                ("orders_paid", UInt(self.orders_paid)),
                ("buyer_uv", UInt(self.buyer_uv)),
                ("gmv_cents", Int(self.gmv_cents)),
                ("comments", UInt(self.comments)),
            ],
            BreakdownKind::Product => [
                ("product_impressions", UInt(self.product_impressions)),
                ("product_clicks", UInt(self.product_clicks)),
                ("product_click_uv", UInt(self.product_click_uv)),
                ("orders_created", UInt(self.orders_created)),
                ("orders_paid", UInt(self.orders_paid)),
                ("buyer_uv", UInt(self.buyer_uv)),
                ("items_sold", Int(self.items_sold)),
                ("gmv_cents", Int(self.gmv_cents)),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakdownRow {
    pub kind: BreakdownKind,
    pub room_id: Arc<str>,
    pub window: Arc<str>,
    pub window_start: i64,
    pub window_end: i64,
    pub version: u64,
    pub org_id: Arc<str>,
    /// The source name, `plan_id` or `product_id`.
    pub key: Arc<str>,
    pub counts: BreakdownCounts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub room_id: Arc<str>,
    pub session_id: Arc<str>,
    pub version: u64,
    pub org_id: Arc<str>,
    pub account_id: Option<Arc<str>>,
    pub platform: Platform,
    pub session_start_ts: i64,
    pub session_end_ts: Option<i64>,
    pub duration_ms: i64,
    pub peak_online: u64,
    pub peak_online_ts: Option<i64>,
    pub counts: Counts,
    pub first30m: Counts,
    /// Ended by `session_idle_timeout` without an accepted `session_end` (§2).
    pub ended_by_timeout: bool,
    pub cold_start: bool,
}

// Rows live briefly on their way to a sink; boxing the larger variant would cost an
// allocation per session row for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Window(WindowRow),
    Breakdown(BreakdownRow),
    Session(SessionRow),
}

impl Row {
    /// The `kind` field of §6.
    pub fn kind(&self) -> &'static str {
        match self {
            Row::Window(_) => "window",
            Row::Breakdown(b) => b.kind.as_str(),
            Row::Session(_) => "session",
        }
    }

    pub fn version(&self) -> u64 {
        match self {
            Row::Window(r) => r.version,
            Row::Breakdown(r) => r.version,
            Row::Session(r) => r.version,
        }
    }

    /// Appends the row as one JSON object and a newline (contract §6).
    pub fn write_jsonl(&self, out: &mut Vec<u8>) {
        let mut w = JsonWriter::new(out);
        w.str_field("kind", self.kind());
        match self {
            Row::Window(r) => {
                w.str_field("room_id", &r.room_id);
                w.str_field("window", &r.window);
                w.measure_field("window_start", Measure::Int(r.window_start));
                w.measure_field("window_end", Measure::Int(r.window_end));
                w.measure_field("version", Measure::Int(r.version as i64));
                w.str_field("session_id", &r.identity.session_id);
                w.str_field("org_id", &r.identity.org_id);
                w.opt_str_field("account_id", r.identity.account_id.as_deref());
                w.str_field("platform", r.identity.platform.as_str());
                write_measures(&mut w, "", &r.counts);
            }
            Row::Breakdown(r) => {
                w.str_field("room_id", &r.room_id);
                w.str_field("window", &r.window);
                w.measure_field("window_start", Measure::Int(r.window_start));
                w.measure_field("window_end", Measure::Int(r.window_end));
                w.measure_field("version", Measure::Int(r.version as i64));
                w.str_field("org_id", &r.org_id);
                w.str_field(r.kind.column(), &r.key);
                for ((_, value), key) in r.counts.measures(r.kind).into_iter().zip(breakdown_keys(r.kind)) {
                    w.raw_key(key);
                    w.raw_measure(value);
                }
            }
            Row::Session(r) => {
                w.str_field("room_id", &r.room_id);
                w.str_field("window", "session");
                w.str_field("session_id", &r.session_id);
                w.measure_field("version", Measure::Int(r.version as i64));
                w.str_field("org_id", &r.org_id);
                w.opt_str_field("account_id", r.account_id.as_deref());
                w.str_field("platform", r.platform.as_str());
                w.measure_field("session_start_ts", Measure::Int(r.session_start_ts));
                w.measure_field("session_end_ts", Measure::OptInt(r.session_end_ts));
                w.measure_field("duration_s", Measure::Float(r.duration_ms as f64 / 1000.0));
                w.measure_field("peak_online", Measure::UInt(r.peak_online));
                w.measure_field("peak_online_ts", Measure::OptInt(r.peak_online_ts));
                write_measures(&mut w, "", &r.counts);
                write_measures(&mut w, "first30m_", &r.first30m);
                w.bool_field("ended_by_timeout", r.ended_by_timeout);
                w.bool_field("cold_start", r.cold_start);
            }
        }
        w.finish();
    }
}

fn write_measures(w: &mut JsonWriter<'_>, prefix: &str, c: &Counts) {
    for ((_, value), key) in c.measures().into_iter().zip(measure_keys(prefix)) {
        w.raw_key(key);
        w.raw_measure(value);
    }
}

/// `"<name>":` of the measures of a breakdown kind, built once.
fn breakdown_keys(kind: BreakdownKind) -> &'static [Vec<u8>] {
    static SOURCE_OR_PLAN: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static PRODUCT: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let cell = match kind {
        BreakdownKind::Source | BreakdownKind::Plan => &SOURCE_OR_PLAN,
        BreakdownKind::Product => &PRODUCT,
    };
    cell.get_or_init(|| quoted(BreakdownCounts::default().measures(kind).iter().map(|(name, _)| ("", *name))))
}

fn quoted<'a>(names: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<Vec<u8>> {
    names.map(|(prefix, name)| format!("\"{prefix}{name}\":").into_bytes()).collect()
}

/// `"<prefix><name>":` of every measure, built once per prefix (the rows use two): a
/// window row writes 45 of them, and one copy each is cheaper than three.
fn measure_keys(prefix: &str) -> &'static [Vec<u8>] {
    static PLAIN: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static FIRST30M: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let cell = match prefix {
        "" => &PLAIN,
        "first30m_" => &FIRST30M,
        _ => unreachable!("a measure prefix the rows do not use: {prefix}"),
    };
    cell.get_or_init(|| quoted(Counts::default().measures().iter().map(|(name, _)| (prefix, *name))))
}

/// A minimal JSON object writer: fixed field order, shortest round-trip floats.
struct JsonWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> JsonWriter<'a> {
        out.push(b'{');
        JsonWriter { out, first: true }
    }

    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A key already quoted and followed by its colon.
    fn raw_key(&mut self, key: &[u8]) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(key);
    }

    fn str_field(&mut self, name: &str, v: &str) {
        self.key(name);
        write_json_string(self.out, v);
    }

    fn opt_str_field(&mut self, name: &str, v: Option<&str>) {
        self.key(name);
        match v {
            Some(v) => write_json_string(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    fn measure_field(&mut self, name: &str, v: Measure) {
        self.key(name);
        self.raw_measure(v);
    }

    fn raw_measure(&mut self, v: Measure) {
        match v {
            Measure::UInt(v) => self.raw_uint(v),
            Measure::Int(v) => self.raw_int(v),
            Measure::Float(v) => self.raw_float(v),
            Measure::Ratio(v) => self.raw_opt_float(v),
            Measure::OptInt(Some(v)) => self.raw_int(v),
            Measure::OptInt(None) => self.out.extend_from_slice(b"null"),
        }
    }

    fn bool_field(&mut self, name: &str, v: bool) {
        self.key(name);
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
    }

    fn raw_int(&mut self, v: i64) {
        match u8::try_from(v) {
            Ok(d @ 0..=9) => self.out.push(b'0' + d),
            _ => self.out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        }
    }

    fn raw_uint(&mut self, v: u64) {
        // Most counts of a row are 0 or a single digit.
        match u8::try_from(v) {
            Ok(d @ 0..=9) => self.out.push(b'0' + d),
            _ => self.out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        }
    }

    fn raw_float(&mut self, v: f64) {
        write_float(self.out, v);
    }

    fn raw_opt_float(&mut self, v: Option<f64>) {
        match v {
            Some(v) => self.raw_float(v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    fn finish(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// Writes `s` as a JSON string literal.
/// A float as `ryu` writes it (shortest round trip), `null` if not finite: ratios never
/// divide by zero, but an overflowed sum could still be huge, and the output stays valid
/// JSON whatever happens. About half of a row's floats are whole numbers (a zero rate,
/// whole seconds), which `ryu` writes as the integer and `.0`: written so directly.
fn write_float(out: &mut Vec<u8>, v: f64) {
    // Below 1e15 every whole f64 is exact as an i64, and `ryu` writes it without an
    // exponent; -0.0 keeps its sign there, so it takes the general path.
    // (`as` saturates and maps NaN to 0, which then compares unequal.)
    let i = v as i64;
    if i as f64 == v && i.unsigned_abs() < 1_000_000_000_000_000 && !(i == 0 && v.is_sign_negative()) {
        match u8::try_from(i) {
            Ok(d @ 0..=9) => out.push(b'0' + d),
            _ => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        }
        out.extend_from_slice(b".0");
    } else if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        let i = crate::json::special(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else { break };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
        start = i + 1;
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_null_on_zero_denominators() {
        let r = Counts::default().ratios();
        assert_eq!(r.watch_seconds, 0.0);
        for v in [
            r.avg_watch_seconds,
            r.stranger_avg_watch_seconds,
            r.gpm,
            r.uv_value,
            r.impression_to_watch_rate,
            r.product_click_rate,
            r.click_to_pay_rate,
            r.watch_to_pay_rate,
            r.order_pay_rate,
            r.aov,
            r.comment_rate,
            r.public_private_ratio,
            r.out_of_city_order_share,
            r.refund_rate,
        ] {
            assert_eq!(v, None);
        }
    }

    #[test]
    fn ratios_follow_the_contract_formulas() {
        let c = Counts {
            room_impressions: 400,
            watch_pv: 200,
            watch_uv: 150,
            watch_ms: 90_500,
            present_uv: 10,
            stranger_watch_ms: 3_000,
            stranger_present_uv: 4,
            product_click_uv: 30,
            orders_created: 12,
            orders_paid: 15,
            buyer_uv: 9,
            gmv_cents: 123_456,
            refund_cents: 10_000,
            comment_uv: 21,
            watch_uv_private: 50,
            watch_uv_public: 80,
            watch_uv_paid: 40,
            orders_paid_known_city: 8,
            orders_paid_out_of_city: 3,
            ..Counts::default()
        };
        let r = c.ratios();
        assert_eq!(r.watch_seconds, 90.5);
        assert_eq!(r.avg_watch_seconds, Some(9.05));
        assert_eq!(r.stranger_avg_watch_seconds, Some(0.75));
        assert_eq!(r.gpm, Some(123_456.0 / 100.0 / 200.0 * 1000.0));
        assert_eq!(r.uv_value, Some(1234.56 / 150.0));
        assert_eq!(r.impression_to_watch_rate, Some(0.5));
        assert_eq!(r.product_click_rate, Some(0.2));
        assert_eq!(r.click_to_pay_rate, Some(0.3));
        assert_eq!(r.watch_to_pay_rate, Some(0.06));
        // order_pay_rate may exceed 1 inside a window: not clamped.
        assert_eq!(r.order_pay_rate, Some(1.25));
        assert_eq!(r.aov, Some(1234.56 / 15.0));
        assert_eq!(r.comment_rate, Some(0.14));
        assert_eq!(r.public_private_ratio, Some(2.4));
        assert_eq!(r.out_of_city_order_share, Some(0.375));
        assert_eq!(r.refund_rate, Some(10_000.0 / 123_456.0));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        write_json_string(&mut out, "a\"b\\c\nd\u{1}é直播");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\nd\\u0001é直播\"");
    }

    proptest::proptest! {
        /// Any text, whatever mix of quotes, backslashes, control characters and
        /// multi-byte characters, reads back as itself, with every control character
        /// escaped and `\\u00xx` for those without a short escape.
        #[test]
        fn json_strings_read_back_as_themselves(s in "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é直播]{0,40}") {
            let mut out = Vec::new();
            write_json_string(&mut out, &s);
            proptest::prop_assert!(out.iter().all(|&b| b >= 0x20), "{:?}", out);
            let back: String = serde_json::from_slice(&out).expect("valid json");
            proptest::prop_assert_eq!(&back, &s);
            let short = |c: char| matches!(c, '"' | '\\' | '\n' | '\r' | '\t');
            let expected_len = 2 + s.chars().map(|c| if short(c) { 2 } else if (c as u32) < 0x20 { 6 } else { c.len_utf8() }).sum::<usize>();
            proptest::prop_assert_eq!(out.len(), expected_len);
        }

        #[test]
        fn floats_are_written_as_ryu_writes_them(
            v in proptest::prop_oneof![
                proptest::num::f64::ANY,
                proptest::strategy::Strategy::prop_map(-2e15f64..2e15, f64::trunc),
                proptest::strategy::Strategy::prop_map(-20i64..20, |i| i as f64),
                proptest::strategy::Just(-0.0),
                proptest::strategy::Just(1e15),
                proptest::strategy::Just(999_999_999_999_999.0),
            ]
        ) {
            let mut out = Vec::new();
            write_float(&mut out, v);
            let want = if v.is_finite() { ryu::Buffer::new().format_finite(v).to_string() } else { "null".into() };
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
