//! The wall's routes: pages, JSON API, event stream, and who may see what.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;

use super::board::{RoomView, Snapshot};
use super::config::Viewer;
use super::history::Sample;
use super::Wall;

const COOKIE: &str = "livefunnel_wall";
/// The pages' policy: only this server's own scripts, styles and API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const WALL_HTML: &str = include_str!("assets/wall.html");
const ROOM_HTML: &str = include_str!("assets/room.html");
const ASSETS: [(&str, &str, &str); 4] = [
    ("common.js", "text/javascript; charset=utf-8", include_str!("assets/common.js")),
    ("wall.js", "text/javascript; charset=utf-8", include_str!("assets/wall.js")),
    ("room.js", "text/javascript; charset=utf-8", include_str!("assets/room.js")),
    ("wall.css", "text/css; charset=utf-8", include_str!("assets/wall.css")),
];

/// The wall's routes, to merge into the HTTP server's router (served with
/// `ConnectInfo<SocketAddr>`).
pub fn routes(wall: Arc<Wall>) -> Router {
    Router::new()
        .route("/", get(wall_page))
        .route("/rooms/{room_id}", get(room_page))
        .route("/assets/{file}", get(asset))
        .route("/runbook", get(super::runbook::page))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/rooms", get(api_rooms))
        .route("/api/rooms/{room_id}", get(api_room))
        .route("/api/stream", get(api_stream))
        .with_state(wall)
}

type Q = Query<HashMap<String, String>>;

/// Why a request is refused.
enum Refused {
    /// Tokens are configured and none valid was presented.
    Unauthorized,
    /// No token is configured and the client is not on this machine.
    NotLoopback,
}

impl Refused {
    fn page(self, wall: &Wall) -> Response {
        let en = wall.config.language == "en";
        let (code, text) = match self {
            Refused::Unauthorized if en => (StatusCode::UNAUTHORIZED, "401: this wall needs a valid token. Open it as /?token=YOUR_TOKEN (your administrator has it)."),
            Refused::Unauthorized => (StatusCode::UNAUTHORIZED, "401：需要有效的访问令牌。请用 /?token=您的令牌 打开（令牌由管理员提供）。"),
            Refused::NotLoopback if en => (StatusCode::FORBIDDEN, "403: no wall token is configured, so the wall answers on this machine only. Configure [wall] tokens to open it to others."),
            Refused::NotLoopback => (StatusCode::FORBIDDEN, "403：未配置访问令牌，大屏只对本机开放。配置 [wall] 令牌后可供其他设备访问。"),
        };
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code}</title>\
             <link rel=\"stylesheet\" href=\"/assets/wall.css\"></head><body class=\"refused\"><p>{text}</p></body></html>"
        );
        with_headers(code, "text/html; charset=utf-8", body, code == StatusCode::UNAUTHORIZED)
    }

    fn api(self) -> Response {
        let (code, msg) = match self {
            Refused::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "a valid token is needed: Authorization: Bearer TOKEN")
            }
            Refused::NotLoopback => {
                (StatusCode::FORBIDDEN, "no wall token is configured: the wall answers loopback clients only")
            }
        };
        let body = serde_json::json!({ "error": msg }).to_string();
        with_headers(code, "application/json", body, code == StatusCode::UNAUTHORIZED)
    }
}

pub(super) fn with_headers(
    code: StatusCode,
    content_type: &'static str,
    body: String,
    challenge: bool,
) -> Response {
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if challenge {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"livefunnel wall\""));
    }
    r
}

/// The token a request carries: `Authorization: Bearer`, else the wall's cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    bearer.or_else(|| {
        headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
            v.split(';').find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')))
        })
    })
}

/// Who the request comes from.
fn viewer(wall: &Wall, peer: SocketAddr, headers: &HeaderMap) -> Result<Viewer, Refused> {
    if wall.access.is_open() {
        return if peer.ip().to_canonical().is_loopback() {
            Ok(Viewer::All)
        } else {
            Err(Refused::NotLoopback)
        };
    }
    presented(headers).and_then(|t| wall.access.viewer(t)).ok_or(Refused::Unauthorized)
}

/// A page request: `?token=` is checked, kept in an HttpOnly cookie and dropped from
/// the address (so it stays out of the browser's history and the screen). `Some`: the
/// answer instead of the page (a redirect, or a refusal).
fn page_gate(
    wall: &Wall,
    peer: SocketAddr,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    path: &str,
) -> Option<Response> {
    let Some(token) = q.get("token").filter(|_| !wall.access.is_open()) else {
        return viewer(wall, peer, headers).err().map(|r| r.page(wall));
    };
    if wall.access.viewer(token).is_none() {
        return Some(Refused::Unauthorized.page(wall));
    }
    let rest: Vec<String> = q
        .iter()
        .filter(|(k, _)| *k != "token")
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let target = if rest.is_empty() { path.to_owned() } else { format!("{path}?{}", rest.join("&")) };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    let (Ok(location), Ok(cookie)) = (HeaderValue::from_str(&target), HeaderValue::from_str(&cookie)) else {
        return Some(StatusCode::BAD_REQUEST.into_response());
    };
    let mut r = with_headers(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", String::new(), false);
    r.headers_mut().insert(header::LOCATION, location);
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Some(r)
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A page with the settings the scripts need (validated values only).
fn page(wall: &Wall, html: &str) -> Response {
    let c = &wall.config;
    let settings = serde_json::json!({
        "lang": c.language,
        "tz": c.time_zone,
        "page_size": c.page_size,
        "page_seconds": c.page_seconds.as_ms() / 1000,
    });
    // `<` escaped: the JSON cannot end its script element.
    let settings = settings.to_string().replace('<', "\\u003c");
    let lang = if c.language == "en" { "en" } else { "zh-CN" };
    let body = html.replace("{{settings}}", &settings).replace("{{lang}}", lang);
    with_headers(StatusCode::OK, "text/html; charset=utf-8", body, false)
}

async fn wall_page(
    State(wall): State<Arc<Wall>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    page_gate(&wall, peer, &headers, &q, "/").unwrap_or_else(|| page(&wall, WALL_HTML))
}

async fn room_page(
    State(wall): State<Arc<Wall>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    let path = format!("/rooms/{}", encode(&room_id));
    page_gate(&wall, peer, &headers, &q, &path).unwrap_or_else(|| page(&wall, ROOM_HTML))
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, ct, body)) => {
            let mut r = with_headers(StatusCode::OK, ct, (*body).to_owned(), false);
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Serialize)]
struct Summary {
    rooms: usize,
    live: usize,
    in_alert: usize,
    online: u64,
    gmv_cents: u64,
}

#[derive(Serialize)]
struct PageJson<'a> {
    seq: u64,
    at_ms: i64,
    build_ms: f64,
    summary: Summary,
    page: usize,
    pages: usize,
    per_page: usize,
    directory_error: Option<&'a str>,
    rooms: Vec<&'a RoomView>,
}

/// The viewer's rooms, one page of them (`page` from 1; `None`: all of them).
fn page_json(s: &Snapshot, viewer: &Viewer, page: Option<usize>, per_page: usize) -> String {
    let mine: Vec<&RoomView> = s.rooms.iter().filter(|r| viewer.sees(&r.org_id)).collect();
    let summary = Summary {
        rooms: mine.len(),
        live: mine.iter().filter(|r| r.live).count(),
        in_alert: mine.iter().filter(|r| !r.alerts.is_empty()).count(),
        online: mine.iter().map(|r| r.online).sum(),
        gmv_cents: mine.iter().map(|r| r.gmv_cents).sum(),
    };
    let per_page = if page.is_some() { per_page.max(1) } else { mine.len().max(1) };
    let pages = mine.len().div_ceil(per_page).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    let rooms = mine.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let directory_error = match viewer {
        // The file's path and contents are the operator's business, not a brand's.
        Viewer::All => s.directory_error.as_deref(),
        Viewer::Org(_) => None,
    };
    let json = PageJson {
        seq: s.seq,
        at_ms: s.at_ms,
        build_ms: s.build_ms,
        summary,
        page,
        pages,
        per_page,
        directory_error,
        rooms,
    };
    serde_json::to_string(&json).expect("the page serializes")
}

#[derive(Serialize)]
struct RoomJson<'a> {
    seq: u64,
    at_ms: i64,
    room: &'a RoomView,
    #[serde(flatten)]
    detail: &'a super::board::RoomDetail,
    history: &'a [Sample],
}

fn room_json(s: &Snapshot, viewer: &Viewer, room_id: &str) -> Option<String> {
    let room = s.room(room_id).filter(|r| viewer.sees(&r.org_id))?;
    let (detail, history) = s.details.get(room_id)?;
    let json = RoomJson { seq: s.seq, at_ms: s.at_ms, room, detail, history };
    Some(serde_json::to_string(&json).expect("the room serializes"))
}

/// The viewer of an API call or stream; refused as JSON (401, or 403 off loopback
/// without tokens).
struct ApiViewer(Viewer);

impl FromRequestParts<Arc<Wall>> for ApiViewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, wall: &Arc<Wall>) -> Result<ApiViewer, Response> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        // Served without connect info (never by `serve`): treated as a remote client.
        let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        viewer(wall, peer, &parts.headers).map(ApiViewer).map_err(Refused::api)
    }
}

fn page_param(wall: &Wall, q: &HashMap<String, String>) -> (Option<usize>, usize) {
    let page = q.get("page").and_then(|p| p.parse().ok());
    let per_page = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(wall.config.page_size as usize);
    (page, per_page.clamp(1, 1_000))
}

async fn api_rooms(State(wall): State<Arc<Wall>>, ApiViewer(viewer): ApiViewer, Query(q): Q) -> Response {
    let (page, per_page) = page_param(&wall, &q);
    let snap = wall.snapshots.borrow().clone();
    with_headers(StatusCode::OK, "application/json", page_json(&snap, &viewer, page, per_page), false)
}

async fn api_room(
    State(wall): State<Arc<Wall>>,
    ApiViewer(viewer): ApiViewer,
    Path(room_id): Path<String>,
) -> Response {
    let snap = wall.snapshots.borrow().clone();
    match room_json(&snap, &viewer, &room_id) {
        Some(body) => with_headers(StatusCode::OK, "application/json", body, false),
        // Another org's room is as absent as a room that does not exist.
        None => {
            let body = serde_json::json!({ "error": "no such live room" }).to_string();
            with_headers(StatusCode::NOT_FOUND, "application/json", body, false)
        }
    }
}

/// `?page=N`: that wall page at each new snapshot (event `page`); `?room=ID`: that
/// room (event `room`, or `gone` once it has no series). At most one event a second.
async fn api_stream(State(wall): State<Arc<Wall>>, ApiViewer(viewer): ApiViewer, Query(q): Q) -> Response {
    let (page, per_page) = page_param(&wall, &q);
    let room = q.get("room").cloned();
    let events = paced(wall.snapshots.clone(), STREAM_GAP).map(move |snap| {
        let event = match &room {
            Some(id) => match room_json(&snap, &viewer, id) {
                Some(body) => Event::default().event("room").data(body),
                None => Event::default().event("gone").data("{}"),
            },
            None => {
                Event::default().event("page").data(page_json(&snap, &viewer, page.or(Some(1)), per_page))
            }
        };
        Ok::<_, Infallible>(event)
    });
    let mut r =
        Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The least time between two events of one stream.
const STREAM_GAP: Duration = Duration::from_secs(1);

/// The value of `rx` at once, then each newer one no sooner than `gap` after the one
/// before. The snapshot is rebuilt every second, but a client that connects just before
/// a rebuild would otherwise get two events within a moment, and delayed rebuilds can
/// bunch up. Ends when the sender is dropped (the server stops).
fn paced<T: Clone + Send + Sync + 'static>(
    mut rx: watch::Receiver<T>,
    gap: Duration,
) -> impl futures::Stream<Item = T> + Send {
    rx.mark_changed();
    futures::stream::unfold((rx, None), move |(mut rx, last): (_, Option<tokio::time::Instant>)| async move {
        if let Some(last) = last {
            tokio::time::sleep_until(last + gap).await;
        }
        rx.changed().await.ok()?;
        let value = rx.borrow_and_update().clone();
        Some((value, (rx, Some(tokio::time::Instant::now()))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wall::config::{OrgAccess, WallConfig};

    fn wall(config: WallConfig) -> Arc<Wall> {
        let (_, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        Arc::new(Wall { access: config.access(), config, snapshots })
    }

    fn peer(ip: &str) -> ConnectInfo<SocketAddr> {
        ConnectInfo(format!("{ip}:50000").parse().unwrap())
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    async fn rooms(w: &Arc<Wall>, from: &str, headers: HeaderMap) -> StatusCode {
        let mut req = axum::http::Request::builder().uri("/api/rooms").body(()).unwrap();
        *req.headers_mut() = headers;
        req.extensions_mut().insert(peer(from));
        let (mut parts, ()) = req.into_parts();
        match ApiViewer::from_request_parts(&mut parts, w).await {
            Ok(v) => api_rooms(State(w.clone()), v, Query(HashMap::new())).await.status(),
            Err(r) => r.status(),
        }
    }

    #[tokio::test]
    async fn without_tokens_only_loopback_clients_are_served() {
        let w = wall(WallConfig::default());
        assert_eq!(rooms(&w, "127.0.0.1", HeaderMap::new()).await, StatusCode::OK);
        assert_eq!(rooms(&w, "[::1]", HeaderMap::new()).await, StatusCode::OK);
        assert_eq!(rooms(&w, "[::ffff:127.0.0.1]", HeaderMap::new()).await, StatusCode::OK);
        assert_eq!(rooms(&w, "10.1.2.3", HeaderMap::new()).await, StatusCode::FORBIDDEN);
        assert_eq!(rooms(&w, "192.168.1.20", bearer("0123456789abcdef")).await, StatusCode::FORBIDDEN);
        let page =
            wall_page(State(w.clone()), peer("10.1.2.3"), HeaderMap::new(), Query(HashMap::new())).await;
        assert_eq!(page.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn with_tokens_every_client_needs_one() {
        let mut c = WallConfig { admin_token: "admin-0123456789abcdef".into(), ..WallConfig::default() };
        c.orgs
            .insert("a".into(), OrgAccess { org_id: "org-a".into(), token: "orga-0123456789abcdef".into() });
        let w = wall(c);
        assert_eq!(rooms(&w, "127.0.0.1", HeaderMap::new()).await, StatusCode::UNAUTHORIZED, "loopback too");
        assert_eq!(rooms(&w, "10.1.2.3", bearer("admin-0123456789abcdef")).await, StatusCode::OK);
        assert_eq!(rooms(&w, "10.1.2.3", bearer("orga-0123456789abcdef")).await, StatusCode::OK);
        assert_eq!(rooms(&w, "10.1.2.3", bearer("orga-0123456789abcdeF")).await, StatusCode::UNAUTHORIZED);
        let mut parts = axum::http::Request::builder().body(()).unwrap().into_parts().0;
        parts.extensions.insert(peer("10.1.2.3"));
        let refused = ApiViewer::from_request_parts(&mut parts, &w).await.err().expect("refused");
        assert!(refused.headers().contains_key(header::WWW_AUTHENTICATE));

        // `?token=` on a page: kept in an HttpOnly cookie, dropped from the address.
        let q = HashMap::from([
            ("token".to_owned(), "orga-0123456789abcdef".to_owned()),
            ("page".into(), "2".into()),
        ]);
        let r = wall_page(State(w.clone()), peer("10.1.2.3"), HeaderMap::new(), Query(q)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/?page=2");
        let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("other=1; {}", cookie.split(';').next().unwrap()).parse().unwrap());
        assert_eq!(rooms(&w, "10.1.2.3", h).await, StatusCode::OK);
        let q = HashMap::from([("token".to_owned(), "wrong-0123456789abcdef".to_owned())]);
        let r = wall_page(State(w.clone()), peer("10.1.2.3"), HeaderMap::new(), Query(q)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    fn view(room: &str, org: &str, gmv: u64) -> RoomView {
        RoomView {
            room_id: room.into(),
            org_id: org.into(),
            platform: "douyin".into(),
            name: String::new(),
            anchor: String::new(),
            brand: String::new(),
            account: String::new(),
            live: true,
            online: 1,
            gmv_cents: gmv,
            gmv_target_cents: None,
            pacing: None,
            window: "5m/10s".into(),
            gpm: None,
            watch_to_pay: None,
            gpm_trend: super::super::board::Trend { ratio: None, dir: "none" },
            online_trend: super::super::board::Trend { ratio: None, dir: "none" },
            session_age_s: None,
            spark: Vec::new(),
            alerts: Vec::new(),
        }
    }

    #[test]
    fn an_org_sees_its_rooms_in_pages_and_nothing_of_the_others() {
        let s = Snapshot {
            seq: 7,
            rooms: vec![view("r1", "org-a", 30), view("r2", "org-b", 20), view("r3", "org-a", 10)],
            directory_error: Some("rooms.csv: line 3: oops".into()),
            ..Snapshot::default()
        };
        let org = Viewer::Org("org-a".into());
        let v: serde_json::Value = serde_json::from_str(&page_json(&s, &org, None, 24)).unwrap();
        let ids: Vec<&str> =
            v["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["r1", "r3"]);
        assert_eq!((v["summary"]["rooms"].as_u64(), v["summary"]["gmv_cents"].as_u64()), (Some(2), Some(40)));
        assert!(v["directory_error"].is_null(), "the operator's file is not a brand's business");
        let v: serde_json::Value = serde_json::from_str(&page_json(&s, &Viewer::All, Some(2), 2)).unwrap();
        assert_eq!((v["page"].as_u64(), v["pages"].as_u64()), (Some(2), Some(2)));
        assert_eq!(v["rooms"][0]["room_id"], "r3");
        assert_eq!(v["directory_error"], "rooms.csv: line 3: oops");
        let mut s = s;
        let totals = livefunnel_metrics::CounterTotals { gmv_cents: 20, ..Default::default() };
        let detail = super::super::board::RoomDetail {
            funnel: None,
            sources: None,
            totals,
            last_event_received_s: None,
            detectors: Some(super::super::board::Detectors {
                gpm_drop_evidence: Some(2.5),
                gpm_drop_threshold: 13.5,
                gpm_drop_horizon_s: None,
                sales_stall_evidence: None,
                sales_stall_threshold: 16.0,
                online_cliff_evidence: Some(0.0),
                online_cliff_threshold: 3.0,
                gpm_baseline: None,
                orders_expected_per_minute: Some(0.4),
            }),
            top_products: Some(vec![super::super::board::Product {
                product_id: "sku-9".into(),
                gmv_cents: 19_900,
                orders_paid: 2,
                items_sold: 3,
                product_clicks: 40,
            }]),
        };
        s.details.insert("r2".into(), (detail, Vec::new()));
        let room: serde_json::Value =
            serde_json::from_str(&room_json(&s, &Viewer::All, "r2").unwrap()).unwrap();
        let d = &room["detectors"];
        assert_eq!(
            (d["gpm_drop_evidence"].as_f64(), d["gpm_drop_threshold"].as_f64()),
            (Some(2.5), Some(13.5))
        );
        assert!(
            d["gpm_drop_horizon_s"].is_null() && d["sales_stall_evidence"].is_null(),
            "not monitored, not armed: {d}"
        );
        let p = &room["top_products"][0];
        assert_eq!((p["product_id"].as_str(), p["gmv_cents"].as_i64()), (Some("sku-9"), Some(19_900)));
        assert!(room_json(&s, &Viewer::Org("org-b".into()), "r2").is_some());
        assert!(room_json(&s, &org, "r2").is_none(), "another org's room does not exist for it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_sends_the_latest_value_at_most_once_a_second() {
        let (tx, rx) = watch::channel(0u32);
        let start = tokio::time::Instant::now();
        // Values come ten times a second, for five seconds.
        tokio::spawn(async move {
            for i in 1..=50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tx.send(i).unwrap();
            }
        });
        let got: Vec<(u32, Duration)> = paced(rx, STREAM_GAP).map(|v| (v, start.elapsed())).collect().await;
        assert_eq!(got.first(), Some(&(0, Duration::ZERO)), "the current value at once: {got:?}");
        for w in got.windows(2) {
            assert!(w[1].1 - w[0].1 >= STREAM_GAP, "events closer than a second: {got:?}");
            assert!(w[1].0 > w[0].0, "each event newer than the last: {got:?}");
        }
        assert_eq!(got.last().map(|g| g.0), Some(50), "the last value is not lost: {got:?}");
    }
}
