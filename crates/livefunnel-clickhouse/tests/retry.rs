//! Failures: a server that is down is waited for, bad credentials and missing
//! permissions fail at once, and no failure loses buffered rows.

mod common;

use std::time::{Duration, Instant};

use common::{assert_same_rows, by_key, config_for, latest_by_key, query_text, replay_sample, window_row};
use livefunnel_clickhouse::{
    latest_rows, migrate, ClickHouseError, ClickHouseMetrics, ClickHouseSink, Table,
};
use livefunnel_core::Row;
use livefunnel_testkit::{ClickHouseServer, LIMITED_PASSWORD, LIMITED_USER};

fn sample_rows() -> Vec<Row> {
    replay_sample().rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_a_server_that_is_down_and_inserts_every_row_once() {
    let mut server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_down");
    migrate(&cfg).await.unwrap();
    server.stop();

    let rows = sample_rows();
    let metrics = ClickHouseMetrics::unregistered();
    let mut sink = ClickHouseSink::new(cfg.clone(), metrics.clone()).unwrap();
    for row in &rows {
        sink.push(row);
    }
    let buffered = sink.buffered_rows();
    let flush = tokio::spawn(async move {
        let stats = sink.flush().await;
        (stats, sink)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.insert_errors(Table::Window) < 3 {
        assert!(Instant::now() < deadline, "flush did not retry");
        assert!(!flush.is_finished(), "flush gave up while the server was down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut server = tokio::task::spawn_blocking(move || {
        server.start();
        server
    })
    .await
    .unwrap();
    let (stats, sink) =
        tokio::time::timeout(Duration::from_secs(60), flush).await.expect("flush ends").unwrap();
    let stats = stats.unwrap();
    assert_eq!(stats.rows, buffered);
    assert!(stats.retries >= 3, "{stats:?}");
    assert_eq!(sink.buffered_rows(), 0);
    for table in Table::RESULTS {
        let expected = latest_by_key(table, &rows);
        let actual = by_key(table, latest_rows(&cfg, table).await.unwrap());
        assert_same_rows(table, &expected, &actual, &[]);
        // Every emitted row was acknowledged once; merged, each key is on disk once.
        let emitted = rows.iter().filter(|r| Table::of_row(r) == table).count() as u64;
        assert_eq!(metrics.insert_rows(table), emitted, "{table:?}");
        query_text(&server, &format!("OPTIMIZE TABLE lf_down.{} FINAL", table.name())).await;
        let stored: usize = query_text(&server, &format!("SELECT count() FROM lf_down.{}", table.name()))
            .await
            .parse()
            .unwrap();
        assert_eq!(stored, expected.len(), "{table:?}");
    }
    server.stop();
}

#[tokio::test]
async fn wrong_password_fails_fast_and_keeps_the_rows() {
    let server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_auth");
    migrate(&cfg).await.unwrap();
    let wrong = livefunnel_clickhouse::ClickHouseConfig {
        user: LIMITED_USER.into(),
        password: "not-the-password".into(),
        ..cfg.clone()
    };
    let metrics = ClickHouseMetrics::unregistered();
    let mut sink = ClickHouseSink::new(wrong, metrics.clone()).unwrap();
    let rows = sample_rows();
    for row in &rows[..100] {
        sink.push(row);
    }
    let before = (sink.buffered_rows(), sink.buffered_bytes());
    let t0 = Instant::now();
    let err = sink.flush().await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "no retries: {:?}", t0.elapsed());
    assert!(matches!(err, ClickHouseError::Auth { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains(&format!("credentials for user {LIMITED_USER}"))
            && text.contains("check clickhouse.user / clickhouse.password"),
        "{text}"
    );
    assert_eq!((sink.buffered_rows(), sink.buffered_bytes()), before, "nothing is dropped");
    let failed: u64 = Table::ALL.iter().map(|t| metrics.insert_errors(*t)).sum();
    assert_eq!(failed, 1);
}

#[tokio::test]
async fn a_read_only_user_gets_a_fatal_permission_error() {
    let server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_perm");
    migrate(&cfg).await.unwrap();
    let limited = livefunnel_clickhouse::ClickHouseConfig {
        user: LIMITED_USER.into(),
        password: LIMITED_PASSWORD.into(),
        ..cfg.clone()
    };
    let mut sink = ClickHouseSink::new(limited, ClickHouseMetrics::unregistered()).unwrap();
    let rows = sample_rows();
    for row in &rows[..100] {
        sink.push(row);
    }
    let err = sink.flush().await.unwrap_err();
    assert!(matches!(err, ClickHouseError::AccessDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&format!("user {LIMITED_USER}")), "{err}");
    assert_eq!(sink.buffered_rows(), 100);

    // The same rows, through a user that may write, still arrive.
    let mut writer = ClickHouseSink::new(cfg.clone(), ClickHouseMetrics::unregistered()).unwrap();
    for row in &rows[..100] {
        writer.push(row);
    }
    writer.flush().await.unwrap();
    let total: usize = {
        let mut n = 0;
        for table in Table::RESULTS {
            n += latest_by_key(table, &rows[..100]).len();
            assert_eq!(
                latest_rows(&cfg, table).await.unwrap().len(),
                latest_by_key(table, &rows[..100]).len()
            );
        }
        n
    };
    assert!(total > 0);
}

#[tokio::test]
async fn a_missing_database_is_fatal_and_names_the_setting() {
    let server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_never_migrated");
    let mut sink = ClickHouseSink::new(cfg, ClickHouseMetrics::unregistered()).unwrap();
    sink.push(&sample_rows()[0]);
    let err = sink.flush().await.unwrap_err();
    assert!(matches!(err, ClickHouseError::Missing { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("clickhouse.database"), "{err}");
    assert_eq!(sink.buffered_rows(), 1);
}

#[tokio::test]
async fn retrying_stops_at_max_elapsed_or_shutdown_and_keeps_the_rows() {
    let server = ClickHouseServer::prepare(); // never started
    let mut cfg = config_for(&server, "lf_gone");
    cfg.retry.max_elapsed = Some(livefunnel_core::Duration::from_ms(300));
    let mut sink = ClickHouseSink::new(cfg.clone(), ClickHouseMetrics::unregistered()).unwrap();
    let rows = sample_rows();
    for row in &rows[..50] {
        sink.push(row);
    }
    let t0 = Instant::now();
    let err = sink.flush().await.unwrap_err();
    assert!(matches!(err, ClickHouseError::RetriesExhausted { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(t0.elapsed() >= Duration::from_millis(300) && t0.elapsed() < Duration::from_secs(10));
    assert!(err.to_string().contains("cannot reach clickhouse"), "{err}");
    assert_eq!(sink.buffered_rows(), 50);

    cfg.retry.max_elapsed = None;
    let mut sink = ClickHouseSink::new(cfg, ClickHouseMetrics::unregistered()).unwrap();
    for row in &rows[..50] {
        sink.push(row);
    }
    let err = sink.flush_until(tokio::time::sleep(Duration::from_millis(200))).await.unwrap_err();
    assert!(matches!(err, ClickHouseError::ShutDown { rows: 50 }), "{err:?}");
    assert_eq!(sink.buffered_rows(), 50);
}

/// A refusal arrives while a large batch (many compressed chunks) is still being
/// sent: the error is still the server's answer, not a broken pipe to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_refused_with_the_servers_reason() {
    let server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_big_refusal");
    migrate(&cfg).await.unwrap();
    let cases = [
        (LIMITED_USER, LIMITED_PASSWORD, "AccessDenied"),
        (LIMITED_USER, "not-the-password", "Auth"),
        ("default", "not-the-password", "Auth"),
    ];
    for (user, password, want) in cases {
        let mut bad = livefunnel_clickhouse::ClickHouseConfig {
            user: user.into(),
            password: password.into(),
            ..cfg.clone()
        };
        // Were the refusal mistaken for a network error, this bounds the test.
        bad.retry.max_elapsed = Some(livefunnel_core::Duration::from_ms(5_000));
        let mut sink = ClickHouseSink::new(bad, ClickHouseMetrics::unregistered()).unwrap();
        for i in 0..100_000 {
            sink.push(&window_row(i));
        }
        assert!(sink.buffered_bytes() > 40 << 20, "many chunks: {}", sink.buffered_bytes());
        let err = sink.flush().await.unwrap_err();
        let kind = match err {
            ClickHouseError::AccessDenied { .. } => "AccessDenied",
            ClickHouseError::Auth { .. } => "Auth",
            _ => "other",
        };
        assert_eq!(kind, want, "{user}/{password}: {err:?}");
        assert!(!err.is_retryable());
        assert_eq!(sink.buffered_rows(), 100_000);
    }
}

/// A server (or proxy) that refuses an insert as soon as it has read the request
/// headers, without reading the body: the refusal is still what the sink reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refusal_is_reported_not_retried() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let refuser = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let body = "Code: 516. DB::Exception: writer: Authentication failed. (AUTHENTICATION_FAILED)";
        let response = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).unwrap();
        // A lingering close (RFC 9112 §9.6), as HTTP servers do: closing with the
        // request body still arriving would reset the connection, and the client could
        // see the reset before the response, which depends on the machine's load.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut sink = [0u8; 1 << 16];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        String::from_utf8_lossy(&head).to_string()
    });
    let mut cfg = livefunnel_clickhouse::ClickHouseConfig {
        url: format!("http://127.0.0.1:{port}"),
        user: "writer".into(),
        ..Default::default()
    };
    cfg.retry.max_elapsed = Some(livefunnel_core::Duration::from_ms(3_000));
    cfg.retry.max_backoff = livefunnel_core::Duration::from_ms(100);
    let mut sink = ClickHouseSink::new(cfg, ClickHouseMetrics::unregistered()).unwrap();
    for i in 0..100_000 {
        sink.push(&window_row(i));
    }
    let err = sink.flush().await.unwrap_err();
    let head = refuser.join().unwrap();
    assert!(head.starts_with("POST "), "{head}");
    assert!(matches!(err, ClickHouseError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("user writer"), "{err}");
    assert_eq!(sink.buffered_rows(), 100_000);
}
