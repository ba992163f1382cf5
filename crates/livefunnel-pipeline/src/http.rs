//! `/metrics` (Prometheus text format), `/healthz` (the process is alive) and `/readyz`
//! (a healthy member of its consumer group with a working sink), and the wall
//! (`crate::wall`: `/`, `/rooms/{id}`, `/api/...`) when it is enabled.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use livefunnel_metrics::RoomMetrics;
use prometheus::Registry;
use tokio::net::TcpListener;

use super::Status;

#[derive(Clone)]
struct AppState {
    registry: Registry,
    rooms: RoomMetrics,
    render_seconds: prometheus::Gauge,
    status: Arc<Status>,
}

pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    rooms: RoomMetrics,
    render_seconds: prometheus::Gauge,
    status: Arc<Status>,
    wall: Option<Arc<crate::wall::Wall>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, rooms, render_seconds, status });
    if let Some(wall) = wall {
        app = app.merge(crate::wall::routes(wall));
    }
    // The wall tells loopback clients from others when no token is configured.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(stop).await
}

/// Rendered on a blocking thread: at thousands of rooms a render takes milliseconds
/// to tens of them, which the runtime's workers owe the consumer loop and the sink.
async fn metrics(State(s): State<AppState>) -> axum::response::Response {
    let rendered = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let body = livefunnel_metrics::render_all(&s.registry, &s.rooms);
        s.render_seconds.set(started.elapsed().as_secs_f64());
        body
    });
    match rendered.await {
        Ok(body) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("rendering the metrics failed: {e}\n"))
            .into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let (ready, body) = readiness(&s.status);
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

/// Ready: the consumer has joined its group, the sink answers, and no part of the
/// pipeline has failed (a failed sink or partition task is fatal: the process is
/// stopping). A member that holds no partition is ready: in a group with more members
/// than partitions it is a standby, which takes partitions over when a member leaves;
/// calling it unready would stall rolling updates that wait for readiness. The body
/// says which it is.
fn readiness(s: &Status) -> (bool, String) {
    let joined = s.group_joined.load(Ordering::Relaxed);
    let kafka = match (joined, s.kafka_assigned.load(Ordering::Relaxed)) {
        (_, true) => "partitions assigned",
        (true, false) => "standby: a member of the consumer group with no partition assigned",
        (false, false) => "waiting to join the consumer group",
    };
    let sink = s.sink_reachable.load(Ordering::Relaxed);
    let detail = s.sink_detail.lock().expect("poisoned").clone();
    let detail = if detail.is_empty() { "not checked yet".to_owned() } else { detail };
    let mut body = format!("kafka: {kafka}\nsink: {detail}\n");
    let fatal = s.fatal.lock().expect("poisoned").clone();
    if let Some(f) = &fatal {
        body.push_str(&format!("stopping on a fatal error: {f}\n"));
    }
    (joined && sink && fatal.is_none(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ready(status: Status) -> (StatusCode, String) {
        let registry = Registry::new();
        let rooms = RoomMetrics::new(&registry, Vec::new()).unwrap();
        let render_seconds =
            livefunnel_metrics::PipelineMetrics::new(&registry).unwrap().metrics_render_seconds;
        let state = AppState { registry, rooms, render_seconds, status: Arc::new(status) };
        let resp = readyz(State(state)).await.into_response();
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (code, String::from_utf8(body.to_vec()).unwrap())
    }

    fn healthy() -> Status {
        let s = Status::default();
        s.group_joined.store(true, Ordering::Relaxed);
        s.kafka_assigned.store(true, Ordering::Relaxed);
        s.sink_reachable.store(true, Ordering::Relaxed);
        s
    }

    #[tokio::test]
    async fn a_member_without_partitions_is_a_ready_standby() {
        let s = healthy();
        s.kafka_assigned.store(false, Ordering::Relaxed);
        let (code, body) = ready(s).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.contains("standby") && body.contains("no partition"), "{body}");
        // Not a member yet: not ready.
        let s = healthy();
        s.group_joined.store(false, Ordering::Relaxed);
        s.kafka_assigned.store(false, Ordering::Relaxed);
        assert_eq!(ready(s).await.0, StatusCode::SERVICE_UNAVAILABLE);
        let s = healthy();
        s.sink_reachable.store(false, Ordering::Relaxed);
        assert_eq!(ready(s).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_fatal_error_makes_the_instance_unready_naming_it() {
        assert_eq!(ready(healthy()).await.0, StatusCode::OK);
        let s = healthy();
        *s.fatal.lock().unwrap() = Some(crate::Fatal::new("partition t/3: the task panicked", false));
        let (code, body) = ready(s).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("partition t/3: the task panicked"), "{body}");
    }
}
