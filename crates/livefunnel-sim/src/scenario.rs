//! Per-room scenarios: what goes wrong in a room, and when, so walls and
//! alerts can be tested against a known cause.
//!
//! A scenario is assigned to a set of rooms by their number, the number in
//! their id: room 1 is `room-0001`. A room's id, profile and stream depend on
//! the seed, the duration and its own number only, never on `rooms` or on the
//! other rooms' scenarios, so `rooms=7` always targets the same room.
//!
//! Spec syntax (`--scenario`):
//! `KIND[:rooms=LIST][:at=DURATION][:share=FRACTION|:scale=F]`, e.g.
//! `gpm_drop:rooms=1-5:at=10m`, `gpm_drop:rooms=3:at=35m:share=0.8`,
//! `viewer_cliff:rooms=7:at=15m`,
//! `malformed:rooms=all:share=0.01`, `audience:rooms=1-4:scale=10`. `LIST` is
//! `all` (the default) or comma-separated room numbers and ranges (`1,3,8-12`,
//! `room-0007`). `at` is measured from the room's own `session_start` and needs
//! a unit (`90s`, `10m`, `1h`, `1500ms`). `scale` (only for `audience`, which
//! needs it) is a number from 0.01 to 1000. For `gpm_drop`, `share` is the
//! share of the orders that are lost, 0.5 unless given.
//!
//! `audience` multiplies the room's arrival rates (private arrivals, hence the
//! public traffic they pull in, ads, boost plans, reservation reminders) by
//! `scale`, and nothing else: conversion, order values, dwell and the schedule
//! stay as they are. The multiplication comes after the room's profile is
//! drawn, so the profile draws are the same whatever the scale, and a room
//! with scale 1 is byte for byte the room without the scenario.

use std::fmt;
use std::str::FromStr;

use livefunnel_core::Duration;

/// What happens in a room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    /// Nothing special; assigning it clears the scenarios assigned before.
    Normal,
    /// From `at_ms` after the room's start, this share of the orders is not
    /// placed (viewers still click): view→pay conversion, hence GPM, falls to
    /// `1 - lost` of what it was. Order values are heavy-tailed (a few orders of
    /// 1,000 yuan and more), so a window's GPM falls by `lost` only on average.
    GpmDrop { at_ms: i64, lost: f64 },
    /// At `at_ms` after the room's start, 40 % of the viewers online leave
    /// within a minute, and 40 % of later arrivals never enter (the room was
    /// cut from the feed): online falls by about 40 % and stays down.
    ViewerCliff { at_ms: i64 },
    /// From `at_ms` after the room's start, no order is created or paid.
    SalesStall { at_ms: i64 },
    /// This share of the room's events is delivered 10–100 s late, and this
    /// share is sent twice (same `event_id`).
    LateAndDuplicates { share: f64 },
    /// This share of the room's messages is bad (invalid JSON, missing
    /// field, unknown type, bad field), on top of its valid events.
    Malformed { share: f64 },
    /// The room's audience is `scale` times as big (within
    /// [`AUDIENCE_SCALES`]): every arrival rate is multiplied, every rate per
    /// viewer stays. For rooms big enough to trip alert volume guards.
    Audience { scale: f64 },
}

impl Scenario {
    /// The spec keyword.
    pub fn kind(&self) -> &'static str {
        match self {
            Scenario::Normal => "normal",
            Scenario::GpmDrop { .. } => "gpm_drop",
            Scenario::ViewerCliff { .. } => "viewer_cliff",
            Scenario::SalesStall { .. } => "sales_stall",
            Scenario::LateAndDuplicates { .. } => "late_and_duplicates",
            Scenario::Malformed { .. } => "malformed",
            Scenario::Audience { .. } => "audience",
        }
    }
}

/// Rooms by number (room 1 is `room-0001`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomSet {
    All,
    /// Inclusive ranges of room numbers, each `lo <= hi`, numbers from 1.
    Ranges(Vec<(u32, u32)>),
}

impl RoomSet {
    /// Whether room number `n` (from 1) is in the set.
    pub fn contains(&self, n: u32) -> bool {
        match self {
            RoomSet::All => true,
            RoomSet::Ranges(r) => r.iter().any(|&(lo, hi)| lo <= n && n <= hi),
        }
    }

    /// The largest room number named, if any.
    pub fn max(&self) -> Option<u32> {
        match self {
            RoomSet::All => None,
            RoomSet::Ranges(r) => r.iter().map(|&(_, hi)| hi).max(),
        }
    }
}

/// A scenario and the rooms it applies to: one `--scenario` flag.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomScenario {
    pub rooms: RoomSet,
    pub scenario: Scenario,
}

impl RoomScenario {
    pub fn all_rooms(scenario: Scenario) -> RoomScenario {
        RoomScenario { rooms: RoomSet::All, scenario }
    }
}

/// The scales `audience` accepts.
pub const AUDIENCE_SCALES: std::ops::RangeInclusive<f64> = 0.01..=1000.0;

/// The expected form of each scenario spec, for error messages and help.
pub const SCENARIO_FORMS: &str = "normal[:rooms=LIST] | gpm_drop[:rooms=LIST]:at=DURATION[:share=LOST] | \
viewer_cliff[:rooms=LIST]:at=DURATION | sales_stall[:rooms=LIST]:at=DURATION | \
late_and_duplicates[:rooms=LIST]:share=FRACTION | malformed[:rooms=LIST]:share=FRACTION | \
audience[:rooms=LIST]:scale=F \
(LIST: all, or room numbers and ranges like 1,3,8-12; DURATION from the room's start, e.g. 10m; \
LOST the share of orders lost, above 0 up to 1, 0.5 by default; \
F multiplies the room's audience, from 0.01 to 1000)";

/// A `--scenario` spec that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioSpecError {
    /// The whole spec as given.
    pub spec: String,
    /// What is wrong, naming the bad part.
    pub problem: String,
    /// The form this kind of spec takes.
    pub expected: String,
}

impl fmt::Display for ScenarioSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario `{}`: {}; expected {}", self.spec, self.problem, self.expected)
    }
}

impl std::error::Error for ScenarioSpecError {}

fn form_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "normal" => "normal[:rooms=LIST], e.g. normal:rooms=3",
        "gpm_drop" => {
            "gpm_drop[:rooms=LIST]:at=DURATION[:share=LOST] (LOST: share of orders lost, above 0 up to 1, \
             0.5 by default), e.g. gpm_drop:rooms=1-5:at=10m"
        }
        "viewer_cliff" => "viewer_cliff[:rooms=LIST]:at=DURATION, e.g. viewer_cliff:rooms=7:at=15m",
        "sales_stall" => "sales_stall[:rooms=LIST]:at=DURATION, e.g. sales_stall:rooms=2,4:at=12m",
        "late_and_duplicates" => {
            "late_and_duplicates[:rooms=LIST]:share=FRACTION, e.g. late_and_duplicates:rooms=3:share=0.05"
        }
        "malformed" => "malformed[:rooms=LIST]:share=FRACTION, e.g. malformed:rooms=all:share=0.01",
        "audience" => "audience[:rooms=LIST]:scale=F (F from 0.01 to 1000), e.g. audience:rooms=1-4:scale=10",
        _ => return None,
    })
}

impl FromStr for RoomScenario {
    type Err = ScenarioSpecError;

    fn from_str(spec: &str) -> Result<RoomScenario, ScenarioSpecError> {
        let mut parts = spec.trim().split(':');
        let kind = parts.next().unwrap_or_default();
        let Some(form) = form_of(kind) else {
            return Err(ScenarioSpecError {
                spec: spec.to_owned(),
                problem: format!("unknown scenario `{kind}`"),
                expected: SCENARIO_FORMS.to_owned(),
            });
        };
        let err =
            |problem: String| ScenarioSpecError { spec: spec.to_owned(), problem, expected: form.to_owned() };
        let (mut rooms, mut at, mut share, mut scale) = (None, None, None, None);
        for part in parts {
            let Some((key, value)) = part.split_once('=') else {
                return Err(err(format!("`{part}` is not key=value")));
            };
            let slot = match key {
                "rooms" => &mut rooms,
                "at" if matches!(kind, "gpm_drop" | "viewer_cliff" | "sales_stall") => &mut at,
                "share" if matches!(kind, "late_and_duplicates" | "malformed" | "gpm_drop") => &mut share,
                "scale" if kind == "audience" => &mut scale,
                _ => {
                    let only = match key {
                        "at" => " (only to gpm_drop, viewer_cliff and sales_stall)",
                        "share" => " (only to gpm_drop, late_and_duplicates and malformed)",
                        "scale" => {
                            " (only to audience: give the scale as a scenario of its own, \
                                    e.g. audience:rooms=1-4:scale=10)"
                        }
                        _ => "",
                    };
                    return Err(err(format!("`{key}=` does not apply to {kind}{only}")));
                }
            };
            if slot.replace(value).is_some() {
                return Err(err(format!("`{key}=` given twice")));
            }
        }
        let rooms = match rooms {
            None => RoomSet::All,
            Some(list) => parse_room_list(list).map_err(|p| err(format!("`rooms={list}`: {p}")))?,
        };
        let at_ms = || -> Result<i64, ScenarioSpecError> {
            let v = at.ok_or_else(|| err("`at=` is missing".to_owned()))?;
            if v.trim().parse::<f64>().is_ok() {
                return Err(err(format!("`at={v}` needs a unit, e.g. at={v}m")));
            }
            parse_duration_ms(v).map_err(|p| err(format!("`at={v}`: {p}")))
        };
        // gpm_drop's share is what is lost: all of it (a stall of paid orders) is allowed,
        // none is not a drop.
        let lost = || -> Result<f64, ScenarioSpecError> {
            let Some(v) = share else { return Ok(0.5) };
            match v.trim().parse::<f64>() {
                Ok(s) if s > 0.0 && s <= 1.0 => Ok(s),
                _ => Err(err(format!("`share={v}` is not a share of orders lost, above 0 up to 1"))),
            }
        };
        let share = || -> Result<f64, ScenarioSpecError> {
            let v = share.ok_or_else(|| err("`share=` is missing".to_owned()))?;
            match v.trim().parse::<f64>() {
                Ok(s) if (0.0..1.0).contains(&s) => Ok(s),
                _ => Err(err(format!("`share={v}` is not a fraction from 0 up to (not including) 1"))),
            }
        };
        let scale = || -> Result<f64, ScenarioSpecError> {
            let v = scale.ok_or_else(|| err("`scale=` is missing".to_owned()))?;
            match v.trim().parse::<f64>() {
                Ok(s) if AUDIENCE_SCALES.contains(&s) => Ok(s),
                _ => Err(err(format!(
                    "`scale={v}` is not a number from 0.01 to 1000 (1 leaves the audience as it is, \
                     10 makes it ten times bigger)"
                ))),
            }
        };
        let scenario = match kind {
            "normal" => Scenario::Normal,
            "gpm_drop" => Scenario::GpmDrop { at_ms: at_ms()?, lost: lost()? },
            "viewer_cliff" => Scenario::ViewerCliff { at_ms: at_ms()? },
            "sales_stall" => Scenario::SalesStall { at_ms: at_ms()? },
            "late_and_duplicates" => Scenario::LateAndDuplicates { share: share()? },
            "audience" => Scenario::Audience { scale: scale()? },
            _ => Scenario::Malformed { share: share()? },
        };
        Ok(RoomScenario { rooms, scenario })
    }
}

fn parse_room_number(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("room-").unwrap_or(s);
    match digits.parse::<u32>() {
        Ok(0) => Err("room numbers start at 1 (room 1 is room-0001)".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a room number")),
    }
}

/// `all`, or comma-separated room numbers and inclusive ranges (`1,3,8-12`).
fn parse_room_list(list: &str) -> Result<RoomSet, String> {
    if list.trim() == "all" {
        return Ok(RoomSet::All);
    }
    let mut ranges = Vec::new();
    for item in list.split(',').map(str::trim) {
        let (lo, hi) = match item.split_once('-').filter(|_| !item.starts_with("room-")) {
            Some((lo, hi)) => (parse_room_number(lo.trim())?, parse_room_number(hi.trim())?),
            None => {
                // `room-0003-room-0005` is not supported; `room-0003` is.
                let n = parse_room_number(item)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(format!("range `{item}` goes down"));
        }
        ranges.push((lo, hi));
    }
    Ok(RoomSet::Ranges(ranges))
}

/// Parses `1500ms`, `90s`, `30m`, `2h` (a bare number is seconds) into milliseconds
/// ([`Duration::parse_or_seconds`]); positive.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let ms = Duration::parse_or_seconds(s)?.as_ms();
    if ms <= 0 {
        return Err(format!("duration `{}` must be positive", s.trim()));
    }
    Ok(ms)
}

/// What the scenarios make of one room, with the stream-wide shares as defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Effects {
    /// Offsets from the room's start.
    pub gpm_drop_at: Option<i64>,
    pub cliff_at: Option<i64>,
    pub stall_at: Option<i64>,
    pub late_share: f64,
    pub duplicate_share: f64,
    pub malformed_share: f64,
    /// What the room's arrival rates are multiplied by (1 without `audience`).
    pub audience_scale: f64,
    /// Share of the orders a `gpm_drop` loses from `gpm_drop_at`.
    pub gpm_drop_lost: f64,
}

impl Effects {
    /// The effects on room number `n` (from 1): every matching scenario in
    /// order, the last one of a kind winning, `normal` clearing the earlier ones.
    /// A scale outside [`AUDIENCE_SCALES`] is clamped into it (NaN is 1).
    pub(crate) fn for_room(p: &crate::SimParams, n: u32) -> Effects {
        let defaults = Effects {
            gpm_drop_at: None,
            cliff_at: None,
            stall_at: None,
            late_share: p.late_share,
            duplicate_share: p.duplicate_share,
            malformed_share: p.malformed_share,
            audience_scale: 1.0,
            gpm_drop_lost: 0.0,
        };
        let mut e = defaults.clone();
        for rs in p.scenarios.iter().filter(|rs| rs.rooms.contains(n)) {
            match rs.scenario {
                Scenario::Normal => e = defaults.clone(),
                Scenario::GpmDrop { at_ms, lost } => {
                    e.gpm_drop_at = Some(at_ms);
                    e.gpm_drop_lost = lost;
                }
                Scenario::ViewerCliff { at_ms } => e.cliff_at = Some(at_ms),
                Scenario::SalesStall { at_ms } => e.stall_at = Some(at_ms),
                Scenario::LateAndDuplicates { share } => {
                    e.late_share = share;
                    e.duplicate_share = share;
                }
                Scenario::Malformed { share } => e.malformed_share = share,
                Scenario::Audience { scale } if scale.is_nan() => e.audience_scale = 1.0,
                Scenario::Audience { scale } => {
                    e.audience_scale = scale.clamp(*AUDIENCE_SCALES.start(), *AUDIENCE_SCALES.end());
                }
            }
        }
        e
    }
}
