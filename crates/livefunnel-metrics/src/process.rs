//! Series about the process itself: `livefunnel_build_info{version, git_sha}` (always
//! 1: join on it to label other series with the running build) and the `process_*`
//! series of the prometheus crate (CPU seconds, resident and virtual memory, open file
//! descriptors and their limit, start time), read from `/proc` at each scrape.

use prometheus::{IntGaugeVec, Opts, Registry};

/// Registers both on `registry`.
pub fn register_process_series(
    registry: &Registry,
    version: &str,
    git_sha: &str,
) -> Result<(), prometheus::Error> {
    let info = IntGaugeVec::new(
        Opts::new("livefunnel_build_info", "the running build: its version and git commit (value 1)"),
        &["version", "git_sha"],
    )?;
    info.with_label_values(&[version, git_sha]).set(1);
    registry.register(Box::new(info))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn build_info_and_process_series_are_exported() {
        let registry = prometheus::Registry::new();
        super::register_process_series(&registry, "1.2.3", "abc123").unwrap();
        let text = crate::render(&registry);
        assert!(text.contains("livefunnel_build_info{git_sha=\"abc123\",version=\"1.2.3\"} 1"), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_start_time_seconds "), "{text}");
    }
}
