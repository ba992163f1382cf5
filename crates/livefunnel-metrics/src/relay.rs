//! `livefunnel alert-relay`'s series: messages relayed to WeCom group robots.

use prometheus::{IntCounterVec, Opts, Registry};

/// What became of each notification Alertmanager sent to the relay.
pub const RELAY_RESULTS: [&str; 4] = ["ok", "wecom_error", "unreachable", "refused"];

#[derive(Clone)]
pub struct RelayMetrics {
    messages: IntCounterVec,
}

impl RelayMetrics {
    pub fn new(registry: &Registry, robots: &[&str]) -> Result<RelayMetrics, prometheus::Error> {
        let messages = IntCounterVec::new(
            Opts::new(
                "livefunnel_alert_relay_messages_total",
                "notifications relayed to a WeCom group robot, by robot and result: ok, wecom_error (WeCom answered an errcode), unreachable, refused (an unknown robot or a body that is not Alertmanager's)",
            ),
            &["robot", "result"],
        )?;
        registry.register(Box::new(messages.clone()))?;
        for robot in robots {
            for result in RELAY_RESULTS {
                messages.with_label_values(&[robot, result]);
            }
        }
        Ok(RelayMetrics { messages })
    }

    /// One notification for `robot` ended with `result` (one of [`RELAY_RESULTS`]).
    pub fn relayed(&self, robot: &str, result: &str) {
        debug_assert!(RELAY_RESULTS.contains(&result), "{result}");
        self.messages.with_label_values(&[robot, result]).inc();
    }
}
