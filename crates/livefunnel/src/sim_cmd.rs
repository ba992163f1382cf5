//! `livefunnel sim`: a deterministic, realistic stream of live-room events
//! (contract §1) from `livefunnel-sim`, in arrival order, as JSONL or into a
//! Kafka topic, as fast as possible, at a fixed rate, or in real time.
//!
//! The argument groups ([`SimModelArgs`], [`PacingArgs`]) can be flattened
//! into other commands; [`sim_params_from_args`] and [`drive`] are the parts
//! `demo` shares.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use livefunnel_sim::{
    parse_duration_ms, MessageMeta, ParamsError, Profile, RoomScenario, SimParams, Simulator,
};

use crate::pacing::Pacer;

/// What to simulate.
#[derive(clap::Args, Debug, Clone)]
pub struct SimModelArgs {
    /// Number of live rooms (one broadcast each): room-0001, room-0002, ...
    #[arg(long, default_value_t = 50)]
    pub rooms: u32,
    /// Simulated duration of the stream, e.g. `30m`, `90s`, `2h`, `1500ms`.
    #[arg(long, default_value = "30m", value_parser = parse_duration_ms)]
    pub duration: i64,
    /// PRNG seed: the same seed and arguments always give the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Event time of the start: epoch milliseconds or RFC 3339 (`2026-01-01T08:00:00+08:00`).
    /// Default: 2026-01-01T00:00:00Z, or now with `--realtime`.
    #[arg(long, alias = "start-ms", value_name = "MS|RFC3339", value_parser = parse_start_ms)]
    pub start: Option<i64>,
    /// Share of events delivered 10–100 s late (default 0.002).
    #[arg(long)]
    pub late_share: Option<f64>,
    /// Share of events re-sent with the same `event_id` (default 0.002).
    #[arg(long)]
    pub duplicate_share: Option<f64>,
    /// Share of the messages that are bad: invalid JSON, missing field, unknown type, bad field (default 0).
    #[arg(long)]
    pub malformed_share: Option<f64>,
    /// A scenario for some rooms, repeatable, applied in order:
    /// `KIND[:rooms=LIST][:at=DURATION][:share=FRACTION|:scale=F]`, e.g. `gpm_drop:rooms=1-5:at=10m`,
    /// `gpm_drop:rooms=3:at=35m:share=0.8`, `viewer_cliff:rooms=7:at=15m`, `sales_stall:rooms=2,4:at=12m`,
    /// `late_and_duplicates:rooms=3:share=0.05`, `malformed:rooms=all:share=0.01`,
    /// `audience:rooms=1-4:scale=10`, `normal:rooms=3`.
    /// Rooms are numbered as in their ids (room 1 is room-0001), `all` by default; `at` counts from
    /// the room's own session_start; gpm_drop's `share` is the share of orders lost (0.5 by
    /// default); `audience` multiplies the room's arrival rates by `scale` (0.01 to 1000),
    /// keeping its conversion, order values and schedule.
    #[arg(long, value_name = "SPEC", value_parser = parse_scenario)]
    pub scenario: Vec<RoomScenario>,
}

/// How fast messages are sent.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PacingArgs {
    /// Send this many messages per second, evenly spaced (default: as fast as possible).
    #[arg(long, value_name = "N", value_parser = parse_rate, conflicts_with = "realtime")]
    pub rate: Option<f64>,
    /// Send each message when its simulated arrival time comes on the wall clock; the stream
    /// starts now unless `--start` is given, so a wall display looks live.
    #[arg(long)]
    pub realtime: bool,
}

/// Generate simulated live-room events as JSONL or into a Kafka topic.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    #[command(flatten)]
    pub model: SimModelArgs,
    /// `standard` rooms, small and large as operators report them, or `dense`: every room
    /// busy for the whole stream, ~1,000 events per minute with ~1,000 viewers online and
    /// 200 products (the engine's sizing load; `--rooms 1000 --duration 5m` is ~5 M events).
    #[arg(long, default_value = "standard", value_parser = parse_profile)]
    pub profile: Profile,
    #[command(flatten)]
    pub pacing: PacingArgs,
    /// Output JSONL file, or `-` for standard output (the default).
    #[arg(long, value_name = "FILE|-", conflicts_with = "kafka_brokers")]
    pub output: Option<PathBuf>,
    /// Send to Kafka instead (message key: room_id), e.g. `localhost:9092`; needs `--topic`.
    #[arg(long, value_name = "HOST:PORT[,...]", value_parser = parse_brokers, requires = "topic")]
    pub kafka_brokers: Option<String>,
    /// Kafka topic to send to; needs `--kafka-brokers`.
    #[arg(long, value_name = "NAME", value_parser = parse_topic, requires = "kafka_brokers")]
    pub topic: Option<String>,
}

/// Where `livefunnel sim` sends its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimOutput {
    /// One message per line; `None` is standard output.
    Jsonl(Option<PathBuf>),
    /// One message per record, keyed by `room_id`.
    Kafka { brokers: String, topic: String },
}

impl SimArgs {
    pub fn output(&self) -> SimOutput {
        match (&self.kafka_brokers, &self.topic) {
            (Some(brokers), Some(topic)) => {
                SimOutput::Kafka { brokers: brokers.clone(), topic: topic.clone() }
            }
            _ => SimOutput::Jsonl(self.output.clone().filter(|p| p.as_os_str() != "-")),
        }
    }
}

/// Arguments the simulator cannot run with; fix the command line, retrying does not help.
#[derive(Debug, thiserror::Error)]
pub enum SimArgsError {
    #[error("{flag} must be a fraction between 0 and 1, got {value}")]
    Share { flag: &'static str, value: f64 },
    #[error("--malformed-share must be below 1 (it is the share of bad messages), got {0}")]
    MalformedShare(f64),
    #[error(transparent)]
    Params(#[from] ParamsError),
}

/// The simulator parameters `args` select. The stream starts at `--start`,
/// else at `now_ms` when `realtime`, else at the fixed default start.
pub fn sim_params_from_args(
    args: &SimModelArgs,
    realtime: bool,
    now_ms: i64,
) -> Result<SimParams, SimArgsError> {
    let d = SimParams::default();
    let p = SimParams {
        rooms: args.rooms,
        duration_ms: args.duration,
        seed: args.seed,
        start_ms: args.start.unwrap_or(if realtime { now_ms } else { d.start_ms }),
        late_share: args.late_share.unwrap_or(d.late_share),
        duplicate_share: args.duplicate_share.unwrap_or(d.duplicate_share),
        malformed_share: args.malformed_share.unwrap_or(d.malformed_share),
        scenarios: args.scenario.clone(),
    };
    for (flag, value) in [
        ("--late-share", p.late_share),
        ("--duplicate-share", p.duplicate_share),
        ("--malformed-share", p.malformed_share),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(SimArgsError::Share { flag, value });
        }
    }
    if p.malformed_share >= 1.0 {
        return Err(SimArgsError::MalformedShare(p.malformed_share));
    }
    p.validate()?;
    Ok(p)
}

impl PacingArgs {
    /// The pacer these flags select; with `--realtime`, simulated `start_ms` happens at `now`.
    pub fn pacer(&self, now: Instant, start_ms: i64) -> Pacer {
        match (self.rate, self.realtime) {
            (_, true) => Pacer::realtime(now, start_ms),
            (Some(r), false) => Pacer::rate(r),
            (None, false) => Pacer::unpaced(),
        }
    }
}

/// Where [`drive`] puts messages.
pub trait MessageSink {
    /// Sends one message; `key` is its `room_id`. `Break` stops the stream
    /// early without an error (the reader went away).
    fn send(&mut self, key: &str, meta: MessageMeta, payload: &[u8]) -> anyhow::Result<ControlFlow<()>>;
    /// Makes everything sent so far visible; called before each pause and at the end.
    fn flush(&mut self) -> anyhow::Result<ControlFlow<()>>;
}

/// JSONL: one message per line.
pub struct JsonlSink<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> JsonlSink<W> {
    pub fn new(out: W) -> JsonlSink<W> {
        JsonlSink { out: BufWriter::with_capacity(1 << 16, out) }
    }
}

/// `livefunnel sim | head` is fine: a closed pipe ends the stream quietly.
fn io_flow(r: io::Result<()>) -> anyhow::Result<ControlFlow<()>> {
    match r {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ControlFlow::Break(())),
        Err(e) => Err(e).context("cannot write output"),
    }
}

impl<W: Write> MessageSink for JsonlSink<W> {
    fn send(&mut self, _key: &str, _meta: MessageMeta, payload: &[u8]) -> anyhow::Result<ControlFlow<()>> {
        io_flow(self.out.write_all(payload).and_then(|()| self.out.write_all(b"\n")))
    }

    fn flush(&mut self) -> anyhow::Result<ControlFlow<()>> {
        io_flow(self.out.flush())
    }
}

/// Sends every message of `sim` to `sink` when `pacer` says, reading the
/// clock with `clock` and waiting with `sleep`. Returns the number sent.
pub fn drive(
    sim: &mut Simulator,
    pacer: &mut Pacer,
    sink: &mut dyn MessageSink,
    clock: &mut dyn FnMut() -> Instant,
    sleep: &mut dyn FnMut(Duration),
) -> anyhow::Result<u64> {
    let mut buf = Vec::with_capacity(512);
    let mut sent = 0;
    loop {
        buf.clear();
        let Some(meta) = sim.next_with_meta(&mut buf) else { break };
        if pacer.is_paced() {
            let now = clock();
            let at = pacer.send_at(now, meta.due_ms);
            if at > now {
                if sink.flush()?.is_break() {
                    return Ok(sent);
                }
                sleep(at - now);
            }
        }
        if sink.send(sim.room_id(meta.room), meta, &buf)?.is_break() {
            return Ok(sent);
        }
        sent += 1;
    }
    // Everything was sent: a reader gone now changes nothing.
    let _ = sink.flush()?;
    Ok(sent)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Runs `livefunnel sim`.
/// A Kafka topic as the simulator's output: key `room_id` (one room, one partition),
/// the event's `ts` as the record timestamp.
pub struct KafkaSink {
    producer: livefunnel_kafka::rdkafka::producer::ThreadedProducer<
        livefunnel_kafka::rdkafka::producer::DefaultProducerContext,
    >,
    topic: String,
}

impl KafkaSink {
    pub fn new(brokers: &str, topic: String) -> anyhow::Result<KafkaSink> {
        let producer = livefunnel_kafka::rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "10")
            .set("enable.idempotence", "true")
            .create()
            .with_context(|| format!("creating a kafka producer for {brokers}"))?;
        Ok(KafkaSink { producer, topic })
    }
}

impl MessageSink for KafkaSink {
    fn send(&mut self, key: &str, meta: MessageMeta, payload: &[u8]) -> anyhow::Result<ControlFlow<()>> {
        use livefunnel_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
        use livefunnel_kafka::rdkafka::producer::BaseRecord;
        let mut rec = BaseRecord::to(&self.topic).key(key).payload(payload).timestamp(meta.ts_ms);
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(ControlFlow::Continue(())),
                // The local queue is full: let deliveries make room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => anyhow::bail!("producing to {}: {e}", self.topic),
            }
        }
    }

    fn flush(&mut self) -> anyhow::Result<ControlFlow<()>> {
        use livefunnel_kafka::rdkafka::producer::Producer;
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| anyhow::anyhow!("delivering to {}: {e}", self.topic))?;
        Ok(ControlFlow::Continue(()))
    }
}

pub fn run(args: &SimArgs) -> anyhow::Result<()> {
    let params = sim_params_from_args(&args.model, args.pacing.realtime, now_ms())?;
    let mut pacer = args.pacing.pacer(Instant::now(), params.start_ms);
    let mut sim = Simulator::with_profile(params, args.profile);
    let mut clock = Instant::now;
    let mut sleep = std::thread::sleep;
    match args.output() {
        SimOutput::Jsonl(None) => {
            let mut sink = JsonlSink::new(io::stdout().lock());
            drive(&mut sim, &mut pacer, &mut sink, &mut clock, &mut sleep)?;
        }
        SimOutput::Jsonl(Some(path)) => {
            let file = File::create(&path)
                .with_context(|| format!("cannot create output file {}", path.display()))?;
            let mut sink = JsonlSink::new(file);
            let sent = drive(&mut sim, &mut pacer, &mut sink, &mut clock, &mut sleep)?;
            tracing::info!(events = sent, output = %path.display(), "sim done");
        }
        SimOutput::Kafka { brokers, topic } => {
            let mut sink = KafkaSink::new(&brokers, topic)?;
            let sent = drive(&mut sim, &mut pacer, &mut sink, &mut clock, &mut sleep)?;
            eprintln!("sent {sent} messages to {}", sink.topic);
        }
    }
    Ok(())
}

/// Parses one `--scenario` spec (`KIND[:rooms=LIST][:at=DURATION][:share=FRACTION|:scale=F]`);
/// the error names the bad part and the expected form. Shared with `demo`.
pub fn parse_scenario(s: &str) -> Result<RoomScenario, String> {
    s.parse().map_err(|e: livefunnel_sim::ScenarioSpecError| e.to_string())
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::parse(s).ok_or_else(|| format!("`{s}` is not a profile: use `standard` or `dense`"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("`{s}` is not a positive number of messages per second")),
    }
}

fn parse_brokers(s: &str) -> Result<String, String> {
    for b in s.split(',').map(str::trim) {
        let ok =
            b.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(format!("`{b}` is not HOST:PORT (e.g. localhost:9092; several separated by commas)"));
        }
    }
    Ok(s.trim().to_owned())
}

fn parse_topic(s: &str) -> Result<String, String> {
    let legal = s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if s.is_empty() || s.len() > 249 || !legal || s == "." || s == ".." {
        return Err(format!("`{s}` is not a Kafka topic name (1–249 of a-z A-Z 0-9 . _ -)"));
    }
    Ok(s.to_owned())
}

/// Epoch milliseconds, or RFC 3339 `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`.
fn parse_start_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("`{s}` is neither epoch milliseconds nor RFC 3339 like 2026-01-01T08:00:00+08:00");
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|d| d.parse::<i64>().ok()).ok_or_else(bad);
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return Err(bad());
    }
    let (y, mo, d, h, mi, sec) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut frac_ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let ms: String = f[..digits].chars().chain("00".chars()).take(3).collect();
        frac_ms = ms.parse::<i64>().map_err(|_| bad())?;
        rest = &f[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let oh: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let om: i64 = rest[4..6].parse().map_err(|_| bad())?;
            sign * (oh * 60 + om)
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo, d);
    Ok(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1_000 + frac_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
