//! When to send each simulated message: as fast as possible, at a fixed
//! rate, or in real time (simulated arrival time mapped onto the wall clock).
//!
//! [`Pacer`] never reads the clock: the caller passes `now` and gets back the
//! instant the message is due, then sleeps however it likes (a thread, tokio).
//! So it is tested without sleeping, and `sim` and `demo` share it.

use std::time::{Duration, Instant};

/// How far behind schedule a rate-paced sender may be and still catch up;
/// beyond it the schedule restarts from now. Covers a sleep's overshoot (so
/// the average rate is exact) without turning a stall into a burst.
pub const CATCH_UP: Duration = Duration::from_millis(10);

/// Decides when each message is sent; call [`Pacer::send_at`] once per message, in order.
#[derive(Debug, Clone)]
pub struct Pacer {
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Mode {
    Unpaced,
    /// Message `k` since `anchor` is due at `anchor + k / per_second`.
    Rate {
        per_second: f64,
        anchor: Option<Instant>,
        sent: u64,
    },
    /// Event time `origin_ms` happens at `origin`, and runs `speed` times faster
    /// than the wall clock from there.
    Realtime {
        origin: Instant,
        origin_ms: i64,
        speed: f64,
    },
}

impl Pacer {
    /// Every message at once.
    pub fn unpaced() -> Pacer {
        Pacer { mode: Mode::Unpaced }
    }

    /// `per_second` messages per second, evenly spaced (a token bucket that
    /// holds one token: no bursts). `per_second` must be positive and finite.
    pub fn rate(per_second: f64) -> Pacer {
        debug_assert!(per_second > 0.0 && per_second.is_finite(), "rate {per_second}");
        Pacer { mode: Mode::Rate { per_second, anchor: None, sent: 0 } }
    }

    /// Simulated time `origin_ms` (epoch ms) happens at `origin`; a message
    /// is sent when its simulated arrival time comes.
    pub fn realtime(origin: Instant, origin_ms: i64) -> Pacer {
        Pacer::realtime_at_speed(origin, origin_ms, 1.0)
    }

    /// [`Pacer::realtime`] with simulated time running `speed` times faster than the
    /// wall clock after `origin` (20: a simulated hour in 3 minutes). `speed` must be
    /// positive and finite.
    pub fn realtime_at_speed(origin: Instant, origin_ms: i64, speed: f64) -> Pacer {
        debug_assert!(speed > 0.0 && speed.is_finite(), "speed {speed}");
        Pacer { mode: Mode::Realtime { origin, origin_ms, speed } }
    }

    /// Whether [`Pacer::send_at`] can ever say "later" (an unpaced sender
    /// need not read the clock).
    pub fn is_paced(&self) -> bool {
        !matches!(self.mode, Mode::Unpaced)
    }

    /// When the next message, arriving at simulated time `due_ms`, should be
    /// sent: `now` or later. Counts the message as sent.
    pub fn send_at(&mut self, now: Instant, due_ms: i64) -> Instant {
        match &mut self.mode {
            Mode::Unpaced => now,
            Mode::Rate { per_second, anchor, sent } => {
                let scheduled = anchor.map(|a| a + Duration::from_secs_f64(*sent as f64 / *per_second));
                let at = match scheduled {
                    Some(at) if at + CATCH_UP >= now => at,
                    // First message, or stalled: start over from now.
                    _ => {
                        *anchor = Some(now);
                        *sent = 0;
                        now
                    }
                };
                *sent += 1;
                at.max(now)
            }
            Mode::Realtime { origin, origin_ms, speed } => {
                let ahead = u64::try_from(due_ms.saturating_sub(*origin_ms)).unwrap_or(0);
                let wall = if *speed == 1.0 {
                    Duration::from_millis(ahead)
                } else {
                    Duration::from_nanos((ahead as f64 * 1e6 / *speed).round() as u64)
                };
                (*origin + wall).max(now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn unpaced_sends_now() {
        let t0 = Instant::now();
        let mut p = Pacer::unpaced();
        assert!(!p.is_paced());
        assert_eq!(p.send_at(t0, 5_000_000), t0);
        assert_eq!(p.send_at(t0 + MS, 0), t0 + MS);
    }

    #[test]
    fn rate_spaces_messages_evenly() {
        let t0 = Instant::now();
        let mut p = Pacer::rate(10.0);
        assert!(p.is_paced());
        // A sender that asks before each message and sleeps exactly until it is due.
        let mut now = t0;
        let mut times = Vec::new();
        for _ in 0..1_000 {
            now = p.send_at(now, 0);
            times.push(now);
        }
        assert_eq!(times[0], t0);
        assert_eq!(times[1] - times[0], 100 * MS);
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= 99 * MS && gap <= 101 * MS, "{gap:?}");
        }
        assert_eq!(times[999] - t0, 99_900 * MS, "no drift over 1,000 messages");
    }

    #[test]
    fn rate_absorbs_sleep_overshoot_without_drift() {
        let t0 = Instant::now();
        let mut p = Pacer::rate(1_000.0);
        let mut now = t0;
        for _ in 0..10_000 {
            // Every sleep wakes up 300 µs late.
            now = p.send_at(now, 0) + Duration::from_micros(300);
        }
        let elapsed = now - t0;
        assert!(elapsed >= 9_999 * MS && elapsed <= 10_001 * MS, "{elapsed:?}");
    }

    #[test]
    fn rate_does_not_burst_after_a_stall() {
        let t0 = Instant::now();
        let mut p = Pacer::rate(100.0);
        assert_eq!(p.send_at(t0, 0), t0);
        assert_eq!(p.send_at(t0, 0), t0 + 10 * MS);
        // The sink blocked for two seconds: 200 messages late.
        let late = t0 + 2_000 * MS;
        assert_eq!(p.send_at(late, 0), late, "sent at once");
        assert_eq!(p.send_at(late, 0), late + 10 * MS, "then at the rate again, not 200 at once");
        assert_eq!(p.send_at(late + 10 * MS, 0), late + 20 * MS);
    }

    #[test]
    fn realtime_maps_simulated_arrival_onto_the_wall_clock() {
        let t0 = Instant::now();
        let origin_ms = 1_767_225_600_000;
        let mut p = Pacer::realtime(t0, origin_ms);
        assert!(p.is_paced());
        assert_eq!(p.send_at(t0, origin_ms), t0);
        assert_eq!(p.send_at(t0, origin_ms + 61_500), t0 + 61_500 * MS);
        // Due already (the sender fell behind): now, not in the past.
        let later = t0 + 120_000 * MS;
        assert_eq!(p.send_at(later, origin_ms + 90_000), later);
        // Before the origin: at once.
        assert_eq!(p.send_at(t0, origin_ms - 5_000), t0);
    }

    #[test]
    fn realtime_at_speed_divides_simulated_time_by_the_speed() {
        let t0 = Instant::now();
        let origin_ms = 1_767_225_600_000;
        let mut p = Pacer::realtime_at_speed(t0, origin_ms, 20.0);
        assert!(p.is_paced());
        // A simulated hour after the origin is three wall minutes after it.
        assert_eq!(p.send_at(t0, origin_ms + 3_600_000), t0 + 180_000 * MS);
        assert_eq!(p.send_at(t0, origin_ms + 1_000), t0 + 50 * MS);
        // The warm-up before the origin goes at once, whatever the speed.
        assert_eq!(p.send_at(t0, origin_ms - 300_000), t0);
        let mut slow = Pacer::realtime_at_speed(t0, origin_ms, 0.5);
        assert_eq!(slow.send_at(t0, origin_ms + 1_000), t0 + 2_000 * MS);
    }
}
