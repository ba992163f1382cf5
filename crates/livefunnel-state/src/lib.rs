//! Checkpoint files for the live pipeline: one file per input partition holding the
//! engine state, the partition's next offset and the counters that must survive a
//! restart.
//!
//! A file is written to a temporary name, synced, renamed over the old one and the
//! directory synced, so a crash leaves either the old or the new checkpoint, never a
//! mix. Every file carries a magic, a format version and a CRC32 of its payload: a file
//! that fails any check is an error naming the file, never a silent fresh start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod epoch;

pub use epoch::EpochRecord;

const MAGIC: &[u8; 8] = b"LFCKPT\0\x01";
/// Version of the framing and of [`Checkpoint`]'s layout. Bump on any change.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write checkpoint {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "checkpoint {path} is corrupt ({detail}); restore it from a backup or delete the state \
         directory to rebuild from the earliest retained offsets"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "checkpoint {path} has format version {found}, this build reads version {expected}; \
         run the livefunnel version that wrote it, or delete the state directory to rebuild"
    )]
    Version { path: PathBuf, found: u32, expected: u32 },
    /// A shared store (not a local file) failed; `location` names the record.
    #[error("checkpoint {location}: {detail}")]
    Store { location: String, detail: String, retryable: bool },
    #[error(
        "the wall clock ({now}) is behind the claim of version epoch {epoch} in {location} \
         ({claimed_at}): the clock went back, or was ahead then, and rows versioned from it \
         would lose to the rows already written. Fix the clock (NTP); if it is right now, \
         follow docs/runbook.md#wall-clock-behind-a-version-epoch"
    )]
    ClockBehind { location: String, epoch: u32, now: String, claimed_at: String },
    #[error(
        "the wall clock ({now}) is before 2025-01-01, the base of version epochs, claiming one \
         for {location}: set the clock (NTP)"
    )]
    ClockBeforeBase { location: String, now: String },
    #[error(
        "version epoch {epoch} for {location} does not fit in a version (epoch << 40 | counter \
         holds epochs up to 16777215, the minutes from 2025 to 2056-11): the epoch record is \
         corrupt or the clock is wrong; see docs/semantics.md"
    )]
    EpochOverflow { location: String, epoch: u64 },
}

impl StateError {
    /// Only IO errors may go away on their own (a full disk being cleaned, say).
    pub fn is_retryable(&self) -> bool {
        match self {
            StateError::Read { .. } | StateError::Write { .. } => true,
            StateError::Store { retryable, .. } => *retryable,
            StateError::Corrupt { .. }
            | StateError::Version { .. }
            | StateError::ClockBehind { .. }
            | StateError::ClockBeforeBase { .. }
            | StateError::EpochOverflow { .. } => false,
        }
    }
}

/// Where partition checkpoints live. An implementation must make a checkpoint saved by
/// one process loadable by the next owner of the partition: a local directory for a
/// single host, a shared store (the Kafka topic of `livefunnel-kafka`) for several.
/// Methods block; call them from a blocking context.
pub trait CheckpointStore: Send + Sync {
    /// The partition's latest checkpoint, `None` when there is none yet.
    fn load(&self, topic: &str, partition: i32) -> Result<Option<Checkpoint>, StateError>;
    /// Makes `ck` the partition's latest checkpoint, all or nothing.
    fn save(&self, ck: &Checkpoint) -> Result<(), StateError>;
    /// Claims the next version epoch for a partition before any row of it is written:
    /// one more than every epoch claimed or checkpointed before (`checkpointed`), so
    /// rows written by an owner that died before its next checkpoint are superseded,
    /// and at least the wall-clock floor, so a lost store does not send versions back
    /// ([`epoch`]). Refused when the clock is behind the stored claim.
    fn claim_epoch(&self, topic: &str, partition: i32, checkpointed: u32) -> Result<u32, StateError>;
    /// Where the partition's checkpoint is, for messages.
    fn location(&self, topic: &str, partition: i32) -> String;
}

impl CheckpointStore for StateDir {
    fn load(&self, topic: &str, partition: i32) -> Result<Option<Checkpoint>, StateError> {
        StateDir::load(self, topic, partition)
    }

    fn save(&self, ck: &Checkpoint) -> Result<(), StateError> {
        StateDir::save(self, ck)
    }

    fn claim_epoch(&self, topic: &str, partition: i32, checkpointed: u32) -> Result<u32, StateError> {
        StateDir::claim_epoch(self, topic, partition, checkpointed)
    }

    fn location(&self, topic: &str, partition: i32) -> String {
        self.checkpoint_path(topic, partition).display().to_string()
    }
}

/// What one partition's checkpoint holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub topic: String,
    pub partition: i32,
    /// The offset of the first message not reflected in the state.
    pub next_offset: i64,
    /// The version epoch the state was produced under (see `Engine::set_version_epoch`).
    pub epoch: u32,
    /// Wall clock at which the checkpoint was taken, epoch milliseconds.
    pub taken_at_ms: i64,
    /// The engine's own state bytes.
    pub engine: Vec<u8>,
    /// The pipeline's per-partition state (room counters), opaque here.
    pub extra: Vec<u8>,
}

/// A directory of checkpoints, one file per partition.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) a state directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<StateDir, StateError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| StateError::Write { path: dir.clone(), source })?;
        Ok(StateDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn checkpoint_path(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{}-{partition}.ckpt", file_safe(topic)))
    }

    fn epoch_path(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{}-{partition}.epoch", file_safe(topic)))
    }

    /// The partition's checkpoint, `None` when there is none yet.
    pub fn load(&self, topic: &str, partition: i32) -> Result<Option<Checkpoint>, StateError> {
        let path = self.checkpoint_path(topic, partition);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let ck = decode(&bytes).map_err(|e| e.at(&path))?;
        if ck.topic != topic || ck.partition != partition {
            return Err(StateError::Corrupt {
                path,
                detail: format!("it belongs to {}/{}", ck.topic, ck.partition),
            });
        }
        Ok(Some(ck))
    }

    /// Writes the partition's checkpoint atomically.
    pub fn save(&self, ck: &Checkpoint) -> Result<(), StateError> {
        let path = self.checkpoint_path(&ck.topic, ck.partition);
        write_atomic(&path, &encode(ck)).map_err(|source| StateError::Write { path, source })
    }

    /// Claims the next version epoch for a partition before any row of it is written
    /// (see [`CheckpointStore::claim_epoch`]), at the wall clock now.
    pub fn claim_epoch(&self, topic: &str, partition: i32, checkpointed: u32) -> Result<u32, StateError> {
        self.claim_epoch_at(topic, partition, checkpointed, epoch::now_ms())
    }

    /// [`StateDir::claim_epoch`] at wall clock `now_ms`. The file holds the epoch and
    /// the wall clock of its claim (`<epoch> <epoch ms>`; a bare epoch from older versions).
    pub fn claim_epoch_at(
        &self,
        topic: &str,
        partition: i32,
        checkpointed: u32,
        now_ms: i64,
    ) -> Result<u32, StateError> {
        let path = self.epoch_path(topic, partition);
        let stored = match fs::read_to_string(&path) {
            Ok(s) => parse_epoch_record(&s).ok_or_else(|| StateError::Corrupt {
                path: path.clone(),
                detail: format!("expected an epoch and a time in milliseconds, found {:?}", s.trim()),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => EpochRecord::default(),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let next = epoch::next_epoch(&path.display().to_string(), stored, checkpointed, now_ms)?;
        write_atomic(&path, format!("{} {}\n", next.epoch, next.claimed_at_ms).as_bytes())
            .map_err(|source| StateError::Write { path, source })?;
        Ok(next.epoch)
    }
}

/// `<epoch> <claimed at ms>`, or a bare `<epoch>` (claim time unknown).
fn parse_epoch_record(s: &str) -> Option<EpochRecord> {
    let mut it = s.split_whitespace();
    let epoch = it.next()?.parse().ok()?;
    let claimed_at_ms = match it.next() {
        Some(t) => t.parse().ok()?,
        None => 0,
    };
    it.next().is_none().then_some(EpochRecord { epoch, claimed_at_ms })
}

fn file_safe(topic: &str) -> String {
    topic
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '_' })
        .collect()
}

/// Frames a checkpoint: magic, format version, CRC32 of the payload, payload length, payload.
pub fn encode(ck: &Checkpoint) -> Vec<u8> {
    let payload = postcard::to_stdvec(ck).expect("serializing into a vec cannot fail");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// A decoding failure, before the file name is known.
#[derive(Debug)]
pub enum DecodeError {
    Corrupt(String),
    Version(u32),
}

impl DecodeError {
    fn at(self, path: &Path) -> StateError {
        match self {
            DecodeError::Corrupt(detail) => StateError::Corrupt { path: path.to_owned(), detail },
            DecodeError::Version(found) => {
                StateError::Version { path: path.to_owned(), found, expected: FORMAT_VERSION }
            }
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
    let corrupt = |d: &str| DecodeError::Corrupt(d.to_owned());
    if bytes.len() < HEADER_LEN {
        return Err(corrupt("shorter than its header"));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("not a livefunnel checkpoint (bad magic)"));
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let crc = u32_at(12);
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(DecodeError::Corrupt(format!(
            "payload is {} bytes, the header says {len} (truncated?)",
            payload.len()
        )));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    postcard::from_bytes(payload).map_err(|e| DecodeError::Corrupt(format!("undecodable payload: {e}")))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp =
        path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("state")));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // The rename is durable only once the directory entry is.
    File::open(dir)?.sync_all()
}

/// Reads a whole file; a helper for tools that inspect checkpoints.
pub fn read_file(path: &Path) -> Result<Checkpoint, StateError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| StateError::Read { path: path.to_owned(), source })?;
    decode(&bytes).map_err(|e| e.at(path))
}

#[cfg(test)]
mod tests;
