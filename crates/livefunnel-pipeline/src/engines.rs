//! The engine threads: the partition tasks (decoding, the engines, room series,
//! snapshots) run on threads of their own, so a burst of CPU work or a large snapshot
//! never holds the workers that serve `/metrics`, the wall, the consumer loop and the
//! sink.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::PipelineError;

fn thread_error(source: std::io::Error) -> PipelineError {
    PipelineError::Thread { what: "an engine thread", source }
}

/// Threads each running a single-threaded runtime; a partition task stays on the
/// thread it starts on, the one with the fewest tasks then.
///
/// Not one work-stealing runtime: its idle workers look for work to steal, park, and
/// are woken for batches handed over from the consumer loop. In the bench (three runs
/// each, alternating) that took 9 % off the throughput phase and added 7 % of CPU to
/// the freshness phase, against partitions beside the consumer loop; these threads
/// were within the runs' spread of it.
pub struct EnginePool {
    threads: Vec<EngineThread>,
}

struct EngineThread {
    handle: Handle,
    /// The tasks started on it and not finished.
    tasks: Arc<AtomicUsize>,
    /// Dropped to stop the thread: its runtime drops the tasks still there.
    _stop: oneshot::Sender<()>,
}

/// Counts a task down when it finishes or is dropped.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EnginePool {
    /// `threads` threads; 0 is one per core the process may use.
    pub fn start(threads: usize) -> Result<EnginePool, PipelineError> {
        let n = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let threads = (0..n)
            .map(|i| {
                let rt = Builder::new_current_thread().enable_all().build().map_err(thread_error)?;
                let handle = rt.handle().clone();
                let (stop, stopped) = oneshot::channel::<()>();
                std::thread::Builder::new()
                    .name(format!("lf-engine-{i}"))
                    .spawn(move || {
                        rt.block_on(async {
                            let _ = stopped.await;
                        })
                    })
                    .map_err(thread_error)?;
                Ok(EngineThread { handle, tasks: Arc::default(), _stop: stop })
            })
            .collect::<Result<_, PipelineError>>()?;
        Ok(EnginePool { threads })
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Starts `task` on the thread with the fewest tasks.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let t =
            self.threads.iter().min_by_key(|t| t.tasks.load(Ordering::Relaxed)).expect("at least one thread");
        t.tasks.fetch_add(1, Ordering::Relaxed);
        let running = Running(t.tasks.clone());
        t.handle.spawn(async move {
            let _running = running;
            task.await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_spread_over_named_engine_threads_and_go_with_the_pool() {
        let pool = EnginePool::start(2).unwrap();
        assert_eq!(pool.threads(), 2);
        let name = || async { std::thread::current().name().map(str::to_owned) };
        // The first thread has a task that does not end: the next one goes to the other.
        let never = pool.spawn(std::future::pending::<()>());
        let on = pool.spawn(name()).await.unwrap();
        assert_eq!(on.as_deref(), Some("lf-engine-1"));
        let (again, again2) = (pool.spawn(name()).await.unwrap(), pool.spawn(name()).await.unwrap());
        assert_eq!((again.as_deref(), again2.as_deref()), (Some("lf-engine-1"), Some("lf-engine-1")));
        // A task still running when the pool goes is dropped, not waited for.
        drop(pool);
        assert!(never.await.unwrap_err().is_cancelled());
    }

    #[test]
    fn zero_threads_is_one_per_core() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(EnginePool::start(0).unwrap().threads(), cores);
    }
}
