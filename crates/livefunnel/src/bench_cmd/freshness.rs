//! The freshness phase: a fresh topic and pipeline, the simulator at a steady rate
//! with probe orders, `/metrics` scraped over HTTP until each probe shows.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use livefunnel_kafka::rdkafka::mocking::MockCluster;
use livefunnel_pipeline as pipeline;

use super::report::{self, Freshness};
use super::running::Running;
use super::{procstat, produce, scrape, Bench, TOPIC};

/// After production stops, how long the probes still missing may take to show.
const LAST_PROBES_TIMEOUT: Duration = Duration::from_secs(60);

impl Bench<'_> {
    pub(super) fn freshness(&self) -> anyhow::Result<Freshness> {
        let args = self.args;
        let mut parts = procstat::Parts::default();
        let before = procstat::thread_ids();
        let mock = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
        mock.create_topic(TOPIC, args.partitions, 1).context("creating the freshness topic")?;
        let brokers = mock.bootstrap_servers();
        parts.mock_broker_since(&before);
        let before = procstat::thread_ids();
        let kafka_producer = produce::connect(&brokers, &args.compression, TOPIC)?;
        parts.producer_since(&before);
        let seconds = Duration::from_secs(args.freshness_seconds);
        // A little more than the phase needs, simulated before the clock starts.
        let needed = (f64::from(args.rate) * seconds.as_secs_f64() * 1.05) as u64 + 1_000;
        println!(
            "\nfreshness: simulating {} events, then {} events/s for {} s with a probe every {} ms ...",
            report::thousands(needed),
            report::thousands(u64::from(args.rate)),
            args.freshness_seconds,
            args.probe_every_ms
        );
        let paced = produce::Paced {
            rate: f64::from(args.rate),
            duration: seconds,
            probe_every: Duration::from_millis(args.probe_every_ms),
            stream: produce::Generated::new(self.sim_params(needed)?, needed),
            tag: format!("probe-{}", pipeline::now_ms()),
        };
        let settings = self.settings(&brokers, "freshness");
        let f = self.rt.block_on(async {
            let mut p = Running::start(settings, true).await?;
            let addr = p.addr.context("the pipeline's http address")?;
            p.wait_ready(addr).await?;
            procstat::reset_peak_rss();
            let stop = Arc::new(AtomicBool::new(false));
            let seen = Arc::new(AtomicUsize::new(0));
            let scraper = {
                let (stop, seen) = (stop.clone(), seen.clone());
                let every = Duration::from_millis(args.scrape_every_ms);
                std::thread::Builder::new()
                    .name("bench-scraper".into())
                    .spawn(move || scrape::run(addr, every, &stop, &seen))
                    .context("starting the scraper thread")?
            };
            let cpu0 = procstat::sample(args.clickhouse_pid);
            let consumed_at_start = p.status.events_consumed.load(Ordering::Relaxed);
            let producer = {
                let consumed = p.consumed_counters(args.partitions);
                std::thread::Builder::new()
                    .name("bench-producer".into())
                    .spawn(move || {
                        let mut feeder = produce::Feeder::new(kafka_producer, TOPIC, consumed);
                        let produced = paced.run(&mut feeder);
                        // The producer's threads end with it: their CPU so far.
                        (produced, procstat::sample(None))
                    })
                    .context("starting the producer thread")?
            };
            let produced = tokio::task::spawn_blocking(move || producer.join())
                .await
                .context("waiting for the producer")?
                .map_err(|_| anyhow::anyhow!("the producer thread panicked"))
                .and_then(|(r, last)| r.map(|r| (r, last)));
            let (produced, producer_last) = match produced {
                Ok(r) => r,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    p.abort.cancel();
                    return Err(e);
                }
            };
            let consumed_at_end = p.status.events_consumed.load(Ordering::Relaxed);
            let mut cpu1 = procstat::sample(args.clickhouse_pid);
            cpu1.keep_ended_threads(&producer_last);
            let probes_sent = produced.probes.len();
            // The probe room's `session_start` and `enter`, then the probes.
            let messages = produced.sent + probes_sent as u64 + 2;
            let deadline = Instant::now() + LAST_PROBES_TIMEOUT;
            while (seen.load(Ordering::Relaxed) < probes_sent || p.processed() < messages)
                && Instant::now() < deadline
                && !p.finished()
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.store(true, Ordering::Relaxed);
            let observed = tokio::task::spawn_blocking(move || scraper.join())
                .await
                .context("waiting for the scraper")?
                .map_err(|_| anyhow::anyhow!("the scraper thread panicked"))?;
            let peak_rss_mb = procstat::rss_mb().1;
            p.stop().await?;
            let counts = p.counts();
            // Upper bound: the answer that showed the probe was complete. Without the
            // rendering and transfer of that answer: measured from the request.
            let (lat, lat_request) = latencies(&produced.probes, &observed.at);
            let in_order = produced
                .probes
                .iter()
                .zip(&observed.at)
                .map(|(s, (_, done))| (done.saturating_duration_since(*s).as_secs_f64() * 1000.0).round())
                .collect();
            let elapsed = produced.elapsed.as_secs_f64();
            let cpu = procstat::between(&cpu0, &cpu1, &parts);
            let pipeline_cpu_us_per_event = 1e6 * cpu.pipeline_seconds()
                / consumed_at_end.saturating_sub(consumed_at_start).max(1) as f64;
            anyhow::Ok(Freshness {
                target_rate: f64::from(args.rate),
                seconds: elapsed,
                events_produced: produced.sent,
                achieved_rate: produced.sent as f64 / elapsed,
                producer_waited_seconds: produced.waited.as_secs_f64(),
                producer_cpu_seconds: produced.cpu_seconds,
                stream_ended: produced.stream_ended,
                messages,
                lag_at_end: messages.saturating_sub(consumed_at_end),
                probes_sent,
                probes_seen: observed.at.len().min(probes_sent),
                p50_ms: scrape::quantile(&lat, 0.5),
                p99_ms: scrape::quantile(&lat, 0.99),
                max_ms: lat.last().copied(),
                mean_ms: (!lat.is_empty()).then(|| lat.iter().sum::<f64>() / lat.len() as f64),
                probe_ms: in_order,
                p50_ms_from_request: scrape::quantile(&lat_request, 0.5),
                p99_ms_from_request: scrape::quantile(&lat_request, 0.99),
                scrapes: observed.scrapes,
                scrapes_failed: observed.failed,
                scrape_ms_mean: 1000.0 * observed.scrape_seconds_total / observed.scrapes.max(1) as f64,
                scrape_ms_max: 1000.0 * observed.scrape_seconds_max,
                scrape_interval_ms: 1000.0 * observed.span_seconds / observed.scrapes.max(1) as f64,
                metrics_bytes: observed.body_bytes_max,
                counts,
                cpu_cores: cpu.process_seconds / elapsed,
                pipeline_cpu_us_per_event,
                cpu,
                peak_rss_mb,
            })
        })?;
        drop(mock);
        Ok(f)
    }
}

/// Sorted milliseconds from each probe's sending to the end, and to the start, of the
/// scrape that first showed it.
fn latencies(sent: &[Instant], seen: &[(Instant, Instant)]) -> (Vec<f64>, Vec<f64>) {
    let ms = |from: &Instant, to: &Instant| to.saturating_duration_since(*from).as_secs_f64() * 1000.0;
    let mut end: Vec<f64> = sent.iter().zip(seen).map(|(s, (_, done))| ms(s, done)).collect();
    let mut start: Vec<f64> = sent.iter().zip(seen).map(|(s, (asked, _))| ms(s, asked)).collect();
    end.sort_by(f64::total_cmp);
    start.sort_by(f64::total_cmp);
    (end, start)
}
