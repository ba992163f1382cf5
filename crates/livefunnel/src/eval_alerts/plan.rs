//! Which rooms a simulated evaluation runs: normal rooms of every kind and size, and
//! incident cells (a scenario at a known onset in rooms scaled to a volume). Each room
//! is a one-room simulation of its own seed, so any room can be run again alone with
//! `livefunnel sim --rooms 1 --seed SEED --duration D --scenario ...` (printed per room
//! in the JSON results).

use livefunnel_sim::{RoomProfile, RoomScenario, RoomSet, Scenario, SimParams, Simulator};

const MIN: i64 = 60_000;

/// splitmix64: the plan's own deterministic draws.
pub(crate) struct Draws(u64);

impl Draws {
    pub(crate) fn new(seed: u64, stream: u64) -> Draws {
        Draws(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.unit()).exp()
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo) as u64) as i64
    }
}

/// What goes wrong in an incident cell's rooms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Incident {
    GpmDrop { lost: f64 },
    SalesStall,
    ViewerCliff,
}

impl Incident {
    fn scenario(self, at_ms: i64) -> Scenario {
        match self {
            Incident::GpmDrop { lost } => Scenario::GpmDrop { at_ms, lost },
            Incident::SalesStall => Scenario::SalesStall { at_ms },
            Incident::ViewerCliff => Scenario::ViewerCliff { at_ms },
        }
    }
}

/// What a cell's rooms are scaled to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    /// Organic paid orders per minute in the steady state.
    OrdersPerMinute(f64),
    /// Viewers online in the steady state.
    Online(f64),
}

/// A set of rooms with the same incident and size.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub name: String,
    pub incident: Incident,
    pub size: Size,
    /// Below the per-room floor: the rooms must stay silent.
    pub below_floor: bool,
}

fn fmt_size(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Every incident cell of the protocol, in report order.
pub fn all_cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    let sizes = [1.0, 3.0, 10.0, 30.0, 100.0];
    for (tag, incident) in [
        ("gpm_drop_50", Incident::GpmDrop { lost: 0.5 }),
        ("gpm_drop_80", Incident::GpmDrop { lost: 0.8 }),
        ("sales_stall", Incident::SalesStall),
    ] {
        for s in sizes {
            cells.push(Cell {
                name: format!("{tag}@{}opm", fmt_size(s)),
                incident,
                size: Size::OrdersPerMinute(s),
                below_floor: false,
            });
        }
    }
    for online in [50.0, 100.0, 150.0, 300.0, 1000.0] {
        cells.push(Cell {
            name: format!("viewer_cliff@{}online", fmt_size(online)),
            incident: Incident::ViewerCliff,
            size: Size::Online(online),
            below_floor: false,
        });
    }
    for (tag, incident) in
        [("gpm_drop_80", Incident::GpmDrop { lost: 0.8 }), ("sales_stall", Incident::SalesStall)]
    {
        cells.push(Cell {
            name: format!("below_floor_{tag}@0.3opm"),
            incident,
            size: Size::OrdersPerMinute(0.3),
            below_floor: true,
        });
    }
    cells
}

/// `all`, `none`, or cell names separated by commas.
pub fn select_cells(spec: &str) -> Result<Vec<Cell>, String> {
    let all = all_cells();
    match spec.trim() {
        "all" => return Ok(all),
        "none" | "" => return Ok(Vec::new()),
        _ => {}
    }
    spec.split(',')
        .map(|name| {
            let name = name.trim();
            all.iter().find(|c| c.name == name).cloned().ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
                format!("no cell `{name}`: use all, none, or some of {}", names.join(", "))
            })
        })
        .collect()
}

/// One room to simulate.
#[derive(Debug, Clone)]
pub struct RoomSpec {
    /// `normal-007`, `gpm_drop_50@30opm-3`.
    pub label: String,
    /// The cell's index in the plan's cells; `None`: a normal room.
    pub cell: Option<usize>,
    pub params: SimParams,
    pub profile: RoomProfile,
    pub scale: f64,
    /// What it was scaled to (orders per minute or viewers online).
    pub target: f64,
    /// Event time of the incident's onset.
    pub onset_ms: Option<i64>,
}

fn one_room(seed: u64, duration_ms: i64) -> SimParams {
    SimParams { rooms: 1, duration_ms, seed, ..SimParams::default() }
}

/// The room of `seed` (unscaled) and a seed for the next candidate.
fn candidate(d: &mut Draws, duration_ms: i64) -> (u64, RoomProfile) {
    let seed = d.next_u64() >> 1;
    (seed, Simulator::new(one_room(seed, duration_ms)).room_profile(0))
}

/// A room of `seed` scaled so that its steady state has `target` (orders a minute or
/// viewers online), with `incident` at `onset_after_ms` after its start.
fn scaled(
    label: String,
    seed: u64,
    duration_ms: i64,
    unscaled: &RoomProfile,
    size: Size,
    incident: Option<(Incident, i64)>,
    cell: Option<usize>,
) -> RoomSpec {
    let (target, per_unit) = match size {
        Size::OrdersPerMinute(t) => (t, unscaled.organic_orders_per_minute),
        Size::Online(t) => (t, unscaled.online),
    };
    let scale = (target / per_unit)
        .clamp(*livefunnel_sim::AUDIENCE_SCALES.start(), *livefunnel_sim::AUDIENCE_SCALES.end());
    let mut params = one_room(seed, duration_ms);
    let room = RoomSet::Ranges(vec![(1, 1)]);
    params.scenarios.push(RoomScenario { rooms: room.clone(), scenario: Scenario::Audience { scale } });
    if let Some((i, at)) = incident {
        params.scenarios.push(RoomScenario { rooms: room, scenario: i.scenario(at) });
    }
    let profile = Simulator::new(params.clone()).room_profile(0);
    let onset_ms = incident.map(|(_, at)| profile.start_ms + at);
    RoomSpec { label, cell, params, profile, scale, target, onset_ms }
}

/// Normal rooms: 30 % at the simulator's own size, 40 % private-led rooms scaled to
/// 0.5–40 organic orders a minute and 30 % public-led ones scaled to 0.5–5 (log-uniform),
/// whole sessions of `hours`, warm-up included.
pub fn normal_rooms(n: u32, hours: f64, seed: u64) -> Vec<RoomSpec> {
    let duration_ms = (hours * 3_600_000.0) as i64;
    let mut d = Draws::new(seed, 1);
    let mut out = Vec::new();
    for i in 0..n {
        let label = format!("normal-{:03}", i + 1);
        let share = f64::from(i) / f64::from(n.max(1));
        let (want_private, range) = if share < 0.3 {
            (None, None)
        } else if share < 0.7 {
            (Some(true), Some((0.5, 40.0)))
        } else {
            (Some(false), Some((0.5, 5.0)))
        };
        let (seed, unscaled) = loop {
            let (s, p) = candidate(&mut d, duration_ms);
            if want_private.is_none_or(|w| w == p.private_led) {
                break (s, p);
            }
        };
        match range {
            None => {
                let params = one_room(seed, duration_ms);
                let target = unscaled.organic_orders_per_minute;
                out.push(RoomSpec {
                    label,
                    cell: None,
                    params,
                    profile: unscaled,
                    scale: 1.0,
                    target,
                    onset_ms: None,
                });
            }
            Some((lo, hi)) => {
                let target = d.log_uniform(lo, hi);
                let size = Size::OrdersPerMinute(target);
                out.push(scaled(label, seed, duration_ms, &unscaled, size, None, None));
            }
        }
    }
    out
}

/// `per_cell` rooms of each cell. Order incidents run in private-led rooms (a public-led
/// room selling 100 orders a minute would have 10,000 enters a minute); cliffs alternate
/// private-led and public-led rooms. Onsets are at least 30 minutes after the rooms arm
/// (about minute 53 at 10 orders a minute, 60 at 3, 85 at 1): 85–105 minutes into the
/// session from 10 orders a minute on, 150–180 below; cliffs at 60–90 minutes. The
/// rooms are watched for 30 minutes after the onset (45 below 10 orders a minute).
pub fn incident_rooms(cells: &[Cell], per_cell: u32, seed: u64) -> Vec<RoomSpec> {
    let mut out = Vec::new();
    for (ci, cell) in cells.iter().enumerate() {
        let mut d = Draws::new(seed, 100 + ci as u64);
        for k in 0..per_cell {
            let (onset_min, watch_min) = match (cell.incident, cell.size) {
                (Incident::ViewerCliff, _) => (d.range(60, 91), 35),
                (_, Size::OrdersPerMinute(s)) if s >= 10.0 => (d.range(85, 106), 30),
                _ => (d.range(150, 181), 45),
            };
            let duration_ms = (onset_min + watch_min) * MIN;
            let want_private = match cell.incident {
                Incident::ViewerCliff => k % 2 == 0,
                _ => true,
            };
            let (seed, unscaled) = loop {
                let (s, p) = candidate(&mut d, duration_ms);
                if p.private_led == want_private {
                    break (s, p);
                }
            };
            // `at` counts from the room's own start, which a stagger of up to 3 minutes delays.
            let at = onset_min * MIN;
            let label = format!("{}-{}", cell.name, k + 1);
            out.push(scaled(
                label,
                seed,
                duration_ms,
                &unscaled,
                cell.size,
                Some((cell.incident, at)),
                Some(ci),
            ));
        }
    }
    out
}

impl RoomSpec {
    /// The `livefunnel sim` arguments that generate this room's events.
    pub fn sim_command(&self) -> String {
        let mut s = format!(
            "livefunnel sim --rooms 1 --seed {} --duration {}m",
            self.params.seed,
            self.params.duration_ms / MIN
        );
        for rs in &self.params.scenarios {
            let spec = match rs.scenario {
                Scenario::Audience { scale } => format!("audience:scale={scale}"),
                Scenario::GpmDrop { at_ms, lost } => format!("gpm_drop:at={}m:share={lost}", at_ms / MIN),
                Scenario::SalesStall { at_ms } => format!("sales_stall:at={}m", at_ms / MIN),
                Scenario::ViewerCliff { at_ms } => format!("viewer_cliff:at={}m", at_ms / MIN),
                _ => continue,
            };
            s.push_str(&format!(" --scenario {spec}"));
        }
        s
    }
}
