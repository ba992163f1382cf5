//! The writer's bookkeeping, driven by hand: writes finish when the test says so.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use livefunnel_clickhouse::{Annotation, FlushStats};
use livefunnel_core::Row;
use tokio::sync::oneshot;

use super::{RowSink, SinkError, Writer, MAX_WRITES};

type Finish = oneshot::Sender<Result<FlushStats, SinkError>>;

/// Rows are counted; a batch is due when `due` says so; each seal's write finishes
/// when the test sends its result through `finishes[i]`.
#[derive(Default)]
struct ManualSink {
    rows: u64,
    due: Arc<Mutex<bool>>,
    failing: Arc<Mutex<bool>>,
    finishes: Arc<Mutex<Vec<Option<Finish>>>>,
}

impl RowSink for ManualSink {
    fn push(&mut self, rows: &[Row], annotations: &[Annotation]) {
        self.rows += (rows.len() + annotations.len()) as u64;
    }
    fn buffered_rows(&self) -> u64 {
        self.rows
    }
    fn should_flush(&self, _now: std::time::Instant) -> bool {
        *self.due.lock().unwrap()
    }
    fn is_failing(&self) -> bool {
        *self.failing.lock().unwrap()
    }
    fn seal(&mut self) -> BoxFuture<'static, Result<FlushStats, SinkError>> {
        let rows = std::mem::take(&mut self.rows);
        let (tx, rx) = oneshot::channel();
        self.finishes.lock().unwrap().push(Some(tx));
        async move {
            let r = rx.await.expect("the test finishes every write");
            r.map(|s| FlushStats { rows, ..s })
        }
        .boxed()
    }
}

struct Harness {
    writer: Writer,
    due: Arc<Mutex<bool>>,
    failing: Arc<Mutex<bool>>,
    finishes: Arc<Mutex<Vec<Option<Finish>>>>,
}

impl Harness {
    fn new() -> Harness {
        let sink = ManualSink::default();
        let (due, failing, finishes) = (sink.due.clone(), sink.failing.clone(), sink.finishes.clone());
        Harness { writer: Writer::new(Box::new(sink)), due, failing, finishes }
    }

    fn push(&mut self, n: usize) {
        let a = Annotation {
            org_id: "o".into(),
            room_id: "r".into(),
            session_id: "s".into(),
            platform: "other",
            kind: "lucky_bag",
            ts_ms: 1,
            event_id: "e".into(),
            product_id: None,
            text: "lucky bag".into(),
        };
        self.writer.out.push(&[], &vec![a; n]);
    }

    fn barrier(&mut self, drain: bool) -> oneshot::Receiver<Result<(), Arc<SinkError>>> {
        let (tx, rx) = oneshot::channel();
        self.writer.barrier(tx, drain);
        self.writer.seal_if_due();
        rx
    }

    /// Seals the buffered rows as a full batch would.
    fn fill(&mut self) {
        *self.due.lock().unwrap() = true;
        self.writer.seal_if_due();
        *self.due.lock().unwrap() = false;
    }

    fn finish(&self, i: usize, result: Result<FlushStats, SinkError>) {
        let tx = self.finishes.lock().unwrap()[i].take().expect("finished once");
        assert!(tx.send(result).is_ok(), "the write is waiting");
    }

    fn sealed(&self) -> usize {
        self.finishes.lock().unwrap().len()
    }

    /// Hands the writer every write that has finished, in order, as the sink task does.
    async fn settle(&mut self) -> Result<(), crate::PipelineError> {
        use futures::StreamExt;
        while let Some(Some((seq, r))) = self.writer.writes.next().now_or_never() {
            self.writer.written(seq, r)?;
        }
        Ok(())
    }
}

fn acked(rx: &mut oneshot::Receiver<Result<(), Arc<SinkError>>>) -> Option<bool> {
    match rx.try_recv() {
        Ok(r) => Some(r.is_ok()),
        Err(oneshot::error::TryRecvError::Empty) => None,
        Err(oneshot::error::TryRecvError::Closed) => panic!("barrier dropped unanswered"),
    }
}

#[tokio::test]
async fn a_barrier_starts_no_write_and_waits_for_the_batch_its_rows_went_into() {
    let mut h = Harness::new();
    h.push(3);
    let mut b = h.barrier(false);
    assert_eq!(h.sealed(), 0, "a barrier does not force a write");
    h.settle().await.unwrap();
    assert_eq!(acked(&mut b), None, "the rows before it are not written");
    h.push(2);
    h.fill();
    assert_eq!(h.sealed(), 1);
    h.settle().await.unwrap();
    assert_eq!(acked(&mut b), None, "its batch is not written yet");
    h.finish(0, Ok(FlushStats::default()));
    h.settle().await.unwrap();
    assert_eq!(acked(&mut b), Some(true));
}

#[tokio::test]
async fn a_drain_barrier_seals_at_once() {
    let mut h = Harness::new();
    h.push(3);
    let mut b = h.barrier(true);
    assert_eq!(h.sealed(), 1, "drained");
    h.finish(0, Ok(FlushStats::default()));
    h.settle().await.unwrap();
    assert_eq!(acked(&mut b), Some(true));
}

#[tokio::test]
async fn a_barrier_waits_for_earlier_batches_even_when_a_later_one_lands_first() {
    let mut h = Harness::new();
    h.push(1);
    h.fill();
    h.push(1);
    h.fill();
    let mut b = h.barrier(false);
    assert_eq!(h.sealed(), 2, "nothing buffered: no third batch");
    h.finish(1, Ok(FlushStats::default()));
    h.settle().await.unwrap();
    assert_eq!(acked(&mut b), None, "batch 0 is still being written");
    h.finish(0, Ok(FlushStats::default()));
    h.settle().await.unwrap();
    assert_eq!(acked(&mut b), Some(true));
    let mut after = h.barrier(false);
    assert_eq!(acked(&mut after), Some(true), "everything before it is written");
}

#[tokio::test]
async fn a_failed_write_fails_every_waiting_barrier_and_the_sink() {
    let mut h = Harness::new();
    h.push(1);
    h.fill();
    let mut first = h.barrier(false);
    h.push(1);
    let mut second = h.barrier(false);
    h.finish(0, Err(SinkError::Aborted("test")));
    let err = h.settle().await.unwrap_err();
    assert!(err.to_string().contains("aborted while writing to test"), "{err}");
    assert_eq!(acked(&mut first), Some(false));
    assert_eq!(acked(&mut second), Some(false));
}

#[tokio::test]
async fn no_more_than_max_writes_run_at_once() {
    let mut h = Harness::new();
    for _ in 0..MAX_WRITES {
        h.push(1);
        h.fill();
    }
    assert!(!h.writer.has_room(), "the sink stops taking rows");
    h.push(1);
    h.fill();
    let mut drained = h.barrier(true);
    assert_eq!(h.sealed(), MAX_WRITES, "no write beyond the limit, a drain included");
    h.finish(0, Ok(FlushStats::default()));
    h.settle().await.unwrap();
    h.writer.seal_if_due();
    assert_eq!(h.sealed(), MAX_WRITES + 1, "the drain seals once there is room");
    for i in 1..=MAX_WRITES {
        h.finish(i, Ok(FlushStats::default()));
    }
    h.settle().await.unwrap();
    assert_eq!(acked(&mut drained), Some(true));
    assert!(!h.writer.busy());
}

#[tokio::test]
async fn a_failing_write_stops_the_intake_until_it_succeeds() {
    let mut h = Harness::new();
    h.push(1);
    h.fill();
    assert!(h.writer.takes_rows());
    *h.failing.lock().unwrap() = true;
    assert!(!h.writer.takes_rows(), "rows would only wait in memory, and a fenced task's must stay queued");
    *h.failing.lock().unwrap() = false;
    h.finish(0, Ok(FlushStats::default()));
    h.settle().await.unwrap();
    assert!(h.writer.takes_rows());
}

#[tokio::test]
async fn a_sink_that_cannot_start_is_the_fatal_error_and_says_a_restart_alone_does_not_help() {
    use livefunnel_clickhouse::ClickHouseMetrics;
    use livefunnel_metrics::{PipelineMetrics, RoomMetrics};
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file-not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let r = prometheus::Registry::new();
    let metrics = crate::Metrics {
        pipeline: PipelineMetrics::new(&r).unwrap(),
        rooms: RoomMetrics::new(&r, Vec::new()).unwrap(),
        clickhouse: ClickHouseMetrics::new(&r).unwrap(),
    };
    let status = Arc::new(crate::Status::default());
    let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let run = super::run(super::SinkKind::Jsonl(file), rx, metrics, status.clone(), abort, shutdown.clone());
    let err = run.await.unwrap_err();
    assert!(err.message.starts_with("the sink stopped: the jsonl sink's directory: "), "{err}");
    assert!(err.message.ends_with("restart livefunnel, which resumes from its last checkpoints"), "{err}");
    assert!(!err.retryable, "the path is a file: {err:?}");
    assert_eq!(status.fatal.lock().unwrap().as_ref(), Some(&err), "the pipeline's fatal error");
    assert!(shutdown.is_cancelled(), "the pipeline stops");
}
