//! The WeCom group-robot route end to end: Debian's Alertmanager with the shipped
//! `deploy/alertmanager/alertmanager.yml` (robot URLs pointed at the relay, waits
//! shortened), `livefunnel alert-relay`, and a fake WeCom robot API on loopback that
//! refuses the first message with errcode 60020 (caller IP not trusted) and accepts
//! the retry. The message WeCom receives must be a valid robot markdown body naming the
//! room, and the refusal must show in the relay's log and counters.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, Uri};
use axum::routing::post;
use axum::Router;
use common::*;

type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// The fake robot API: records (key, body); errcode 60020 for the first request.
async fn fake_wecom(
    State(received): State<Received>,
    uri: Uri,
    body: String,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let key = uri.query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("key=")).unwrap_or("");
    let mut r = received.lock().unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    r.push((key.to_owned(), body));
    let answer = if r.len() == 1 {
        r#"{"errcode":60020,"errmsg":"not allow to access from your ip, hint: [x], from ip: 127.0.0.1"}"#
    } else {
        r#"{"errcode":0,"errmsg":"ok"}"#
    };
    ([(header::CONTENT_TYPE, "application/json")], answer.to_owned())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shipped Alertmanager configuration with the robots' relay URLs pointing at
/// `relay` and the group waits shortened; the WeCom application receivers are left
/// as they are (nothing routes there in this test).
fn alertmanager_config(dir: &Path, relay: std::net::SocketAddr) {
    let shipped = repo_root().join("deploy/alertmanager");
    let text = std::fs::read_to_string(shipped.join("alertmanager.yml")).unwrap();
    assert!(text.contains("http://alert-relay:9096/wecom/org_qianfan"), "the shipped route changed");
    let text = text
        .replace("http://alert-relay:9096", &format!("http://{relay}"))
        .replace("group_wait: 30s", "group_wait: 1s")
        .replace("group_interval: 5m", "group_interval: 10s");
    std::fs::write(dir.join("alertmanager.yml"), text).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    for entry in std::fs::read_dir(shipped.join("templates")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("templates").join(entry.file_name())).unwrap();
    }
}

#[test]
fn an_alert_reaches_the_wecom_robot_through_the_relay_and_a_refusal_is_loud() {
    let alertmanager = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Alertmanager is not installed: apt-get install prometheus-alertmanager (.ci/run does)");
    let rt = runtime();
    let received: Received = Arc::default();
    let wecom = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/cgi-bin/webhook/send", post(fake_wecom)).with_state(received.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });

    let dir = tempfile::tempdir().unwrap();
    let relay_addr = free_local_addr();
    let relay_log = dir.path().join("relay.log");
    let log_file = std::fs::File::create(&relay_log).unwrap();
    let relay = Killed(
        Command::new(env!("CARGO_BIN_EXE_livefunnel"))
            .arg("alert-relay")
            .env("RUST_LOG", "info")
            .env("LIVEFUNNEL_ALERT_RELAY__LISTEN", relay_addr.to_string())
            .env("LIVEFUNNEL_ALERT_RELAY__WECOM_URL", format!("http://{wecom}/cgi-bin/webhook/send"))
            .env("LIVEFUNNEL_ALERT_RELAY__ROBOTS__DEFAULT", "key-default")
            .env("LIVEFUNNEL_ALERT_RELAY__ROBOTS__ORG_QIANFAN", "key-qianfan")
            .env("LIVEFUNNEL_ALERT_RELAY__ROBOTS__ORG_XINGMANG", "key-xingmang")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );

    alertmanager_config(dir.path(), relay_addr);
    let am_addr = free_local_addr();
    let am_log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
    let _am = Killed(
        Command::new(alertmanager)
            .arg(format!("--config.file={}", dir.path().join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={am_addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(am_log)
            .spawn()
            .unwrap(),
    );
    // A room alert of org-qianfan, as the shipped rules label it, through the API.
    let alert = serde_json::json!([{
        "labels": {"alertname": "GPMDrop", "org_id": "org-qianfan", "room_id": "room-hz-01",
                   "scope": "room", "severity": "warning", "platform": "douyin"},
        "annotations": {"summary": "GPM fell to 40 % of its baseline",
                        "description": "evidence 14.2 \"above\" 13.5",
                        "runbook_url": "https://wall.example/runbook#gpmdrop"},
    }]);
    let started = Instant::now();
    while let Err(e) = rt.block_on(post_json(am_addr, "/api/v2/alerts", &alert)) {
        assert!(started.elapsed() < Duration::from_secs(30), "posting to alertmanager: {e}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Refused once (60020), retried by Alertmanager, accepted.
    let deadline = Instant::now() + Duration::from_secs(90);
    while received.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "WeCom got {} messages; relay log:\n{}",
            received.lock().unwrap().len(),
            std::fs::read_to_string(&relay_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = received.lock().unwrap().clone();
    for (key, body) in &got {
        assert_eq!(key, "key-qianfan", "the org's own robot");
        assert_eq!(body["msgtype"], "markdown", "{body}");
        let content = body["markdown"]["content"].as_str().expect("markdown content");
        assert!(content.contains("GPMDrop") && content.contains("org-qianfan / room-hz-01"), "{content}");
        assert!(content.contains("GPM fell to 40 % of its baseline"), "{content}");
        assert!(content.contains("evidence 14.2 \"above\" 13.5"), "quotes survive: {content}");
        assert!(content.contains("(https://wall.example/runbook#gpmdrop)"), "{content}");
    }
    let log = std::fs::read_to_string(&relay_log).unwrap();
    let refusal = log.lines().find(|l| l.contains("wecom refused")).unwrap_or_else(|| panic!("{log}"));
    assert!(
        refusal.contains("ERROR") && refusal.contains("60020") && refusal.contains("trusted IP"),
        "{refusal}"
    );
    assert!(!log.contains("key-qianfan"), "a robot key in the log:\n{log}");
    let metrics = rt.block_on(scrape(relay_addr));
    let of = |result: &str| {
        series_value(
            &metrics,
            "livefunnel_alert_relay_messages_total",
            &[("robot", "org_qianfan"), ("result", result)],
        )
    };
    assert_eq!(of("wecom_error"), Some(1.0), "{metrics}");
    assert!(of("ok").unwrap_or(0.0) >= 1.0, "{metrics}");
    drop(relay);
}

/// POSTs `body` as JSON to `http://addr{path}`; an error unless 2xx.
async fn post_json(addr: std::net::SocketAddr, path: &str, body: &serde_json::Value) -> Result<(), String> {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = hyper::Request::post(format!("http://{addr}{path}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&text)))
    }
}
