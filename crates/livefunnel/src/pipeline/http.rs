//! `/metrics` (Prometheus text format), `/healthz` (the process is alive) and `/readyz`
//! (Kafka partitions assigned and the sink reachable).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::Registry;
use tokio::net::TcpListener;

use super::Status;

#[derive(Clone)]
struct AppState {
    registry: Registry,
    status: Arc<Status>,
}

pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    status: Arc<Status>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, status });
    axum::serve(listener, app).with_graceful_shutdown(stop).await
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let body = livefunnel_metrics::render(&s.registry);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let kafka = s.status.kafka_assigned.load(Ordering::Relaxed);
    let sink = s.status.sink_reachable.load(Ordering::Relaxed);
    let detail = s.status.sink_detail.lock().expect("poisoned").clone();
    let body = format!(
        "kafka: {}\nsink: {}\n",
        if kafka { "partitions assigned" } else { "waiting for a partition assignment" },
        if detail.is_empty() { "not checked yet".to_owned() } else { detail }
    );
    let code = if kafka && sink { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, body)
}
