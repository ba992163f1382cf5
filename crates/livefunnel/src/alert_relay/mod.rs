//! `livefunnel alert-relay`: Alertmanager's webhook in, WeCom group robots (企业微信群机器人)
//! out. Alertmanager has no group-robot receiver, and its webhook body cannot be shaped
//! by a template, so `webhook_configs` post to `http://<listen>/wecom/<robot>` and the
//! relay posts each notification as one markdown message to that robot's webhook
//! (`[alert_relay.robots]`: robot name → key).
//!
//! WeCom answers HTTP 200 with an `errcode` even when it refuses a message (a wrong key,
//! the 20-messages-a-minute limit, a caller IP outside the trusted list: 60020). The
//! relay logs every refusal at `error` with WeCom's code, message and what to do, counts
//! it, and answers Alertmanager 502, so Alertmanager retries and logs the failure too:
//! nothing is refused silently.

mod render;

use livefunnel_core::ConfigError;
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livefunnel_clickhouse::Secret;
use livefunnel_metrics::RelayMetrics;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

pub use render::{content, robot_body, Notification, MAX_CONTENT_BYTES};

/// `[alert_relay]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRelayConfig {
    /// Where Alertmanager's `webhook_configs` post, as `http://<listen>/wecom/<robot>`;
    /// `/metrics` is served there too.
    pub listen: String,
    /// WeCom's group-robot endpoint; the key goes in its `key` parameter.
    pub wecom_url: String,
    /// Robot name (the last part of the webhook path) → the robot's webhook key. Keys
    /// are secrets: set them from the environment,
    /// `LIVEFUNNEL_ALERT_RELAY__ROBOTS__<NAME>=<key>` (names in lower case, `_` not `-`).
    pub robots: BTreeMap<String, Secret>,
    /// Alerts listed in one message, at most; the rest are counted ("N more").
    pub max_alerts: usize,
    /// How long one call to WeCom may take.
    pub timeout_ms: u64,
}

impl Default for AlertRelayConfig {
    fn default() -> AlertRelayConfig {
        AlertRelayConfig {
            listen: "127.0.0.1:9096".into(),
            wecom_url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send".into(),
            robots: BTreeMap::new(),
            max_alerts: 20,
            timeout_ms: 10_000,
        }
    }
}

impl AlertRelayConfig {
    /// The key and the fix of the first unusable value.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(self.wecom_url.starts_with("https://") || self.wecom_url.starts_with("http://")) {
            return Err(ConfigError::at(
                "alert_relay.wecom_url",
                "must be an http(s) URL, e.g. https://qyapi.weixin.qq.com/cgi-bin/webhook/send".into(),
            ));
        }
        if self.max_alerts == 0 {
            return Err(ConfigError::at("alert_relay.max_alerts", "must be at least 1: use e.g. 20".into()));
        }
        for (name, key) in &self.robots {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ConfigError::at(
                    format!("alert_relay.robots.{name}"),
                    "a robot name is letters, digits and _: it is the last part of the webhook path".into(),
                ));
            }
            if key.expose().is_empty() {
                return Err(ConfigError::at(
                    format!("alert_relay.robots.{name}"),
                    format!(
                        "is empty: set LIVEFUNNEL_ALERT_RELAY__ROBOTS__{}=<the robot's webhook key>",
                        name.to_uppercase()
                    ),
                ));
            }
        }
        Ok(())
    }
}

type HttpsClient =
    Client<hyper_tls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

struct Relay {
    cfg: AlertRelayConfig,
    client: HttpsClient,
    metrics: RelayMetrics,
    registry: prometheus::Registry,
}

/// Serves the relay on `listener` until `stop` resolves.
pub async fn serve(
    cfg: AlertRelayConfig,
    listener: tokio::net::TcpListener,
    registry: prometheus::Registry,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let robots: Vec<&str> = cfg.robots.keys().map(String::as_str).collect();
    let metrics = RelayMetrics::new(&registry, &robots)?;
    let client = Client::builder(TokioExecutor::new()).build(hyper_tls::HttpsConnector::new());
    let relay = Arc::new(Relay { cfg, client, metrics, registry });
    let app = Router::new()
        .route("/wecom/{robot}", post(relay_one))
        .route("/metrics", axum::routing::get(metrics_text))
        .with_state(relay);
    axum::serve(listener, app).with_graceful_shutdown(stop).await.context("serving the alert relay")
}

async fn metrics_text(State(r): State<Arc<Relay>>) -> String {
    livefunnel_metrics::render(&r.registry)
}

async fn relay_one(
    State(r): State<Arc<Relay>>,
    Path(robot): Path<String>,
    body: Bytes,
) -> (StatusCode, String) {
    let Some(key) = r.cfg.robots.get(&robot) else {
        r.metrics.relayed(&robot_label(&r, &robot), "refused");
        warn!(robot = %robot, "alert for an unknown robot: add it to [alert_relay.robots]");
        return (StatusCode::NOT_FOUND, format!("no robot {robot:?} in [alert_relay.robots]\n"));
    };
    let notification: Notification = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            r.metrics.relayed(&robot, "refused");
            warn!(robot = %robot, error = %e, "not an Alertmanager webhook body");
            return (StatusCode::BAD_REQUEST, format!("not an Alertmanager webhook body: {e}\n"));
        }
    };
    if notification.version != "4" {
        warn!(robot = %robot, version = %notification.version, "webhook payload version other than 4");
    }
    let message = robot_body(&notification, r.cfg.max_alerts);
    match post_to_wecom(&r, key, &message).await {
        Ok(()) => {
            r.metrics.relayed(&robot, "ok");
            info!(robot = %robot, status = %notification.status, alerts = notification.alerts.len(), "alert relayed");
            (StatusCode::OK, "ok\n".into())
        }
        Err(Refusal::Wecom { code, message }) => {
            r.metrics.relayed(&robot, "wecom_error");
            error!(robot = %robot, errcode = code, errmsg = %message, fix = hint(code), "wecom refused the robot message");
            (StatusCode::BAD_GATEWAY, format!("wecom errcode {code}: {message}\n"))
        }
        Err(Refusal::Unreachable(e)) => {
            r.metrics.relayed(&robot, "unreachable");
            error!(robot = %robot, error = %e, "wecom unreachable; alertmanager will retry");
            (StatusCode::BAD_GATEWAY, format!("wecom unreachable: {e}\n"))
        }
    }
}

/// A robot name for the label: only configured names, so a caller cannot grow the series.
fn robot_label(r: &Relay, robot: &str) -> String {
    if r.cfg.robots.contains_key(robot) {
        robot.to_owned()
    } else {
        "unknown".to_owned()
    }
}

enum Refusal {
    Wecom { code: i64, message: String },
    Unreachable(String),
}

/// What an operator does about a WeCom error code.
fn hint(code: i64) -> &'static str {
    match code {
        60020 => "the relay's egress IP is not in the WeCom trusted IP list: add it (admin console, the application or robot's trusted IPs) or relay from an allowed host",
        93000 | 40001 | 40008 => "the robot's webhook key is wrong or the robot was removed: copy the key again into alert_relay.robots",
        45009 => "more than 20 messages a minute to this robot: raise group_interval in Alertmanager or split the rooms over more robots",
        40058 | 44004 | 40061 => "the message was refused as malformed: report it with the relay's log",
        _ => "see WeCom's global error codes (developer.work.weixin.qq.com/document/path/90313)",
    }
}

async fn post_to_wecom(r: &Relay, key: &Secret, message: &serde_json::Value) -> Result<(), Refusal> {
    // The key is in the URL: errors are redacted before anything shows them.
    let request = hyper::Request::post(url_with_key(&r.cfg.wecom_url, key.expose()))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(message.to_string())))
        .map_err(|e| Refusal::Unreachable(redacted(&e.to_string(), key.expose())))?;
    let timeout = std::time::Duration::from_millis(r.cfg.timeout_ms);
    let response = tokio::time::timeout(timeout, r.client.request(request))
        .await
        .map_err(|_| Refusal::Unreachable(format!("no answer within {} ms", r.cfg.timeout_ms)))?
        .map_err(|e| Refusal::Unreachable(redacted(&e.to_string(), key.expose())))?;
    let status = response.status();
    let body =
        response.into_body().collect().await.map_err(|e| Refusal::Unreachable(e.to_string()))?.to_bytes();
    if !status.is_success() {
        return Err(Refusal::Unreachable(format!("HTTP {status}")));
    }
    #[derive(Deserialize)]
    struct Answer {
        errcode: i64,
        #[serde(default)]
        errmsg: String,
    }
    let answer: Answer = serde_json::from_slice(&body)
        .map_err(|e| Refusal::Unreachable(format!("an answer that is not WeCom's: {e}")))?;
    if answer.errcode == 0 {
        Ok(())
    } else {
        Err(Refusal::Wecom { code: answer.errcode, message: answer.errmsg })
    }
}

fn url_with_key(base: &str, key: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{base}{sep}key={encoded}")
}

fn redacted(text: &str, key: &str) -> String {
    if key.is_empty() {
        text.to_owned()
    } else {
        text.replace(key, livefunnel_clickhouse::REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_keys_are_checked_and_never_shown() {
        let mut cfg = AlertRelayConfig::default();
        cfg.check().unwrap();
        cfg.robots.insert("org-a".into(), Secret::new("k"));
        assert_eq!(cfg.check().unwrap_err().key, "alert_relay.robots.org-a");
        cfg.robots.clear();
        cfg.robots.insert("org_a".into(), Secret::new(""));
        let ConfigError { key, message: fix } = cfg.check().unwrap_err();
        assert_eq!(key, "alert_relay.robots.org_a");
        assert!(fix.contains("LIVEFUNNEL_ALERT_RELAY__ROBOTS__ORG_A"), "{fix}");
        cfg.robots.insert("org_a".into(), Secret::new("s3cr3t"));
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        assert_eq!(url_with_key("https://w/send", "a b&c"), "https://w/send?key=a%20b%26c");
        assert_eq!(
            redacted("error for https://w/send?key=s3cr3t", "s3cr3t"),
            "error for https://w/send?key=[redacted]"
        );
        assert!(hint(60020).contains("trusted IP"));
    }
}
