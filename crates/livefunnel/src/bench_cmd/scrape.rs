//! The freshness phase's observer: scrapes `/metrics` over HTTP, as Prometheus would,
//! and notes when the probe room's GMV counter first shows each probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::produce::{PROBE_CENTS, PROBE_ROOM};

const GMV_SERIES: &str = "livefunnel_room_gmv_cents_total";
/// At most this share of the wall clock is spent scraping. `/metrics` carries every
/// live room's series (about 2.6 MB for 1,000 rooms); rendering it back to back would
/// take most of a core from the pipeline it measures.
pub const MAX_SHARE: f64 = 0.25;

/// What the scraper saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Probe `k` (index `k - 1`) was first counted by the scrape sent at `.0` whose
    /// answer was complete at `.1`.
    pub at: Vec<(Instant, Instant)>,
    pub scrapes: u64,
    pub failed: u64,
    pub scrape_seconds_total: f64,
    pub scrape_seconds_max: f64,
    /// From the first scrape's start to the last one's end.
    pub span_seconds: f64,
    pub body_bytes_max: usize,
}

/// Scrapes `addr` every `every`, or less often when a scrape takes more than
/// [`MAX_SHARE`] of that, until `stop`; `seen` follows the number of probes counted.
pub fn run(addr: SocketAddr, every: Duration, stop: &AtomicBool, seen: &AtomicUsize) -> Seen {
    let mut out = Seen::default();
    let begin = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match get(addr, "/metrics") {
            Ok(body) => {
                let done = Instant::now();
                let took = (done - started).as_secs_f64();
                out.scrapes += 1;
                out.scrape_seconds_total += took;
                out.scrape_seconds_max = out.scrape_seconds_max.max(took);
                out.body_bytes_max = out.body_bytes_max.max(body.len());
                let counted = probe_gmv(&body).map_or(0, |cents| (cents / PROBE_CENTS) as usize);
                while out.at.len() < counted {
                    out.at.push((started, done));
                }
                seen.store(out.at.len(), Ordering::Relaxed);
            }
            Err(_) => out.failed += 1,
        }
        let pause = every.max(started.elapsed().div_f64(MAX_SHARE));
        if let Some(rest) = pause.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    out.span_seconds = begin.elapsed().as_secs_f64();
    out
}

/// A plain HTTP/1.1 GET on loopback: the body of a 200 answer.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.split_whitespace().nth(1) != Some("200") {
        let status = head.lines().next().unwrap_or("").to_owned();
        return Err(std::io::Error::other(format!("GET {path}: {status}")));
    }
    Ok(body.to_owned())
}

/// The probe room's GMV counter in a Prometheus text exposition.
fn probe_gmv(text: &str) -> Option<u64> {
    let room = format!("room_id=\"{PROBE_ROOM}\"");
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(GMV_SERIES)?.strip_prefix('{')?;
        let (labels, value) = rest.rsplit_once("} ")?;
        if !labels.split(',').any(|kv| kv == room) {
            return None;
        }
        let v: f64 = value.trim().parse().ok()?;
        (v >= 0.0).then_some(v as u64)
    })
}

/// The nearest-rank `p` quantile (0 < p <= 1) of sorted values.
pub fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    debug_assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "not sorted");
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_rooms_counter_is_found_and_only_it() {
        let text = format!(
            "# HELP {GMV_SERIES} x\n# TYPE {GMV_SERIES} counter\n\
             {GMV_SERIES}{{org_id=\"default\",platform=\"other\",room_id=\"bench-probe-2\"}} 900\n\
             {GMV_SERIES}_other{{org_id=\"default\",platform=\"other\",room_id=\"{PROBE_ROOM}\"}} 800\n\
             {GMV_SERIES}{{org_id=\"default\",platform=\"other\",room_id=\"{PROBE_ROOM}\"}} 300\n"
        );
        assert_eq!(probe_gmv(&text), Some(300));
        assert_eq!(probe_gmv("livefunnel_room_gmv_cents_total{room_id=\"room-0001\"} 5\n"), None);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
