//! `livefunnel sim`: writes a deterministic, realistic stream of live-room
//! events (contract §1) as JSONL, in arrival order, from `livefunnel-sim`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use livefunnel_sim::{SimParams, Simulator};

/// Generate simulated live-room events as JSONL (one message per line).
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Number of live rooms (one broadcast each).
    #[arg(long, default_value_t = 50)]
    pub rooms: u32,
    /// Simulated duration of the stream, e.g. `30m`, `90s`, `2h`, `1500ms`.
    #[arg(long, default_value = "30m", value_parser = parse_duration_ms)]
    pub duration: i64,
    /// PRNG seed: the same seed and parameters always give the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Event time of the start, epoch milliseconds UTC (default 2026-01-01T00:00:00Z).
    #[arg(long)]
    pub start_ms: Option<i64>,
    /// Share of events delivered 10–100 s late.
    #[arg(long)]
    pub late_share: Option<f64>,
    /// Share of events re-sent with the same `event_id`.
    #[arg(long)]
    pub duplicate_share: Option<f64>,
    /// Share of bad messages (invalid JSON, missing field, unknown type, bad field).
    #[arg(long)]
    pub malformed_share: Option<f64>,
    /// Output file, or `-` for standard output.
    #[arg(long, default_value = "-")]
    pub output: PathBuf,
}

impl SimArgs {
    /// The simulator parameters these arguments select.
    pub fn params(&self) -> anyhow::Result<SimParams> {
        let d = SimParams::default();
        let p = SimParams {
            rooms: self.rooms,
            duration_ms: self.duration,
            seed: self.seed,
            start_ms: self.start_ms.unwrap_or(d.start_ms),
            late_share: self.late_share.unwrap_or(d.late_share),
            duplicate_share: self.duplicate_share.unwrap_or(d.duplicate_share),
            malformed_share: self.malformed_share.unwrap_or(d.malformed_share),
        };
        for (name, v) in [
            ("--late-share", p.late_share),
            ("--duplicate-share", p.duplicate_share),
            ("--malformed-share", p.malformed_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be between 0 and 1, got {v}");
            }
        }
        if p.duration_ms <= 0 {
            bail!("--duration must be positive");
        }
        Ok(p)
    }
}

/// Parses `1500ms`, `90s`, `30m`, `2h` (a bare number is seconds) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1_000)
    };
    let n: i64 = num.trim().parse().map_err(|_| format!("invalid duration `{s}` (use e.g. 90s, 30m, 2h)"))?;
    if n <= 0 {
        return Err(format!("duration `{s}` must be positive"));
    }
    n.checked_mul(mult).ok_or_else(|| format!("duration `{s}` is too large"))
}

/// Runs `livefunnel sim`.
pub fn run(args: &SimArgs) -> anyhow::Result<()> {
    let params = args.params()?;
    let to_stdout = args.output.as_os_str() == "-";
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(io::stdout().lock())
    } else {
        let f = File::create(&args.output)
            .with_context(|| format!("cannot create output file {}", args.output.display()))?;
        Box::new(f)
    };
    let mut w = BufWriter::with_capacity(1 << 16, sink);
    let mut sim = Simulator::new(params);
    let mut buf = Vec::with_capacity(512);
    loop {
        buf.clear();
        if !sim.next_message(&mut buf) {
            break;
        }
        buf.push(b'\n');
        match w.write_all(&buf) {
            Ok(()) => {}
            // `livefunnel sim | head` is fine.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("cannot write output"),
        }
    }
    match w.flush() {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(e).context("cannot write output"),
    }
    if !to_stdout {
        tracing::info!(events = sim.events_emitted(), output = %args.output.display(), "sim done");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1500ms"), Ok(1_500));
        assert_eq!(parse_duration_ms("15"), Ok(15_000));
        assert!(parse_duration_ms("x").is_err());
        assert!(parse_duration_ms("0m").is_err());
    }
}
