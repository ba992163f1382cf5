//! Engine state for checkpoints: the whole state of one partition's engine as bytes,
//! and back. The live pipeline writes it every few seconds with the partition's next
//! offset (the file framing is `livefunnel-state`'s); after a crash it restores it
//! and replays the partition from that offset.
//!
//! Layout: `LFES`, the format version (u16 LE), a CRC32 of everything after it (u32
//! LE), then postcard: the configuration the state was shaped by ([`ConfigPrint`]),
//! then the state. Tables, caches and indexes derived from the rest are not written;
//! they are rebuilt on restore (with the new engine's own keyed hasher), and every
//! index the state holds is checked against what it points into.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dedupe::Dedupe;
use super::emit::EPOCH_SHIFT;
use super::keyed::Interned;
use super::lifecycle::TimeoutKey;
use super::room::{BdKeys, BdSlot, Room};
use super::running::RoomTotals;
use super::session::SessionState;
use super::slots::{Ident, Slots};
use super::viewers::Viewer;
use super::{agg, Engine, EngineStats, Params};
use crate::config::{EngineConfig, TimeMode, WindowSpec};
use crate::row::Identity;

/// Version of the state layout. Bump it on any change to a serialized type: field
/// order, a field's type, an enum's variants (postcard writes variant indexes), the
/// meaning of a value. Version 4 is the second engine's layout (slots, viewer records,
/// interned keys); the first engine's formats 1 to 3 are refused, not converted (see
/// [`StateError::EarlierEngine`]).
pub const STATE_FORMAT_VERSION: u16 = 4;

/// The last format the first engine wrote.
const FIRST_ENGINE_LAST_FORMAT: u16 = 3;

const MAGIC: &[u8; 4] = b"LFES";
const HEADER_LEN: usize = 4 + 2 + 4;

/// Why engine state bytes cannot be restored. No variant is helped by a retry: the
/// bytes or the configuration must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not a livefunnel engine state (bad magic bytes): the checkpoint holds something else; delete the state directory to start over")]
    NotEngineState,
    #[error("engine state format {found} is not readable by this build (it reads format {supported}): run the livefunnel version that wrote it, or delete the state directory to start over")]
    Format { found: u16, supported: u16 },
    #[error("engine state format {found} was written by a livefunnel release before engine v2, whose state this build does not convert (it reads format {supported}): delete this partition's checkpoints (the state directory, or the checkpoint topic with `checkpoint.store = \"kafka\"`) so it is recomputed from the earliest offset Kafka retains, or keep running the earlier release until its broadcasts are over")]
    EarlierEngine { found: u16, supported: u16 },
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
/// misread it (window indexes, slot width, folded presence, horizons, distinct counts).
/// Values that only steer the future (`idle_grace`, `idle_timeout`, `max_future_skew`,
/// `windows.breakdowns`) may change across a restart. Kept readable, not hashed, so a
/// mismatch can say what differs. The form of the user ids is recorded too: the
/// distinct counts hold ids of that form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ConfigPrint {
    windows: Vec<String>,
    out_of_orderness_ms: i64,
    allowed_lateness_ms: i64,
    presence_timeout_ms: i64,
    session_idle_timeout_ms: i64,
    exact_distinct_limit: u64,
    live: bool,
    user_id_form: String,
}

impl ConfigPrint {
    fn of(cfg: &EngineConfig) -> ConfigPrint {
        ConfigPrint {
            windows: cfg.windows.iter().map(WindowSpec::name).collect(),
            out_of_orderness_ms: cfg.out_of_orderness_ms,
            allowed_lateness_ms: cfg.allowed_lateness_ms,
            presence_timeout_ms: cfg.presence_timeout_ms,
            session_idle_timeout_ms: cfg.session_idle_timeout_ms,
            exact_distinct_limit: cfg.exact_distinct_limit as u64,
            live: cfg.mode == TimeMode::Live,
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
        let mut out = Vec::new();
        let mut diff = |what: &str, then: String, now: String| {
            if then != now {
                out.push(format!("checkpoint was taken with {what} {then}, the config has {now}"));
            }
        };
        diff("windows", format!("[{}]", self.windows.join(", ")), format!("[{}]", now.windows.join(", ")));
        diff("time.out_of_orderness", ms(self.out_of_orderness_ms), ms(now.out_of_orderness_ms));
        diff("time.allowed_lateness", ms(self.allowed_lateness_ms), ms(now.allowed_lateness_ms));
        diff("time.presence_timeout", ms(self.presence_timeout_ms), ms(now.presence_timeout_ms));
        diff("time.session_idle_timeout", ms(self.session_idle_timeout_ms), ms(now.session_idle_timeout_ms));
        diff(
            "limits.exact_distinct_limit",
            self.exact_distinct_limit.to_string(),
            now.exact_distinct_limit.to_string(),
        );
        diff("mode", mode(self.live).to_owned(), mode(now.live).to_owned());
        diff(
            "user ids (privacy.hash_user_ids, privacy.salt)",
            self.user_id_form.clone(),
            now.user_id_form.clone(),
        );
        out
    }
}

/// The engine's state as written.
#[derive(Serialize, Deserialize)]
struct Body {
    epoch: u32,
    stats: EngineStats,
    room_limit: u64,
    sessions_timed_out: u64,
    breakdown_overflow: [u64; 3],
    partition_max_ts: i64,
    seq: u64,
    last_input: Option<(i64, i64)>,
    rooms: Vec<RoomState>,
}

/// One room as written: its tables as lists, in a fixed order.
#[derive(Serialize, Deserialize)]
struct RoomState {
    id: Arc<str>,
    max_ts: i64,
    emitted_through: i64,
    slots: Slots,
    viewers: Vec<Viewer>,
    sessions: Vec<SessionState>,
    /// Per session: `(false, k)` waits for its timeout in the partition-time index,
    /// `(true, k)` in the wall-clock one.
    timeout_keys: Vec<Option<(bool, i64)>>,
    dedupe: Vec<([u64; 2], i64)>,
    emitted: BTreeMap<(usize, i64), (u64, u128)>,
    bd_emitted: Vec<(BdSlot, (u64, u128))>,
    stale: bool,
    latest: Option<Ident>,
    retired: bool,
    totals: RoomTotals,
    last_gc_horizon: i64,
    last_expire_horizon: i64,
    due_key: Option<i64>,
    retire_key: Option<i64>,
    arrival_wall: i64,
    wall_retire_key: Option<i64>,
    plans: Vec<Arc<str>>,
    products: Vec<Arc<str>>,
}

/// [`Body`] without its rooms, borrowing what is big. Postcard writes a struct as its
/// fields one after another and a sequence as its length then its elements: this, the
/// number of rooms, then each room's [`RoomRef`] are the bytes of a [`Body`].
#[derive(Serialize)]
struct BodyHead<'a> {
    epoch: u32,
    stats: &'a EngineStats,
    room_limit: u64,
    sessions_timed_out: u64,
    breakdown_overflow: [u64; 3],
    partition_max_ts: i64,
    seq: u64,
    last_input: Option<(i64, i64)>,
}

/// [`RoomState`] with its large parts borrowed: same fields, same order.
#[derive(Serialize)]
struct RoomRef<'a> {
    id: &'a Arc<str>,
    max_ts: i64,
    emitted_through: i64,
    slots: &'a Slots,
    viewers: &'a [Viewer],
    sessions: &'a [SessionState],
    timeout_keys: Vec<Option<(bool, i64)>>,
    dedupe: Vec<([u64; 2], i64)>,
    emitted: &'a BTreeMap<(usize, i64), (u64, u128)>,
    bd_emitted: Vec<(BdSlot, (u64, u128))>,
    stale: bool,
    latest: &'a Option<Ident>,
    retired: bool,
    totals: &'a RoomTotals,
    last_gc_horizon: i64,
    last_expire_horizon: i64,
    due_key: Option<i64>,
    retire_key: Option<i64>,
    arrival_wall: i64,
    wall_retire_key: Option<i64>,
    plans: &'a [Arc<str>],
    products: &'a [Arc<str>],
}

impl<'a> RoomRef<'a> {
    fn of(r: &'a Room, p: &Params) -> RoomRef<'a> {
        let mut bd_emitted: Vec<(BdSlot, (u64, u128))> = r.bd_emitted.iter().map(|(k, v)| (*k, *v)).collect();
        bd_emitted.sort_unstable();
        let timeout_keys = r
            .sessions
            .iter()
            .map(|s| {
                s.timeout_key.map(|k| match k {
                    TimeoutKey::Partition(k) => (false, k),
                    TimeoutKey::Wall(k) => (true, k),
                })
            })
            .collect();
        RoomRef {
            id: &r.id,
            max_ts: r.max_ts,
            emitted_through: r.emitted_through,
            slots: &r.slots,
            viewers: &r.viewers.list,
            sessions: &r.sessions,
            timeout_keys,
            dedupe: r.dedupe.live(r.horizon(p)),
            emitted: &r.emitted,
            bd_emitted,
            stale: r.stale,
            latest: &r.latest,
            retired: r.retired,
            totals: &r.totals,
            last_gc_horizon: r.last_gc_horizon,
            last_expire_horizon: r.last_expire_horizon,
            due_key: r.due_key,
            retire_key: r.retire_key,
            arrival_wall: r.arrival_wall,
            wall_retire_key: r.wall_retire_key,
            plans: r.bd_keys.plans.names(),
            products: r.bd_keys.products.names(),
        }
    }
}

impl Engine {
    /// The whole state of the engine, for a checkpoint: rooms, watermarks, duplicate
    /// memory, viewers and their presence, slots, sessions, version counters and the
    /// fingerprints of the last emissions, the version epoch, the counters.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = self.snapshot_head();
        for room in self.rooms.iter() {
            out = encode(&RoomRef::of(room, &self.p), out);
        }
        seal(out)
    }

    /// [`Engine::snapshot`]'s bytes, encoding only the rooms changed since the previous
    /// call: the others' bytes are kept from it (memory: about one encoded state,
    /// [`SnapshotStats::kept_bytes`]). For the live pipeline, whose checkpoints
    /// otherwise stall their partition to encode rooms that did not change.
    pub fn snapshot_incremental(&mut self) -> (Vec<u8>, SnapshotStats) {
        let mut stats = SnapshotStats::default();
        // A room is encoded into a small buffer that stays in the cache, then copied:
        // encoding straight into the large output was a fifth slower on busy partitions.
        let mut scratch = Vec::new();
        for i in 0..self.rooms.len() {
            let (room, kept) = self.rooms.with_encoding(i);
            if kept.is_empty() {
                scratch.clear();
                scratch = encode(&RoomRef::of(room, &self.p), scratch);
                kept.reserve_exact(scratch.len());
                kept.extend_from_slice(&scratch);
                stats.rooms_encoded += 1;
            } else {
                stats.rooms_kept += 1;
            }
            stats.kept_bytes += kept.len();
        }
        let mut out = self.snapshot_head();
        out.reserve_exact(stats.kept_bytes);
        for bytes in self.rooms.encodings() {
            out.extend_from_slice(bytes);
        }
        (seal(out), stats)
    }

    /// Magic, version, room for the checksum, the configuration, the body up to its
    /// rooms and their number.
    fn snapshot_head(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4096);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let s = &self.stats;
        let head = BodyHead {
            epoch: self.version_epoch(),
            stats: s,
            room_limit: s.room_limit,
            sessions_timed_out: s.sessions_timed_out,
            breakdown_overflow: s.breakdown_overflow,
            partition_max_ts: self.partition_max_ts,
            seq: self.seq,
            last_input: self.last_input,
        };
        let out = encode(&ConfigPrint::of(&self.cfg), out);
        let out = encode(&head, out);
        // A sequence's length is written as a usize is.
        encode(&self.rooms.len(), out)
    }

    /// Restores an engine from [`Engine::snapshot`] bytes after a restart, for the live
    /// pipeline: every window and session row that could still change is emitted again
    /// the next time it is checked, even if unchanged (see `Room::mark_stale` for why),
    /// and the wall clock of the last input is forgotten, so the time the process was
    /// down does not count as idle time of the partition. Call
    /// [`Engine::set_version_epoch`] with a new epoch before processing.
    pub fn restore(cfg: EngineConfig, bytes: &[u8]) -> Result<Engine, StateError> {
        let mut engine = Engine::restore_exact(cfg, bytes)?;
        for room in engine.rooms.iter_mut() {
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
        if (1..=FIRST_ENGINE_LAST_FORMAT).contains(&found) {
            return Err(StateError::EarlierEngine { found, supported: STATE_FORMAT_VERSION });
        }
        if found != STATE_FORMAT_VERSION {
            return Err(StateError::Format { found, supported: STATE_FORMAT_VERSION });
        }
        let crc = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        if crc32fast::hash(&bytes[HEADER_LEN..]) != crc {
            return Err(corrupt("checksum mismatch: truncated or damaged"));
        }
        let now = ConfigPrint::of(&cfg);
        let (print, rest): (ConfigPrint, &[u8]) = postcard::take_from_bytes(&bytes[HEADER_LEN..])
            .map_err(|e| corrupt(format!("configuration record: {e}")))?;
        let differences = print.differences(&now);
        if !differences.is_empty() {
            return Err(StateError::ConfigMismatch { differences });
        }
        let (body, rest): (Body, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| corrupt(format!("engine state: {e}")))?;
        if !rest.is_empty() {
            return Err(corrupt(format!("{} unexpected bytes after the state", rest.len())));
        }
        Engine::from_body(cfg, body)
    }

    fn from_body(cfg: EngineConfig, body: Body) -> Result<Engine, StateError> {
        let mut engine = Engine::new(cfg);
        let p = &engine.p;
        if u32::try_from(body.rooms.len()).is_err() {
            return Err(corrupt("more rooms than an engine can hold"));
        }
        let mut identities = HashMap::new();
        for (i, state) in body.rooms.into_iter().enumerate() {
            let ri = i as u32;
            let id = state.id.clone();
            let mut room = room_of(state, p).map_err(|e| corrupt(format!("room {id}: {e}")))?;
            intern_identities(&mut room, &mut identities);
            if engine.room_index.get(&p.keyed, &room.id).is_some() {
                return Err(corrupt(format!("room {} is listed twice", room.id)));
            }
            engine.room_index.insert(&p.keyed, room.id.clone());
            if let Some(k) = room.wall_retire_key {
                engine.wall_retiring.insert((k, ri));
            }
            for (si, s) in room.sessions.iter().enumerate() {
                match s.timeout_key {
                    Some(TimeoutKey::Wall(k)) => engine.wall_timeouts.insert((k, ri, si as u32)),
                    Some(TimeoutKey::Partition(k)) => engine.timeouts.insert((k, ri, si as u32)),
                    None => false,
                };
            }
            if !room.retired && room.latest.is_some() {
                engine.active_rooms += 1;
                // A new process has a new metrics registry: every live room is reported.
                room.dirty = true;
                engine.dirty.push(ri);
            }
            if let Some(k) = room.due_key {
                engine.due.insert((k, ri));
            }
            if let Some(k) = room.retire_key {
                engine.retiring.insert((k, ri));
            }
            engine.rooms.push(room);
        }
        if body.epoch > super::emit::MAX_EPOCH {
            return Err(corrupt(format!("version epoch {} does not fit in a version", body.epoch)));
        }
        engine.p.version_base = u64::from(body.epoch) << EPOCH_SHIFT;
        engine.stats = body.stats;
        engine.stats.room_limit = body.room_limit;
        engine.stats.sessions_timed_out = body.sessions_timed_out;
        engine.stats.breakdown_overflow = body.breakdown_overflow;
        engine.partition_max_ts = body.partition_max_ts;
        engine.seq = body.seq;
        engine.last_input = body.last_input;
        Ok(engine)
    }
}

/// Appends `value` to `out`. Writing into a Vec fails only on allocation failure,
/// which aborts anyway.
fn encode(value: &impl Serialize, out: Vec<u8>) -> Vec<u8> {
    postcard::to_extend(value, out).expect("encoding into a vec")
}

/// Writes the checksum of everything after the header into it.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[6..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    out
}

/// What [`Engine::snapshot_incremental`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Rooms changed since the previous snapshot (or never encoded), encoded now.
    pub rooms_encoded: usize,
    /// Rooms unchanged since then, whose bytes were kept.
    pub rooms_kept: usize,
    /// The rooms' encodings now kept, every room's.
    pub kept_bytes: usize,
}

/// A room read back, its tables rebuilt and every index it holds checked.
fn room_of(s: RoomState, p: &Params) -> Result<Room, String> {
    let mut room = Room::new(s.id, p.pane_ms);
    if s.timeout_keys.len() != s.sessions.len() {
        return Err("another number of timeout keys than sessions".into());
    }
    room.max_ts = s.max_ts;
    room.emitted_through = s.emitted_through;
    room.slots = s.slots;
    room.viewers.list = s.viewers;
    room.sessions = s.sessions;
    for (session, k) in room.sessions.iter_mut().zip(s.timeout_keys) {
        session.timeout_key =
            k.map(|(wall, k)| if wall { TimeoutKey::Wall(k) } else { TimeoutKey::Partition(k) });
    }
    room.dedupe = Dedupe::from_live(&p.keyed, s.dedupe).ok_or("an event id is listed twice")?;
    room.emitted = s.emitted;
    room.bd_emitted = s.bd_emitted.into_iter().collect();
    room.stale = s.stale;
    room.latest = s.latest;
    room.retired = s.retired;
    room.totals = s.totals;
    room.last_gc_horizon = s.last_gc_horizon;
    room.last_expire_horizon = s.last_expire_horizon;
    room.due_key = s.due_key;
    room.retire_key = s.retire_key;
    room.arrival_wall = s.arrival_wall;
    room.wall_retire_key = s.wall_retire_key;
    let k = &p.keyed;
    let plans = Interned::from_names(k, s.plans).ok_or("a plan key is listed twice")?;
    let products = Interned::from_names(k, s.products).ok_or("a product key is listed twice")?;
    if plans.len() > p.max_keys.max(plans.len()) || products.len() as u32 >= agg::OTHER_INDEX {
        return Err("too many breakdown keys".into());
    }
    room.bd_keys = BdKeys { plans, products };
    if !room.rebuild(p) {
        return Err("a session or a viewer is listed twice".into());
    }
    check_indexes(&room, p).map_err(|what| format!("{what} points past what the state holds")).map(|()| room)
}

/// Every viewer, session and key index of the room's slots and viewers is in range.
fn check_indexes(room: &Room, p: &Params) -> Result<(), &'static str> {
    let (viewers, sessions) = (room.viewers.len() as u32, room.sessions.len() as u32);
    let key_ok = |k: agg::Key| {
        let i = agg::key_index(k);
        match agg::key_kind(k) {
            agg::SOURCE => (i as usize) < p.source_keys.len(),
            _ if i == agg::OTHER_INDEX => true,
            agg::PLAN => (i as usize) < room.bd_keys.plans.len(),
            agg::PRODUCT => (i as usize) < room.bd_keys.products.len(),
            _ => false,
        }
    };
    for (_, slot) in room.slots.all() {
        if slot.sessions().any(|s| s >= sessions) {
            return Err("a presence change's session");
        }
        if let Some(e) = slot.events() {
            if e.uv.iter().any(|x| x.0 >= viewers) || e.bd_uv.iter().any(|x| x.1 >= viewers) {
                return Err("a distinct entry's viewer");
            }
            if e.bd.iter().any(|x| !key_ok(x.0)) || e.bd_uv.iter().any(|x| !key_ok(x.0)) {
                return Err("a breakdown key");
            }
        }
    }
    for v in &room.viewers.list {
        if v.sessions.iter().any(|s| s.session >= sessions) || v.presence.sessions().any(|s| s >= sessions) {
            return Err("a viewer's session");
        }
    }
    // Emitted breakdown keys only name emission slots (a retired room's may name keys
    // admitted before its retirement): their windows are checked, not their keys.
    if room.bd_emitted.keys().any(|&(def, _, _)| def >= p.defs.len())
        || room.emitted.keys().any(|&(def, _)| def >= p.defs.len())
    {
        return Err("an emission's window or key");
    }
    Ok(())
}

/// Slots and sessions of a room share their identities: read back, each is its own
/// copy; one per distinct identity again keeps a restored engine's memory where it was.
fn intern_identities(room: &mut Room, seen: &mut HashMap<Identity, Arc<Identity>>) {
    let mut intern = |ident: &mut Option<Ident>| {
        if let Some((_, _, id)) = ident {
            let shared = seen.entry((**id).clone()).or_insert_with(|| id.clone());
            *id = shared.clone();
        }
    };
    for (_, slot) in room.slots.all_mut() {
        if let Some(e) = &mut slot.ev {
            intern(&mut e.identity);
        }
    }
    intern(&mut room.slots.freed_identity);
    intern(&mut room.latest);
    for s in &mut room.sessions {
        intern(&mut s.identity);
    }
}
