//! `livefunnel replay`: a bounded JSONL input through the engine, in arrival order,
//! as one partition (contract §1.4, §6).
//!
//! The function works on readers and writers so tests run it in-process. Output is
//! byte-identical for the same input and configuration: nothing here reads a clock
//! except the elapsed time of the human summary, which never reaches a file.

use std::fmt;
use std::io::{self, BufRead, BufWriter, Write};
use std::time::{Duration, Instant};

use livefunnel_core::row::write_json_string;
use livefunnel_core::{decode, Engine, EngineConfig, Outcome, Reason, Row};

/// Rejected lines logged at `warn` before the rest go to `debug` only.
const WARN_REJECTIONS: u64 = 10;

/// What a replay did. `lines` counts non-blank lines, so
/// `lines == accepted + duplicates + rejected_total()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Non-blank input lines, each one message.
    pub lines: u64,
    /// Blank (empty or whitespace-only) lines, skipped silently.
    pub blank_lines: u64,
    /// Accepted events, late ones included.
    pub accepted: u64,
    /// Accepted with `ts` below the room's acceptance watermark (corrections).
    pub late_accepted: u64,
    /// Dropped as duplicates (§1.4): not rejections.
    pub duplicates: u64,
    /// Rejections, indexed like [`Reason::ALL`].
    pub rejected: [u64; Reason::ALL.len()],
    /// Rows emitted by kind.
    pub rows: RowCounts,
    /// Whether rejected lines were written to a dead-letter output.
    pub dead_lettered: bool,
    /// Wall time of the replay; only in the human summary.
    pub elapsed: Duration,
}

/// Emitted rows by `kind` (contract §6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub window: u64,
    pub session: u64,
    pub source: u64,
    pub plan: u64,
    pub product: u64,
}

impl RowCounts {
    fn count(&mut self, row: &Row) {
        match row.kind() {
            "window" => self.window += 1,
            "session" => self.session += 1,
            "source" => self.source += 1,
            "plan" => self.plan += 1,
            _ => self.product += 1,
        }
    }

    /// `(kind, count)` in the fixed order of the summary.
    pub fn by_kind(&self) -> [(&'static str, u64); 5] {
        [
            ("window", self.window),
            ("session", self.session),
            ("source", self.source),
            ("plan", self.plan),
            ("product", self.product),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }
}

impl Summary {
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected[reason_index(reason)]
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// The `--summary` file: one JSON object and a newline, keys in a fixed order,
    /// no timings, so it is byte-identical across runs.
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"lines\":{},\"accepted\":{},\"duplicates\":{},\"rejected\":{{",
            self.lines, self.accepted, self.duplicates
        );
        for (i, reason) in Reason::ALL.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("\"{}\":{}", reason.as_str(), self.rejected[i]));
        }
        s.push_str("},\"rows\":{");
        for (i, (kind, n)) in self.rows.by_kind().iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("\"{kind}\":{n}"));
        }
        s.push_str("}}\n");
        s
    }
}

impl fmt::Display for Summary {
    /// The human summary printed to stderr at the end of a replay.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.lines as f64 / secs } else { 0.0 };
        writeln!(f, "replay summary")?;
        writeln!(f, "  lines read:      {} (plus {} blank, skipped)", self.lines, self.blank_lines)?;
        writeln!(f, "  accepted:        {}", self.accepted)?;
        writeln!(f, "  late-accepted:   {}", self.late_accepted)?;
        writeln!(f, "  duplicates:      {}", self.duplicates)?;
        let where_to = if self.dead_lettered { "written to the dead-letter file" } else { "counted only" };
        writeln!(f, "  rejected:        {} ({where_to})", self.rejected_total())?;
        for (i, reason) in Reason::ALL.iter().enumerate() {
            writeln!(f, "    {:<19}{}", reason.as_str(), self.rejected[i])?;
        }
        writeln!(f, "  rows emitted:    {}", self.rows.total())?;
        for (kind, n) in self.rows.by_kind() {
            writeln!(f, "    {kind:<19}{n}")?;
        }
        writeln!(f, "  elapsed:         {secs:.3} s")?;
        write!(f, "  events/s:        {rate:.0}")
    }
}

fn reason_index(reason: Reason) -> usize {
    Reason::ALL.iter().position(|r| *r == reason).expect("every reason is in Reason::ALL")
}

/// An IO failure during a replay, saying which side failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading the input: {0}")]
    Read(io::Error),
    #[error("writing the output: {0}")]
    WriteOutput(io::Error),
    #[error("writing the dead-letter output: {0}")]
    WriteDeadLetter(io::Error),
}

impl ReplayError {
    pub fn io_error(&self) -> &io::Error {
        match self {
            ReplayError::Read(e) | ReplayError::WriteOutput(e) | ReplayError::WriteDeadLetter(e) => e,
        }
    }

    pub fn into_io_error(self) -> io::Error {
        match self {
            ReplayError::Read(e) | ReplayError::WriteOutput(e) | ReplayError::WriteDeadLetter(e) => e,
        }
    }
}

/// Replays `input` (JSONL, arrival order, one partition) through a fresh engine.
///
/// Rows go to `output` as JSONL (contract §6). Rejected lines go to `dead_letter`,
/// when given, as `{"reason":...,"line":N,"raw":"..."}` (§1.4); `line` counts every
/// physical line from 1, blank ones included, and `raw` is the line without its line
/// terminator (`\n` or `\r\n`), invalid UTF-8 replaced by U+FFFD. Bad input never
/// stops the replay; only IO errors do.
pub fn replay(
    input: impl BufRead,
    output: impl Write,
    dead_letter: Option<&mut dyn Write>,
    cfg: EngineConfig,
) -> Result<Summary, ReplayError> {
    replay_with(input, output, dead_letter, cfg, None)
}

/// [`replay`], with each decoded event's `user_id` pseudonymised by `privacy` when
/// given (`[privacy] hash_user_ids`), exactly as `run` does.
pub fn replay_with(
    mut input: impl BufRead,
    output: impl Write,
    dead_letter: Option<&mut dyn Write>,
    cfg: EngineConfig,
    privacy: Option<&livefunnel_pipeline::privacy::UserIdHasher>,
) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    let mut engine = Engine::new(cfg);
    let mut out = BufWriter::with_capacity(1 << 16, output);
    let mut dlq = dead_letter.map(|w| BufWriter::with_capacity(1 << 16, w));
    let mut summary = Summary { dead_lettered: dlq.is_some(), ..Summary::default() };
    let mut line = Vec::with_capacity(4096);
    let mut rows: Vec<Row> = Vec::new();
    let mut bytes: Vec<u8> = Vec::with_capacity(1 << 14);
    let mut line_no: u64 = 0;

    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).map_err(ReplayError::Read)? == 0 {
            break;
        }
        line_no += 1;
        let mut msg: &[u8] = &line;
        if let Some(rest) = msg.strip_suffix(b"\n") {
            msg = rest;
        }
        if let Some(rest) = msg.strip_suffix(b"\r") {
            msg = rest;
        }
        if msg.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            summary.blank_lines += 1;
            continue;
        }
        summary.lines += 1;
        let rejection = match decode(msg) {
            Ok(mut ev) => {
                livefunnel_pipeline::privacy::pseudonymise(privacy, &mut ev);
                match engine.process(&ev, 0, &mut rows) {
                    Outcome::Accepted { late } => {
                        summary.accepted += 1;
                        summary.late_accepted += u64::from(late);
                        None
                    }
                    Outcome::Duplicate => {
                        summary.duplicates += 1;
                        None
                    }
                    Outcome::Rejected(reason) => Some((reason, None)),
                }
            }
            Err(rej) => Some((rej.reason, Some(rej.detail))),
        };
        if let Some((reason, detail)) = rejection {
            summary.rejected[reason_index(reason)] += 1;
            let n = summary.rejected_total();
            let detail = detail.as_deref().unwrap_or("see the contract, section 1.5");
            if n <= WARN_REJECTIONS {
                tracing::warn!(line = line_no, reason = reason.as_str(), "rejected line: {detail}");
                if n == WARN_REJECTIONS {
                    tracing::warn!("further rejected lines are logged at debug level only");
                }
            } else {
                tracing::debug!(line = line_no, reason = reason.as_str(), "rejected line: {detail}");
            }
            match dlq.as_mut() {
                Some(w) => {
                    write_dead_letter(w, reason, line_no, msg).map_err(ReplayError::WriteDeadLetter)?
                }
                None if n == 1 => {
                    tracing::warn!("no --dead-letter file given: rejected lines are only counted")
                }
                None => {}
            }
        }
        write_rows(&mut out, &mut rows, &mut bytes, &mut summary.rows).map_err(ReplayError::WriteOutput)?;
    }
    let mut written = Ok(());
    engine.finish_with(&mut rows, |rows| {
        if written.is_ok() {
            written = write_rows(&mut out, rows, &mut bytes, &mut summary.rows);
        }
        rows.clear();
    });
    written.map_err(ReplayError::WriteOutput)?;
    out.flush().map_err(ReplayError::WriteOutput)?;
    if let Some(w) = dlq.as_mut() {
        w.flush().map_err(ReplayError::WriteDeadLetter)?;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn write_rows(
    out: &mut impl Write,
    rows: &mut Vec<Row>,
    bytes: &mut Vec<u8>,
    counts: &mut RowCounts,
) -> io::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    for row in rows.drain(..) {
        counts.count(&row);
        bytes.clear();
        row.write_jsonl(bytes);
        out.write_all(bytes)?;
    }
    Ok(())
}

fn write_dead_letter(w: &mut impl Write, reason: Reason, line_no: u64, raw: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(raw.len() + 64);
    buf.extend_from_slice(b"{\"reason\":\"");
    buf.extend_from_slice(reason.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"line\":");
    buf.extend_from_slice(line_no.to_string().as_bytes());
    buf.extend_from_slice(b",\"raw\":");
    write_json_string(&mut buf, &String::from_utf8_lossy(raw));
    buf.extend_from_slice(b"}\n");
    w.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_json_has_every_reason_and_kind_in_order() {
        let mut s = Summary { lines: 3, accepted: 1, duplicates: 1, ..Summary::default() };
        s.rejected[reason_index(Reason::TooLate)] = 1;
        s.rows.window = 2;
        s.elapsed = Duration::from_secs(5);
        assert_eq!(
            s.to_json(),
            "{\"lines\":3,\"accepted\":1,\"duplicates\":1,\"rejected\":{\"oversize\":0,\"malformed_json\":0,\
             \"missing_field\":0,\"unknown_event_type\":0,\"bad_field\":0,\"ts_out_of_range\":0,\"too_late\":1,\"room_limit\":0},\
             \"rows\":{\"window\":2,\"session\":0,\"source\":0,\"plan\":0,\"product\":0}}\n"
        );
        let human = s.to_string();
        for reason in Reason::ALL {
            assert!(human.contains(reason.as_str()), "{human}");
        }
    }

    #[test]
    fn dead_letter_lines_escape_and_replace_invalid_utf8() {
        let mut buf = Vec::new();
        write_dead_letter(&mut buf, Reason::MalformedJson, 7, b"{\"a\":\"\xff\"\t}").unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"reason\":\"malformed_json\",\"line\":7,\"raw\":\"{\\\"a\\\":\\\"\u{fffd}\\\"\\t}\"}\n"
        );
    }

    #[test]
    fn blank_lines_are_skipped_but_counted_in_line_numbers() {
        let input: &[u8] = b"\n   \n\r\n\t\r\nnot json\r\n";
        let mut out = Vec::new();
        let mut dlq = Vec::new();
        let s = replay(input, &mut out, Some(&mut dlq), EngineConfig::default()).unwrap();
        assert_eq!((s.lines, s.blank_lines), (1, 4));
        assert_eq!(s.rejected(Reason::MalformedJson), 1);
        assert_eq!(
            String::from_utf8(dlq).unwrap(),
            "{\"reason\":\"malformed_json\",\"line\":5,\"raw\":\"not json\"}\n"
        );
    }

    #[test]
    fn without_dead_letter_rejections_are_counted() {
        let input: &[u8] = b"[1]\n{\"type\":\"enter\"}";
        let s = replay(input, Vec::new(), None, EngineConfig::default()).unwrap();
        assert_eq!(s.lines, 2);
        assert_eq!(s.rejected_total(), 2);
        assert!(!s.dead_lettered);
    }
}
