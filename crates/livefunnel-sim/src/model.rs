//! Rooms, viewers and their behaviour: what agency operators of 视频号 /
//! 抖音 / 快手 rooms report, turned into rates. Everything here draws from
//! the room's own PRNG, so a room's events do not depend on the other rooms.

use crate::rng::{exp, mix64, Rng};
use crate::scenario::Effects;

/// "No value" for the small index fields of [`Ev`].
pub(crate) const NONE: u8 = u8::MAX;

pub(crate) const KIND_NAMES: [&str; 20] = [
    "session_start",
    "session_end",
    "room_impression",
    "enter",
    "leave",
    "heartbeat",
    "product_impression",
    "product_click",
    "order_created",
    "order_paid",
    "refund",
    "comment",
    "like",
    "share",
    "follow",
    "fan_club_join",
    "reservation_create",
    "reservation_open",
    "product_pin",
    "lucky_bag",
];
pub(crate) const K_SESSION_START: u8 = 0;
pub(crate) const K_SESSION_END: u8 = 1;
pub(crate) const K_ROOM_IMPRESSION: u8 = 2;
pub(crate) const K_ENTER: u8 = 3;
pub(crate) const K_LEAVE: u8 = 4;
pub(crate) const K_HEARTBEAT: u8 = 5;
pub(crate) const K_PRODUCT_IMPRESSION: u8 = 6;
pub(crate) const K_PRODUCT_CLICK: u8 = 7;
pub(crate) const K_ORDER_CREATED: u8 = 8;
pub(crate) const K_ORDER_PAID: u8 = 9;
pub(crate) const K_REFUND: u8 = 10;
pub(crate) const K_COMMENT: u8 = 11;
pub(crate) const K_LIKE: u8 = 12;
pub(crate) const K_SHARE: u8 = 13;
pub(crate) const K_FOLLOW: u8 = 14;
pub(crate) const K_FAN_CLUB_JOIN: u8 = 15;
pub(crate) const K_RESERVATION_CREATE: u8 = 16;
pub(crate) const K_RESERVATION_OPEN: u8 = 17;
pub(crate) const K_PRODUCT_PIN: u8 = 18;
pub(crate) const K_LUCKY_BAG: u8 = 19;

pub(crate) fn is_viewer_kind(k: u8) -> bool {
    !matches!(k, K_SESSION_START | K_SESSION_END | K_PRODUCT_PIN | K_LUCKY_BAG)
}

/// Contract §1.3, in the same order as `livefunnel_core::Source`.
pub(crate) const SOURCE_NAMES: [&str; 16] = [
    "private_group",
    "moments",
    "official_account",
    "wecom",
    "share_link",
    "reservation",
    "recommend_feed",
    "live_square",
    "follow_feed",
    "short_video",
    "search",
    "profile_shop",
    "nearby",
    "paid_boost",
    "paid_ads",
    "other",
];
/// The platforms' own channel labels (`source_raw`).
pub(crate) const SOURCE_RAW: [&str; 16] = [
    "社群",
    "朋友圈",
    "公众号",
    "企微1v1",
    "好友分享",
    "预约提醒",
    "推荐",
    "直播广场",
    "关注",
    "短视频引流",
    "搜索",
    "主页橱窗",
    "同城",
    "加热",
    "千川广告",
    "其他",
];
pub(crate) const S_SHARE_LINK: u8 = 4;
const S_RESERVATION: u8 = 5;
pub(crate) const S_FOLLOW_FEED: u8 = 8;
pub(crate) const S_PROFILE_SHOP: u8 = 11;
pub(crate) const S_PAID_BOOST: u8 = 13;
pub(crate) const S_PAID_ADS: u8 = 14;

/// Private sources drawn for ordinary private arrivals (share links also come from shares).
const PRIVATE_PICK: [u8; 5] = [0, 1, 2, 3, 4];
const PRIVATE_WEIGHTS: [u32; 5] = [35, 20, 10, 15, 20];
const PUBLIC_PICK: [u8; 7] = [6, 7, 8, 9, 10, 11, 12];
const PUBLIC_WEIGHTS: [u32; 7] = [45, 15, 10, 12, 6, 7, 5];

pub(crate) fn source_class(s: u8) -> Class {
    match s {
        0..=5 => Class::Private,
        13 | 14 => Class::Paid,
        _ => Class::Public,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Private,
    Public,
    Paid,
}

pub(crate) const CITIES: [&str; 16] = [
    "杭州", "广州", "深圳", "上海", "北京", "成都", "武汉", "南京", "苏州", "西安", "重庆", "长沙", "郑州",
    "临沂", "义乌", "泉州",
];

const ORGS: [&str; 4] = ["org-xingmang", "org-qianfan", "org-lanhai", "org-jinqiao"];
const BRANDS: [&str; 8] = ["beauty", "tea", "snacks", "apparel", "home", "baby", "jewelry", "health"];

/// One event to be emitted. Strings are derived from the room at serialization.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ev {
    pub ts: i64,
    pub room: u32,
    pub user: u32,
    pub order: u32,
    /// `amount_cents`, or -1 when absent.
    pub amount: i64,
    pub kind: u8,
    pub source: u8,
    /// 0 = none, k = `plan-<room>-k`.
    pub plan: u8,
    pub follower: bool,
    pub product: u8,
    /// 0 = absent.
    pub qty: u8,
    pub city: u8,
}

impl Ev {
    pub(crate) fn new(ts: i64, room: u32, kind: u8) -> Ev {
        Ev {
            ts,
            room,
            user: 0,
            order: 0,
            amount: -1,
            kind,
            source: NONE,
            plan: 0,
            follower: false,
            product: NONE,
            qty: 0,
            city: NONE,
        }
    }
}

/// Who arrives, decided by the room's arrival process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    pub source: u8,
    pub plan: u8,
    /// A reservation reminder opened first (`reservation_open`).
    pub reservation: bool,
    /// Shown in a feed first (`room_impression`).
    pub impression: bool,
    /// Enters after the impression / reminder (else only the impression or reminder).
    pub enters: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Product {
    pub price_cents: i64,
}

/// A paid boost plan (加热 / 流量券 / 随心推).
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub start: i64,
    pub end: i64,
    pub rate: f64,
    pub click_mult: f64,
    pub comment_mult: f64,
    pub conv_mult: f64,
}

/// What the simulator pushes while planning: events and later arrivals.
pub(crate) trait Sink {
    fn event(&mut self, ev: Ev);
    fn arrival(&mut self, ts: i64, room: u32, a: Arrival);
}

pub(crate) struct Room {
    pub idx: u32,
    /// `room-NNNN`: the room's number is `idx + 1`.
    pub id: String,
    pub session_id: String,
    pub org: &'static str,
    pub account: String,
    pub platform: &'static str,
    pub home_city: u8,
    /// The room's behaviour; draws here are the same whatever the scenarios.
    pub rng: Rng,
    /// Scenario decisions only, so a scenario changes nothing but its effect.
    pub scn: Rng,
    /// Delivery delays, duplicates and bad messages of this room.
    pub delivery: Rng,
    /// Scenario times are absolute here.
    pub fx: Effects,
    salt: u64,
    pub start: i64,
    pub end: i64,
    /// Private-domain-led (私域主导) or public-led.
    pub private_led: bool,
    /// Private arrivals per second at the base level, `audience` scale included.
    pub base: f64,
    /// Public enters per private enter, early and once the room has ramped up.
    pub_ratio_start: f64,
    pub_ratio_end: f64,
    pub_delay_ms: i64,
    pub_ramp_ms: i64,
    /// Private enters per second, smoothed: what pulls public traffic in.
    priv_pull: f64,
    /// Private enters planned since the last tick.
    pub priv_new: u32,
    pub ctr: f64,
    /// Target view→pay conversion of the room.
    pub conv: f64,
    pub out_of_city: f64,
    ads: bool,
    pub products: Vec<Product>,
    /// (from, product index) of regular and flash pins, sorted by time.
    pub pins: Vec<(i64, u8)>,
    pub lucky: Vec<i64>,
    pub flash: Vec<(i64, u8)>,
    pub plans: Vec<Plan>,
    pub next_event: u64,
    pub next_user: u32,
    pub next_order: u32,
}

pub(crate) const SEC: i64 = 1_000;
pub(crate) const MIN: i64 = 60_000;

/// Public traffic stays near its starting ratio this long.
const PUB_HOLD: i64 = 4 * MIN;

/// Smoothing of the private pull: `exp(-1 s / 90 s)`, precomputed so no libm is involved.
const PULL_DECAY: f64 = 0.988_950_389_293_922_3;

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Room {
    /// Draws room `idx`'s profile and broadcast schedule; `fx` times are
    /// offsets from the room's start.
    pub(crate) fn new(
        seed: u64,
        idx: u32,
        n_orgs: usize,
        start_ms: i64,
        duration_ms: i64,
        fx: Effects,
    ) -> Room {
        let stream = |salt: u64| Rng::new(mix64(seed ^ mix64(salt ^ (u64::from(idx) << 20))));
        let mut rng = stream(0x524F_4F4D);
        let id = format!("room-{:04}", idx + 1);
        let org_i = (mix64(seed ^ u64::from(idx)) % n_orgs as u64) as usize;
        let org = ORGS[org_i];
        let account =
            format!("acct-{}-{}", &org[4..], BRANDS[(org_i * 2 + rng.below(2) as usize) % BRANDS.len()]);
        let platform = match rng.weighted(&[50, 30, 15, 5]) {
            0 => "wechat_channels",
            1 => "douyin",
            2 => "kuaishou",
            _ => "taobao",
        };
        let private_led = rng.chance(if platform == "wechat_channels" { 0.7 } else { 0.25 });
        let home_city = rng.below(CITIES.len() as u64) as u8;

        // Staggered starts over the first minutes, a short gap at the end.
        let stagger = rng.range(0, (duration_ms / 10).min(3 * MIN) + 1);
        let gap = rng.range(0, (duration_ms / 20).min(2 * MIN) + 1);
        let start = start_ms + stagger;
        let end = (start_ms + duration_ms - gap).max(start + MIN);
        let len = end - start;
        let (y, m, d) = civil_from_days(start.div_euclid(86_400_000));
        let session_id = format!("{id}-{y:04}{m:02}{d:02}-1");

        // Every arrival rate derives from `base`; scaling it after the draw
        // keeps the room's draws the same (and scale 1 the exact same bytes).
        let base = rng.log_uniform(0.006, 0.09) * fx.audience_scale;
        // About 1:1 early; 80–90 % public once public-led rooms take off.
        let pub_ratio_start = rng.uniform(0.6, 1.0);
        let pub_ratio_end = if private_led { rng.uniform(0.4, 0.9) } else { rng.uniform(2.5, 5.5) };
        let pub_delay_ms = rng.range(15 * SEC, 45 * SEC);
        let pub_ramp_ms = rng.range(6 * MIN, 12 * MIN);
        let ctr = rng.uniform(0.12, 0.3);
        let conv = if private_led { rng.uniform(0.085, 0.115) } else { rng.uniform(0.007, 0.0095) };
        let out_of_city = if private_led { rng.uniform(0.25, 0.5) } else { rng.uniform(0.7, 0.9) };
        let ads = platform != "wechat_channels" && !private_led && rng.chance(0.6);

        // Catalogue: 10–30 products, two of them flash-sale (秒杀) items.
        let n_products = 10 + rng.below(21) as usize;
        let mut products = Vec::with_capacity(n_products);
        for i in 0..n_products {
            if i + 2 >= n_products {
                let p = [2990, 4990, 6990, 9900][rng.below(4) as usize];
                products.push(Product { price_cents: p });
            } else {
                let yuan = exp(crate::rng::ln(183.0) + 0.45 * rng.normal()).clamp(19.0, 1999.0) as i64;
                products.push(Product { price_cents: ((yuan / 10) * 10 + 9) * 100 });
            }
        }
        let regular = (n_products - 2) as u64;

        // Operator schedule: regular pins rotate every 1.5–4 min; flash sales at
        // minutes 10, 18 and 30; lucky bags at minutes 5 and 20.
        let mut flash = Vec::new();
        for (k, minute) in [10, 18, 30].into_iter().enumerate() {
            let t = start + minute * MIN;
            if t < end - 2 * MIN {
                flash.push((t, (n_products - 2 + k % 2) as u8));
            }
        }
        let mut pins = Vec::new();
        let mut t = start + rng.range(20 * SEC, 90 * SEC);
        while t < end - MIN {
            let in_flash = flash.iter().any(|&(f, _)| t >= f && t < f + 2 * MIN);
            if !in_flash {
                pins.push((t, rng.below(regular) as u8));
            }
            t += rng.range(90 * SEC, 240 * SEC);
        }
        pins.extend(flash.iter().copied());
        pins.sort_unstable();
        let lucky: Vec<i64> =
            [5, 20].into_iter().map(|m| start + m * MIN).filter(|&t| t < end - MIN).collect();

        let mut plans = Vec::new();
        if len > 8 * MIN && rng.chance(0.7) {
            for _ in 0..1 + rng.below(3) {
                let s = start + rng.range(2 * MIN, len - 6 * MIN);
                let e = (s + rng.range(3 * MIN, 8 * MIN)).min(end - MIN);
                plans.push(Plan {
                    start: s,
                    end: e,
                    // A burst: 60–180 % on top of the room's usual enters.
                    rate: 0.8 * base * (1.0 + pub_ratio_end) * rng.uniform(0.6, 1.8),
                    click_mult: rng.uniform(0.3, 1.6),
                    comment_mult: rng.uniform(0.3, 1.6),
                    conv_mult: rng.uniform(0.3, 1.3),
                });
            }
        }
        let salt = rng.next_u64();
        let fx = Effects {
            gpm_drop_at: fx.gpm_drop_at.map(|t| start + t),
            cliff_at: fx.cliff_at.map(|t| start + t),
            stall_at: fx.stall_at.map(|t| start + t),
            ..fx
        };
        Room {
            idx,
            id,
            session_id,
            org,
            account,
            platform,
            home_city,
            rng,
            scn: stream(0x5343_454E),
            delivery: stream(0x4445_4C49_5645_5259),
            fx,
            salt,
            start,
            end,
            private_led,
            base,
            pub_ratio_start,
            pub_ratio_end,
            pub_delay_ms,
            pub_ramp_ms,
            priv_pull: 0.0,
            priv_new: 0,
            ctr,
            conv,
            out_of_city,
            ads,
            products,
            pins,
            lucky,
            flash,
            plans,
            next_event: 1,
            next_user: 0,
            next_order: 0,
        }
    }

    /// Public enters per private enter once the room has ramped up.
    pub(crate) fn pub_ratio_end(&self) -> f64 {
        self.pub_ratio_end
    }

    /// Whether paid ads (千川) bring viewers in all along.
    pub(crate) fn has_ads(&self) -> bool {
        self.ads
    }

    /// A pseudonymous 48-bit user id for viewer number `user` of this room.
    pub(crate) fn user_hash(&self, user: u32) -> u64 {
        mix64(self.salt ^ u64::from(user)) & 0xFFFF_FFFF_FFFF
    }

    /// At `start`: session_start, the operator's schedule, session_end and the
    /// reservation reminders (预约提醒), many in the first minutes.
    pub(crate) fn open(&mut self, sink: &mut impl Sink) {
        let mut ev = Ev::new(self.start, self.idx, K_SESSION_START);
        ev.city = self.home_city;
        sink.event(ev);
        for &(t, p) in &self.pins {
            let mut ev = Ev::new(t, self.idx, K_PRODUCT_PIN);
            ev.product = p;
            sink.event(ev);
        }
        for &t in &self.lucky {
            sink.event(Ev::new(t, self.idx, K_LUCKY_BAG));
        }
        sink.event(Ev::new(self.end, self.idx, K_SESSION_END));
        let len = self.end - self.start;
        let mean = self.base * self.rng.uniform(300.0, 800.0);
        let reservations = self.rng.poisson(mean);
        for _ in 0..reservations {
            let d = (self.rng.exponential(75_000.0) as i64).min(len / 3);
            let enters = self.rng.chance(0.85);
            sink.arrival(
                self.start + 1_500 + d,
                self.idx,
                Arrival { source: S_RESERVATION, plan: 0, reservation: true, impression: false, enters },
            );
        }
    }

    /// Whether arrivals continue after `t` (ticks every second until 30 s before the end).
    pub(crate) fn ticks_after(&self, t: i64) -> bool {
        t + SEC < self.end - 30 * SEC
    }

    /// One second of arrivals starting at `t`.
    pub(crate) fn tick(&mut self, t: i64, sink: &mut impl Sink) {
        let rel = (t - self.start) as f64;
        let lucky_boost = if self.lucky.iter().any(|&l| t >= l && t < l + 3 * MIN) { 1.5 } else { 1.0 };
        let priv_rate = self.base * (0.8 + 1.5 * exp(-rel / 300_000.0));
        // Private viewers pull public traffic in: the platform recommends a room
        // as its early audience engages, so public arrivals follow the recent
        // private ones (floored, so a quiet minute does not switch them off).
        self.priv_pull = self.priv_pull * PULL_DECAY + f64::from(self.priv_new) * (1.0 - PULL_DECAY);
        self.priv_new = 0;
        let pub_rate = if t - self.start < self.pub_delay_ms {
            0.0
        } else {
            // The platform takes a few minutes to judge the room before it ramps up.
            let x = ((t - self.start - PUB_HOLD) as f64 / self.pub_ramp_ms as f64).clamp(0.0, 1.0);
            let ratio = self.pub_ratio_start + (self.pub_ratio_end - self.pub_ratio_start) * x;
            ratio * self.priv_pull.max(0.6 * self.base) * lucky_boost
        };
        for _ in 0..self.rng.poisson(priv_rate) {
            let s = PRIVATE_PICK[self.rng.weighted(&PRIVATE_WEIGHTS)];
            let at = t + self.rng.range(0, SEC);
            sink.arrival(
                at,
                self.idx,
                Arrival { source: s, plan: 0, reservation: false, impression: false, enters: true },
            );
        }
        // Public traffic is seen in a feed first: impressions ≫ enters.
        let impressions = self.rng.poisson(pub_rate / self.ctr);
        for _ in 0..impressions {
            let s = PUBLIC_PICK[self.rng.weighted(&PUBLIC_WEIGHTS)];
            let enters = self.rng.chance(self.ctr);
            let at = t + self.rng.range(0, SEC);
            sink.arrival(
                at,
                self.idx,
                Arrival { source: s, plan: 0, reservation: false, impression: true, enters },
            );
        }
        if self.ads {
            for _ in 0..self.rng.poisson(0.25 * self.base / self.ctr) {
                let enters = self.rng.chance(self.ctr);
                let at = t + self.rng.range(0, SEC);
                let a = Arrival { source: S_PAID_ADS, plan: 0, reservation: false, impression: true, enters };
                sink.arrival(at, self.idx, a);
            }
        }
        for k in 0..self.plans.len() {
            let (s, e, rate) = (self.plans[k].start, self.plans[k].end, self.plans[k].rate);
            if t >= s && t < e {
                let ctr = (self.ctr * 1.3).min(0.5);
                for _ in 0..self.rng.poisson(rate / ctr) {
                    let enters = self.rng.chance(ctr);
                    let at = t + self.rng.range(0, SEC);
                    let a = Arrival {
                        source: S_PAID_BOOST,
                        plan: k as u8 + 1,
                        reservation: false,
                        impression: true,
                        enters,
                    };
                    sink.arrival(at, self.idx, a);
                }
            }
        }
    }
}
