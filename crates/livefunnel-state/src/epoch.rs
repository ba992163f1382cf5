//! Version epochs: the high bits of every row version, claimed per partition at every
//! start so that rows written after a restart outrank whatever an earlier owner wrote.
//!
//! ```text
//! version (u64) = epoch << 40 | counter
//!                 24 bits       40 bits: the key's own emission count (1, 2, 3, ...)
//! ```
//!
//! ClickHouse keeps the highest version of each key. A claim is
//! `max(stored + 1, checkpointed + 1, floor)`, where `stored` is the last epoch the
//! store recorded and `floor` the minutes since [`FLOOR_BASE_MS`]
//! (2025-01-01T00:00:00Z): 2^24 minutes last until 2056-11. The floor keeps versions
//! growing when the store is lost (a deleted state directory, a lost disk, an emptied
//! store topic, a stale record): a new claim outranks every earlier one once the clock
//! has passed it, and an epoch runs ahead of the clock only by the claims made faster
//! than one a minute. The record carries the wall clock of its claim; a clock more than
//! [`CLOCK_TOLERANCE_MS`] before it refuses the claim, since versions taken from that
//! clock would lose to the ones already written.

use crate::StateError;

/// Bits of a version below the epoch (`livefunnel_core`'s `EPOCH_SHIFT`).
pub const EPOCH_SHIFT: u32 = 40;
/// The largest epoch a version can hold: 2^24 − 1.
pub const MAX_EPOCH: u32 = (1 << (64 - EPOCH_SHIFT)) - 1;
/// The wall-clock floor's zero, 2025-01-01T00:00:00Z, in epoch milliseconds.
pub const FLOOR_BASE_MS: i64 = 1_735_689_600_000;
/// The wall-clock floor's unit: one epoch per minute.
pub const FLOOR_UNIT_MS: i64 = 60_000;
/// How far the clock may be behind a recorded claim: hosts' clocks differ a little,
/// and a rebalance hands a partition over within milliseconds.
pub const CLOCK_TOLERANCE_MS: i64 = 60_000;

/// A claimed epoch and the wall clock (epoch milliseconds) at which it was claimed;
/// `claimed_at_ms` is 0 for records written before claims carried their time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochRecord {
    pub epoch: u32,
    pub claimed_at_ms: i64,
}

/// The epoch floor at `now_ms`: whole minutes since [`FLOOR_BASE_MS`].
pub fn floor_at(now_ms: i64) -> Option<u32> {
    if now_ms < FLOOR_BASE_MS {
        return None;
    }
    u32::try_from((now_ms - FLOOR_BASE_MS) / FLOOR_UNIT_MS).ok()
}

/// The next epoch of the partition at `location`, after `stored` (the store's record)
/// and `checkpointed` (the epoch of its latest checkpoint), at wall clock `now_ms`.
/// Errors are permanent: a clock before 2025 or before the stored claim, or an epoch
/// beyond [`MAX_EPOCH`].
pub fn next_epoch(
    location: &str,
    stored: EpochRecord,
    checkpointed: u32,
    now_ms: i64,
) -> Result<EpochRecord, StateError> {
    if now_ms.saturating_add(CLOCK_TOLERANCE_MS) < stored.claimed_at_ms {
        return Err(StateError::ClockBehind {
            location: location.to_owned(),
            epoch: stored.epoch,
            now: utc(now_ms),
            claimed_at: utc(stored.claimed_at_ms),
        });
    }
    let floor = floor_at(now_ms)
        .ok_or_else(|| StateError::ClockBeforeBase { location: location.to_owned(), now: utc(now_ms) })?;
    let next = u64::from(stored.epoch.max(checkpointed)) + 1;
    let epoch = next.max(u64::from(floor));
    if epoch > u64::from(MAX_EPOCH) {
        return Err(StateError::EpochOverflow { location: location.to_owned(), epoch });
    }
    Ok(EpochRecord { epoch: epoch as u32, claimed_at_ms: now_ms })
}

/// The wall clock now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `ms` as `2026-01-31T23:59:59.999Z`, for messages.
pub fn utc(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil from days (Howard Hinnant's algorithm), proleptic Gregorian, UTC.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1_000 % 60, in_day % 1_000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_400_000_000; // 2026-12-04T16:00:00Z

    fn rec(epoch: u32, claimed_at_ms: i64) -> EpochRecord {
        EpochRecord { epoch, claimed_at_ms }
    }

    #[test]
    fn the_floor_counts_minutes_since_2025_and_lasts_until_2056() {
        assert_eq!(utc(FLOOR_BASE_MS), "2025-01-01T00:00:00.000Z");
        assert_eq!(floor_at(FLOOR_BASE_MS), Some(0));
        assert_eq!(floor_at(FLOOR_BASE_MS + 59_999), Some(0));
        assert_eq!(floor_at(FLOOR_BASE_MS + 60_000), Some(1));
        assert_eq!(floor_at(FLOOR_BASE_MS - 1), None);
        assert_eq!(utc(NOW), "2026-12-04T16:00:00.000Z");
        let last = FLOOR_BASE_MS + i64::from(MAX_EPOCH) * FLOOR_UNIT_MS;
        assert_eq!(floor_at(last), Some(MAX_EPOCH));
        assert!(utc(last).starts_with("2056-11-"), "{}", utc(last));
        assert_eq!(MAX_EPOCH, 16_777_215);
    }

    #[test]
    fn a_claim_is_above_the_store_the_checkpoint_and_the_floor() {
        let floor = floor_at(NOW).unwrap();
        // An empty store (new, or lost): the floor.
        assert_eq!(next_epoch("p", rec(0, 0), 0, NOW).unwrap(), rec(floor, NOW));
        // Claims faster than one a minute run ahead of the clock, one each.
        assert_eq!(next_epoch("p", rec(floor, NOW), 0, NOW + 1).unwrap().epoch, floor + 1);
        assert_eq!(next_epoch("p", rec(floor + 5, NOW), floor + 9, NOW).unwrap().epoch, floor + 10);
        // Records from before the floor (small counters): the floor wins.
        assert_eq!(next_epoch("p", rec(7, 0), 3, NOW).unwrap().epoch, floor);
        // A minute later, the clock has caught up with a claim of this minute.
        assert_eq!(next_epoch("p", rec(floor, NOW), 0, NOW + 120_000).unwrap().epoch, floor + 2);
    }

    #[test]
    fn a_clock_behind_the_stored_claim_is_refused_with_both_times() {
        let stored = rec(floor_at(NOW).unwrap(), NOW);
        // Within the tolerance: another host's clock, a little behind.
        assert!(next_epoch("p", stored, 0, NOW - CLOCK_TOLERANCE_MS).is_ok());
        let err = next_epoch("room-events-3.epoch", stored, 0, NOW - 3_600_000).unwrap_err();
        assert!(!err.is_retryable());
        let msg = err.to_string();
        for part in ["room-events-3.epoch", "2026-12-04T15:00:00.000Z", "2026-12-04T16:00:00.000Z", "clock"] {
            assert!(msg.contains(part), "{part} missing: {msg}");
        }
        let err = next_epoch("p", rec(0, 0), 0, 1_000).unwrap_err();
        assert!(matches!(err, StateError::ClockBeforeBase { .. }), "{err}");
        assert!(err.to_string().contains("1970-01-01T00:00:01.000Z"), "{err}");
    }

    #[test]
    fn an_epoch_that_does_not_fit_is_an_error_never_a_wrap() {
        assert_eq!(next_epoch("p", rec(MAX_EPOCH - 1, 0), 0, NOW).unwrap().epoch, MAX_EPOCH);
        for (stored, checkpointed) in [(MAX_EPOCH, 0), (0, MAX_EPOCH), (u32::MAX, 0), (0, u32::MAX)] {
            let err = next_epoch("p", rec(stored, 0), checkpointed, NOW).unwrap_err();
            assert!(matches!(err, StateError::EpochOverflow { .. }) && !err.is_retryable(), "{err}");
        }
        // The clock of late 2056 is past the last epoch too.
        let late = FLOOR_BASE_MS + (i64::from(MAX_EPOCH) + 1) * FLOOR_UNIT_MS;
        assert!(matches!(next_epoch("p", rec(0, 0), 0, late), Err(StateError::EpochOverflow { .. })));
    }
}
