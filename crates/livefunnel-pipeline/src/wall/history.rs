//! A room's values over its live session, sampled by the wall from the values it
//! shows: the sparkline (last 30 minutes) and the room page's session charts.
//!
//! Samples are placed by the session's age (event time, from
//! `livefunnel_room_session_age_seconds`), one per [`BUCKET_S`]: the charts cover the
//! broadcast's own time line, also when a replay runs faster than the wall clock. A
//! room without a live session adds nothing; a new session starts a new history.

use serde::Serialize;

/// Seconds of session age per sample.
pub const BUCKET_S: f64 = 30.0;
/// Samples of the sparkline: 30 minutes.
pub const SPARK_BUCKETS: usize = 60;
/// At most this many samples per room (12 hours): memory stays bounded.
const MAX_BUCKETS: usize = 1_440;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Session age at the bucket's start, seconds.
    pub age_s: u32,
    pub online: u32,
    /// GPM and watch→pay of the wall's running window; `None`: no views or viewers.
    pub gpm: Option<f32>,
    pub watch_to_pay: Option<f32>,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    samples: Vec<Sample>,
}

impl History {
    /// Records the room's values at session age `age_s` (`None` or NaN: no live session).
    pub fn record(&mut self, age_s: Option<f64>, online: u64, gpm: Option<f64>, watch_to_pay: Option<f64>) {
        let Some(age) = age_s.filter(|a| a.is_finite() && *a >= 0.0) else { return };
        let bucket = ((age / BUCKET_S).floor() * BUCKET_S) as u32;
        let s = Sample {
            age_s: bucket,
            online: online.min(u64::from(u32::MAX)) as u32,
            gpm: gpm.map(|g| g as f32),
            watch_to_pay: watch_to_pay.map(|r| r as f32),
        };
        match self.samples.last_mut() {
            Some(last) if last.age_s == bucket => *last = s,
            Some(last) if last.age_s > bucket => {
                // The age went back: a new session.
                self.samples.clear();
                self.samples.push(s);
            }
            _ => {
                if self.samples.len() == MAX_BUCKETS {
                    self.samples.remove(0);
                }
                self.samples.push(s);
            }
        }
    }

    /// Online viewers over the last 30 minutes of the session, one value per bucket,
    /// oldest first; `None` for a bucket without a sample. Starts at the first sample
    /// (the page right-aligns a shorter line).
    pub fn spark(&self) -> Vec<Option<u32>> {
        let Some(last) = self.samples.last() else { return Vec::new() };
        let step = BUCKET_S as u32;
        let from = last.age_s.saturating_sub(step * (SPARK_BUCKETS as u32 - 1));
        let first = self.samples.iter().map(|s| s.age_s).find(|a| *a >= from).unwrap_or(last.age_s);
        let mut out = Vec::with_capacity(SPARK_BUCKETS);
        let mut it = self.samples.iter().skip_while(|s| s.age_s < first).peekable();
        let mut at = first;
        while at <= last.age_s {
            match it.peek() {
                Some(s) if s.age_s == at => {
                    out.push(Some(s.online));
                    it.next();
                }
                _ => out.push(None),
            }
            at += step;
        }
        out
    }

    /// The whole session, at most `max_points` samples (every k-th, the latest kept).
    pub fn session(&self, max_points: usize) -> Vec<Sample> {
        let n = self.samples.len();
        let k = n.div_ceil(max_points.max(1)).max(1);
        let mut out: Vec<Sample> = self.samples.iter().rev().step_by(k).copied().collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_follow_the_session_age_and_restart_with_a_new_session() {
        let mut h = History::default();
        h.record(None, 5, None, None);
        h.record(Some(f64::NAN), 5, None, None);
        assert!(h.spark().is_empty());
        h.record(Some(0.0), 10, Some(100.0), Some(0.1));
        h.record(Some(29.0), 11, None, None);
        h.record(Some(95.0), 20, None, None);
        // Buckets 0, 30 (empty), 60 (empty), 90.
        assert_eq!(h.spark(), [Some(11), None, None, Some(20)]);
        assert_eq!(h.session(10).iter().map(|s| s.age_s).collect::<Vec<_>>(), [0, 90]);
        h.record(Some(10.0), 3, None, None);
        assert_eq!(h.spark(), [Some(3)]);
    }

    #[test]
    fn the_spark_covers_30_minutes_and_the_history_is_bounded() {
        let mut h = History::default();
        for i in 0..2_000u32 {
            h.record(Some(f64::from(i) * BUCKET_S), u64::from(i), None, None);
        }
        let spark = h.spark();
        assert_eq!(spark.len(), SPARK_BUCKETS);
        assert_eq!((spark[0], spark[SPARK_BUCKETS - 1]), (Some(1_940), Some(1_999)));
        assert_eq!(h.samples.len(), MAX_BUCKETS);
        let s = h.session(240);
        assert!(s.len() <= 240 && s.last().unwrap().online == 1_999, "{}", s.len());
    }
}
