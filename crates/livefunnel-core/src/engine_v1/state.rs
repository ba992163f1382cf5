//! Engine state for checkpoints: the whole state of one partition's engine as bytes,
//! and back. The live pipeline writes it every few seconds with the partition's next
//! offset (the file framing is `livefunnel-state`'s); after a crash it restores it
//! and replays the partition from that offset.
//!
//! Layout: `LFES`, the format version (u16 LE), a CRC32 of everything after it (u32
//! LE), then postcard: the configuration the state was shaped by ([`ConfigPrint`]),
//! then the state. Buffers, caches and indexes derived from the rest are not written;
//! they are rebuilt on restore.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::emit::{Scratch, EPOCH_SHIFT};
use super::lifecycle::TimeoutKey;
use super::pane::Ident;
use super::room::Room;
use super::{Engine, EngineStats, Params};
use crate::config::{EngineConfig, TimeMode, WindowSpec};
use crate::row::Identity;

/// Version of the state layout. Bump it on any change to a serialized type: field
/// order, a field's type, an enum's variants (postcard writes variant indexes), the
/// meaning of a value. Version 2 added the user id form to the configuration record;
/// version 1 states are still read (their ids' form was not recorded, so it is not
/// checked). Version 3 (contract v1.1) appends [`Ext`] after the version-2 state, so
/// the older states are still read, with [`Ext::older`] in its place.
pub const STATE_FORMAT_VERSION: u16 = 3;

/// The first format, read for its configuration record without the user id form.
const FORMAT_WITHOUT_USER_ID_FORM: u16 = 1;
/// The last format without [`Ext`].
const FORMAT_WITHOUT_EXT: u16 = 2;

const MAGIC: &[u8; 4] = b"LFES";
const HEADER_LEN: usize = 4 + 2 + 4;

/// Why engine state bytes cannot be restored. No variant is helped by a retry: the
/// bytes or the configuration must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not a livefunnel engine state (bad magic bytes): the checkpoint holds something else; delete the state directory to start over")]
    NotEngineState,
    #[error("engine state format {found} is not readable by this build (it reads formats 1 to {supported}): run the livefunnel version that wrote it, or delete the state directory to start over")]
    Format { found: u16, supported: u16 },
    #[error("engine state is corrupt ({detail}): delete the state directory to start over")]
    Corrupt { detail: String },
    #[error("{}: restore with the same configuration or delete the state directory to start over", .differences.join("; "))]
    ConfigMismatch { differences: Vec<String> },
    #[error("version epoch {requested} is below the engine's epoch {current}: versions would go backwards; keep the epoch counter with the state directory")]
    EpochBackwards { current: u32, requested: u32 },
    #[error("version epoch {requested} does not fit in a version (epoch << 40 | counter holds epochs up to {max})")]
    EpochTooLarge { requested: u32, max: u32 },
}

fn corrupt(detail: impl Into<String>) -> StateError {
    StateError::Corrupt { detail: detail.into() }
}

/// The configuration values that shape the state: restoring under other values would
/// misread it (window indexes, pane width, folded presence, horizons, distinct sets).
/// Values that only steer the future (`idle_grace`, `idle_timeout`, `max_future_skew`,
/// `windows.breakdowns`) may change across a restart. Kept readable, not hashed, so a
/// mismatch can say what differs. The form of the user ids is recorded too: the
/// distinct sets hold ids of that form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ConfigPrint {
    shape: ShapePrint,
    user_id_form: String,
}

/// The values format 1 recorded; postcard writes a nested struct's fields inline, so
/// format 2 is this followed by the user id form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ShapePrint {
    windows: Vec<String>,
    out_of_orderness_ms: i64,
    allowed_lateness_ms: i64,
    presence_timeout_ms: i64,
    session_idle_timeout_ms: i64,
    exact_distinct_limit: u64,
    live: bool,
}

impl ConfigPrint {
    fn of(cfg: &EngineConfig) -> ConfigPrint {
        ConfigPrint {
            shape: ShapePrint {
                windows: cfg.windows.iter().map(WindowSpec::name).collect(),
                out_of_orderness_ms: cfg.out_of_orderness_ms,
                allowed_lateness_ms: cfg.allowed_lateness_ms,
                presence_timeout_ms: cfg.presence_timeout_ms,
                session_idle_timeout_ms: cfg.session_idle_timeout_ms,
                exact_distinct_limit: cfg.exact_distinct_limit as u64,
                live: cfg.mode == TimeMode::Live,
            },
            user_id_form: cfg.user_id_form.clone(),
        }
    }

    /// "checkpoint was taken with X, the config has Y", one per differing value.
    fn differences(&self, now: &ConfigPrint) -> Vec<String> {
        fn ms(v: i64) -> String {
            if v % 1000 == 0 {
                format!("{}s", v / 1000)
            } else {
                format!("{v}ms")
            }
        }
        fn mode(live: bool) -> &'static str {
            if live {
                "live"
            } else {
                "replay"
            }
        }
        let (then_form, now_form) = (self.user_id_form.clone(), now.user_id_form.clone());
        let (this, now) = (&self.shape, &now.shape);
        let mut out = Vec::new();
        let mut diff = |what: &str, then: String, now: String| {
            if then != now {
                out.push(format!("checkpoint was taken with {what} {then}, the config has {now}"));
            }
        };
        diff("windows", format!("[{}]", this.windows.join(", ")), format!("[{}]", now.windows.join(", ")));
        diff("time.out_of_orderness", ms(this.out_of_orderness_ms), ms(now.out_of_orderness_ms));
        diff("time.allowed_lateness", ms(this.allowed_lateness_ms), ms(now.allowed_lateness_ms));
        diff("time.presence_timeout", ms(this.presence_timeout_ms), ms(now.presence_timeout_ms));
        diff("time.session_idle_timeout", ms(this.session_idle_timeout_ms), ms(now.session_idle_timeout_ms));
        diff(
            "limits.exact_distinct_limit",
            this.exact_distinct_limit.to_string(),
            now.exact_distinct_limit.to_string(),
        );
        diff("mode", mode(this.live).to_owned(), mode(now.live).to_owned());
        diff("user ids (privacy.hash_user_ids, privacy.salt)", then_form, now_form);
        out
    }
}

/// The state as written ([`Body`] is the same, as read back: same fields, same order).
#[derive(Serialize)]
struct BodyRef<'a> {
    epoch: u32,
    stats: &'a EngineStats,
    partition_max_ts: i64,
    seq: u64,
    last_input: Option<(i64, i64)>,
    rooms: &'a [Room],
}

#[derive(Deserialize)]
struct Body {
    epoch: u32,
    stats: EngineStats,
    partition_max_ts: i64,
    seq: u64,
    last_input: Option<(i64, i64)>,
    rooms: Vec<Room>,
}

/// What format 3 added (contract v1.1): counters, and per room and session the state
/// of timeouts, wall-clock arrivals and the breakdown key cap. Written after the
/// format-2 state, so that one is read by the same types.
#[derive(Serialize, Deserialize)]
struct Ext {
    room_limit: u64,
    sessions_timed_out: u64,
    breakdown_overflow: [u64; 3],
    rooms: Vec<RoomExt>,
}

#[derive(Serialize, Deserialize)]
struct RoomExt {
    arrival_wall: i64,
    wall_retire_key: Option<i64>,
    /// Sorted, so the same state always gives the same bytes.
    plans: Vec<Arc<str>>,
    products: Vec<Arc<str>>,
    sessions: Vec<SessionExt>,
}

#[derive(Serialize, Deserialize)]
struct SessionExt {
    timed_out: bool,
    arrival_wall: i64,
    /// `(false, k)`: waits in the partition-time index; `(true, k)`: in the wall one.
    timeout_key: Option<(bool, i64)>,
}

fn sorted(keys: &rustc_hash::FxHashSet<Arc<str>>) -> Vec<Arc<str>> {
    let mut v: Vec<Arc<str>> = keys.iter().cloned().collect();
    v.sort();
    v
}

impl Ext {
    fn of(engine: &Engine) -> Ext {
        let s = &engine.stats;
        Ext {
            room_limit: s.room_limit,
            sessions_timed_out: s.sessions_timed_out,
            breakdown_overflow: s.breakdown_overflow,
            rooms: engine
                .rooms
                .iter()
                .map(|r| RoomExt {
                    arrival_wall: r.arrival_wall,
                    wall_retire_key: r.wall_retire_key,
                    plans: sorted(&r.bd_keys.plans),
                    products: sorted(&r.bd_keys.products),
                    sessions: r
                        .sessions
                        .iter()
                        .map(|s| SessionExt {
                            timed_out: s.timed_out,
                            arrival_wall: s.arrival_wall,
                            timeout_key: s.timeout_key.map(|k| match k {
                                TimeoutKey::Partition(k) => (false, k),
                                TimeoutKey::Wall(k) => (true, k),
                            }),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// For a state written before format 3: no session had timed out; arrivals are
    /// taken as the last input's wall clock (the latest the state knows of); every live
    /// session waits for its timeout; no breakdown key was admitted yet.
    fn older(body: &Body, p: &Params) -> Ext {
        let wall = body.last_input.map_or(i64::MIN, |(w, _)| w);
        let sit = p.session_idle_timeout;
        Ext {
            room_limit: 0,
            sessions_timed_out: 0,
            breakdown_overflow: [0; 3],
            rooms: body
                .rooms
                .iter()
                .map(|r| RoomExt {
                    arrival_wall: wall,
                    wall_retire_key: None,
                    plans: Vec::new(),
                    products: Vec::new(),
                    sessions: r
                        .sessions
                        .iter()
                        .map(|s| SessionExt {
                            timed_out: false,
                            arrival_wall: wall,
                            timeout_key: s.is_live().then(|| (false, s.max_ts.saturating_add(sit))),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl Engine {
    /// The whole state of the engine, for a checkpoint: rooms, watermarks, duplicate
    /// memory, presence, panes, distinct sets and sketches, sessions, version counters
    /// and the fingerprints of the last emissions, the version epoch, the counters.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4096);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let body = BodyRef {
            epoch: self.version_epoch(),
            stats: &self.stats,
            partition_max_ts: self.partition_max_ts,
            seq: self.seq,
            last_input: self.last_input,
            rooms: &self.rooms,
        };
        // Writing into a Vec fails only on allocation failure, which aborts anyway.
        let out = postcard::to_extend(&ConfigPrint::of(&self.cfg), out).expect("encoding into a vec");
        let out = postcard::to_extend(&body, out).expect("encoding into a vec");
        let mut out = postcard::to_extend(&Ext::of(self), out).expect("encoding into a vec");
        let crc = crc32fast::hash(&out[HEADER_LEN..]);
        out[6..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Restores an engine from [`Engine::snapshot`] bytes after a restart, for the live
    /// pipeline: every window and session row that could still change is emitted again
    /// the next time it is checked, even if unchanged (see `Room::mark_stale` for why),
    /// and the wall clock of the last input is forgotten, so the time the process was
    /// down does not count as idle time of the partition. Call
    /// [`Engine::set_version_epoch`] with a new epoch before processing.
    pub fn restore(cfg: EngineConfig, bytes: &[u8]) -> Result<Engine, StateError> {
        let mut engine = Engine::restore_exact(cfg, bytes)?;
        for room in &mut engine.rooms {
            let h = room.horizon(&engine.p);
            room.mark_stale(h);
        }
        engine.reanchor_wall_clock = engine.p.mode == TimeMode::Live && engine.last_input.is_some();
        Ok(engine)
    }

    /// Restores an engine that continues exactly as the one that took the snapshot:
    /// the same input then gives the same rows, byte for byte.
    pub fn restore_exact(cfg: EngineConfig, bytes: &[u8]) -> Result<Engine, StateError> {
        if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
            return Err(if bytes.len() < HEADER_LEN && MAGIC.starts_with(bytes) {
                corrupt(format!("truncated to {} bytes", bytes.len()))
            } else {
                StateError::NotEngineState
            });
        }
        let found = u16::from_le_bytes([bytes[4], bytes[5]]);
        if !(FORMAT_WITHOUT_USER_ID_FORM..=STATE_FORMAT_VERSION).contains(&found) {
            return Err(StateError::Format { found, supported: STATE_FORMAT_VERSION });
        }
        let crc = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        if crc32fast::hash(&bytes[HEADER_LEN..]) != crc {
            return Err(corrupt("checksum mismatch: truncated or damaged"));
        }
        let now = ConfigPrint::of(&cfg);
        let record = |e: postcard::Error| corrupt(format!("configuration record: {e}"));
        let (print, rest) = if found == FORMAT_WITHOUT_USER_ID_FORM {
            // Format 1 did not record the form of its ids, so it is not checked.
            let (shape, rest): (ShapePrint, &[u8]) =
                postcard::take_from_bytes(&bytes[HEADER_LEN..]).map_err(record)?;
            (ConfigPrint { shape, user_id_form: now.user_id_form.clone() }, rest)
        } else {
            postcard::take_from_bytes::<ConfigPrint>(&bytes[HEADER_LEN..]).map_err(record)?
        };
        let differences = print.differences(&now);
        if !differences.is_empty() {
            return Err(StateError::ConfigMismatch { differences });
        }
        let (body, rest): (Body, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| corrupt(format!("engine state: {e}")))?;
        let (ext, rest) = if found > FORMAT_WITHOUT_EXT {
            let (ext, rest): (Ext, &[u8]) = postcard::take_from_bytes(rest)
                .map_err(|e| corrupt(format!("engine state (v1.1 part): {e}")))?;
            (Some(ext), rest)
        } else {
            (None, rest)
        };
        if !rest.is_empty() {
            return Err(corrupt(format!("{} unexpected bytes after the state", rest.len())));
        }
        Engine::from_body(cfg, body, ext)
    }

    fn from_body(cfg: EngineConfig, body: Body, ext: Option<Ext>) -> Result<Engine, StateError> {
        let mut engine = Engine::new(cfg);
        let p: &Params = &engine.p;
        if u32::try_from(body.rooms.len()).is_err() {
            return Err(corrupt("more rooms than an engine can hold"));
        }
        let ext = ext.unwrap_or_else(|| Ext::older(&body, p));
        if ext.rooms.len() != body.rooms.len() {
            return Err(corrupt("the v1.1 part lists another number of rooms"));
        }
        let mut timeouts = BTreeSet::new();
        let mut wall_timeouts = BTreeSet::new();
        let mut wall_retiring = BTreeSet::new();
        let mut active_rooms = 0;
        let mut room_index = FxHashMap::default();
        let mut due = BTreeSet::new();
        let mut retiring = BTreeSet::new();
        let mut dirty = Vec::new();
        let mut identities = HashMap::new();
        let mut rooms = body.rooms;
        for (i, (room, x)) in rooms.iter_mut().zip(ext.rooms).enumerate() {
            let ri = i as u32;
            room.rebuild(p.pane_ms);
            if x.sessions.len() != room.sessions.len() {
                return Err(corrupt(format!(
                    "room {}: the v1.1 part lists another number of sessions",
                    room.id
                )));
            }
            room.arrival_wall = x.arrival_wall;
            room.wall_retire_key = x.wall_retire_key;
            room.bd_keys.plans = x.plans.into_iter().collect();
            room.bd_keys.products = x.products.into_iter().collect();
            if let Some(k) = x.wall_retire_key {
                wall_retiring.insert((k, ri));
            }
            for (si, (s, sx)) in room.sessions.iter_mut().zip(x.sessions).enumerate() {
                s.timed_out = sx.timed_out;
                s.arrival_wall = sx.arrival_wall;
                s.timeout_key = sx.timeout_key.map(|(wall, k)| {
                    if wall {
                        wall_timeouts.insert((k, ri, si as u32));
                        TimeoutKey::Wall(k)
                    } else {
                        timeouts.insert((k, ri, si as u32));
                        TimeoutKey::Partition(k)
                    }
                });
            }
            if !room.retired && room.latest.is_some() {
                active_rooms += 1;
            }
            intern_identities(room, &mut identities);
            if room_index.insert(room.id.clone(), ri).is_some() {
                return Err(corrupt(format!("room {} is listed twice", room.id)));
            }
            if let Some(k) = room.due_key {
                due.insert((k, ri));
            }
            if let Some(k) = room.retire_key {
                retiring.insert((k, ri));
            }
            // A new process has a new metrics registry: every live room is reported.
            if room.latest.is_some() && !room.retired {
                room.dirty = true;
                dirty.push(ri);
            }
        }
        if body.epoch > super::emit::MAX_EPOCH {
            return Err(corrupt(format!("version epoch {} does not fit in a version", body.epoch)));
        }
        engine.p.version_base = u64::from(body.epoch) << EPOCH_SHIFT;
        engine.stats = body.stats;
        engine.stats.room_limit = ext.room_limit;
        engine.stats.sessions_timed_out = ext.sessions_timed_out;
        engine.stats.breakdown_overflow = ext.breakdown_overflow;
        engine.timeouts = timeouts;
        engine.wall_timeouts = wall_timeouts;
        engine.wall_retiring = wall_retiring;
        engine.active_rooms = active_rooms;
        engine.partition_max_ts = body.partition_max_ts;
        engine.seq = body.seq;
        engine.last_input = body.last_input;
        engine.rooms = rooms;
        engine.room_index = room_index;
        engine.due = due;
        engine.retiring = retiring;
        engine.dirty = dirty;
        engine.scratch = Scratch::default();
        Ok(engine)
    }
}

/// Panes of a room share their identities: read back, each is its own copy; one per
/// distinct identity again keeps a restored engine's memory where it was.
fn intern_identities(room: &mut Room, seen: &mut HashMap<Identity, Arc<Identity>>) {
    let mut intern = |ident: &mut Option<Ident>| {
        if let Some((_, _, id)) = ident {
            let shared = seen.entry((**id).clone()).or_insert_with(|| id.clone());
            *id = shared.clone();
        }
    };
    for pane in room.panes.map.values_mut() {
        if let Some(e) = &mut pane.events {
            intern(&mut e.identity);
        }
    }
    intern(&mut room.panes.freed_identity);
    intern(&mut room.latest);
    for s in &mut room.sessions {
        intern(&mut s.identity);
    }
}
