//! A partition task's fence: closed when the task is given up (its revoke, or the
//! stop, timed out), so an owner that lost its partition writes nothing after that.
//! The sink drops the rows such a task had queued, and its checkpoint writes stop.

use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone, Default)]
pub struct Fence(Arc<Mutex<bool>>);

impl Fence {
    /// Runs `f` unless the fence is closed, keeping it open meanwhile: [`Fence::close`]
    /// waits for a running `f`, so nothing guarded by it happens once `close` returned.
    /// Blocking: a checkpoint write runs under it.
    pub fn unless_closed<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let closed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (!*closed).then(f)
    }

    /// Closes the fence, after the guarded call in progress, if any. Blocking.
    pub fn close(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    pub fn is_closed(&self) -> bool {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn close_waits_for_the_guarded_call_and_stops_the_next() {
        let fence = Fence::default();
        assert_eq!(fence.unless_closed(|| 1), Some(1));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let written = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (f, w) = (fence.clone(), written.clone());
        let writer = std::thread::spawn(move || {
            f.unless_closed(|| {
                started_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                w.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        });
        started_rx.recv().unwrap();
        fence.close();
        // `close` returned: the write in progress is complete, and none follows.
        assert!(written.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(writer.join().unwrap(), Some(()));
        assert!(fence.is_closed());
        assert_eq!(fence.unless_closed(|| 2), None);
    }
}
