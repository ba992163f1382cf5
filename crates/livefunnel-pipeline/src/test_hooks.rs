//! Fault injection for the end-to-end tests, compiled only with the `test-hooks`
//! feature (which `cargo test` turns on through the crate's own dev-dependency; a
//! release build has none of it). Set through `TESTKIT_*` environment variables:
//! every `LIVEFUNNEL_*` variable is a configuration key.
//!
//! - `TESTKIT_PANIC_AT=<topic>/<partition>@<offset>`: the partition task panics on that
//!   message.
//! - `TESTKIT_STALL_FILE=<path>`: while that file exists, a partition task that gets
//!   a batch blocks its thread (as a long snapshot or a burst of CPU work would), after
//!   creating `<path>.<topic>-<partition>` to say so.
//! - `TESTKIT_REVOKE_TIMEOUT_MS=<ms>`: how long a revoke (or a stop) waits for the
//!   final checkpoints, instead of 60 s.

use std::time::Duration;

#[cfg(feature = "test-hooks")]
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// How long a revoke waits for its partitions' final checkpoints.
pub fn revoke_timeout(default: Duration) -> Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = var("TESTKIT_REVOKE_TIMEOUT_MS") {
        return Duration::from_millis(ms.parse().expect("TESTKIT_REVOKE_TIMEOUT_MS: milliseconds"));
    }
    default
}

/// Panics when `TESTKIT_PANIC_AT` names this message.
pub fn panic_at(topic: &str, partition: i32, offset: i64) {
    #[cfg(feature = "test-hooks")]
    {
        // Read once: this is on every message's path.
        static AT: std::sync::OnceLock<Option<(String, i32, i64)>> = std::sync::OnceLock::new();
        let at = AT.get_or_init(|| {
            let v = var("TESTKIT_PANIC_AT")?;
            let (tp, offset) = v.rsplit_once('@').expect("TESTKIT_PANIC_AT: <topic>/<partition>@<offset>");
            let (t, p) = tp.rsplit_once('/').expect("TESTKIT_PANIC_AT: <topic>/<partition>@<offset>");
            Some((t.to_owned(), p.parse().expect("a partition"), offset.parse().expect("an offset")))
        });
        if let Some((t, p, o)) = at {
            if (t.as_str(), *p, *o) == (topic, partition, offset) {
                panic!("TESTKIT_PANIC_AT: injected panic at {topic}/{partition}@{offset}");
            }
        }
    }
    let _ = (topic, partition, offset);
}

/// Blocks the calling thread while `TESTKIT_STALL_FILE` exists.
pub fn stall(topic: &str, partition: i32) {
    #[cfg(feature = "test-hooks")]
    {
        static FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
        if let Some(path) = FILE.get_or_init(|| var("TESTKIT_STALL_FILE").map(Into::into)) {
            if path.exists() {
                let marker = format!("{}.{topic}-{partition}", path.display());
                std::fs::write(&marker, b"").expect("writing the stall marker");
                while path.exists() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    let _ = (topic, partition);
}
