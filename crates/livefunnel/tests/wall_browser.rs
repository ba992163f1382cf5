//! The wall as a person sees it: headless Chromium (Debian's `chromium`, driven through
//! `chromium-driver`'s WebDriver) against `livefunnel demo`.
//!
//! `the_wall_in_a_browser`: 20 simulated rooms at 20× real time with names from a room
//! directory, an admin token and a token for one org (both from the environment). The
//! simulation is the one of `tests/alerts.rs`: rooms 1–4 have ten times the audience,
//! room 2 goes into `viewer_cliff` 35 minutes into its session. Checked: the first line
//! the demo prints is the wall's address; without a token, and with a wrong one, 401
//! (`/metrics` and `/runbook` stay open);
//! the wall lists every simulated room under its directory name; the cliff room turns
//! red and moves to the top (within 420 s of wall clock, at a session age after the
//! onset and at most 10 event minutes after it) and no other room turns red while it is
//! watched (until the cliff, and 20 s after the room page); the room page's funnel
//! shows the numbers of the JSON API; the org's token sees exactly
//! its org's rooms, and another org's room is a 404; every request the browser sent
//! went to the demo on 127.0.0.1. Screenshots of both pages are saved (their paths
//! are printed); `docs/wall.png` and `docs/wall-room.png` are such screenshots. Both
//! tests end with no browser process left (chromedriver and Chromium killed as a group).
//!
//! `the_wall_at_1000_rooms`: the demo with 1,000 rooms at real-time pace: the wall shows
//! one page of them, every page reachable; printed (not checked: the machine is noisy)
//! are the time to first render of the wall and the room pages and the event stream's
//! bytes per second, the figures of the README.

mod wall;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wall::{sse_bytes, Browser, Demo};

const CLIFF_ROOM: &str = "room-0002";
const ONSET_S: f64 = 35.0 * 60.0;
/// Wall clock for the cliff room to turn red: the onset (35 event minutes, 105 s at
/// 20×), the detector's minute of comparison, and start-up on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(420);
const ADMIN_TOKEN: &str = "admin-0123456789abcdef";
const ORG: &str = "org-qianfan";
const ORG_TOKEN: &str = "qianfan-0123456789abcdef";

/// One browser and one demo at a time: the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The room directory of the 20 rooms: Chinese names, anchors, brands, some targets.
fn write_directory(dir: &Path) -> std::path::PathBuf {
    const BRANDS: [&str; 5] = ["星芒", "千帆", "蓝海", "金桥", "云裳"];
    const ANCHORS: [&str; 5] = ["小雅", "阿杰", "糖糖", "老周", "米粒"];
    const SHOWS: [&str; 4] = ["旗舰店", "源头工厂", "新品首发", "会员专场"];
    let mut csv = String::from("room_id,name,anchor,brand,account,gmv_target_cents\n");
    for i in 1..=20usize {
        let brand = BRANDS[i % BRANDS.len()];
        let target = if i % 3 == 0 { String::new() } else { (i * 1_500_000).to_string() };
        csv.push_str(&format!(
            "room-{i:04},{brand}{}·{},{},{brand},{brand}官方,{target}\n",
            SHOWS[i % SHOWS.len()],
            ANCHORS[i % ANCHORS.len()],
            ANCHORS[i % ANCHORS.len()],
        ));
    }
    let path = dir.join("rooms.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn name_of(directory: &Path, room: &str) -> String {
    let text = std::fs::read_to_string(directory).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{room},"))).unwrap();
    line.split(',').nth(1).unwrap().to_owned()
}

/// Records, on every render of the wall, which rooms are red and which is on top.
const WATCH_ALERTS: &str = r#"
    if (window.lfWatch) return true;
    window.lfWatch = { cliffOnTop: null, otherRed: [] };
    new MutationObserver(() => {
        const d = window.lfLast;
        if (!d || !d.rooms.length) return;
        const first = document.querySelector('#grid .tile');
        for (const r of d.rooms) {
            if (r.alerts.length && r.room_id !== 'room-0002' && !window.lfWatch.otherRed.includes(r.room_id)) {
                window.lfWatch.otherRed.push(r.room_id + ' ' + JSON.stringify(r.alerts));
            }
        }
        if (!window.lfWatch.cliffOnTop && first && first.dataset.roomId === 'room-0002'
            && first.dataset.alert === '1' && first.classList.contains('alert')) {
            window.lfWatch.cliffOnTop = { room: d.rooms[0], seq: d.seq };
        }
    }).observe(document.getElementById('grid'), { childList: true });
    return true;
"#;

/// The shown funnel and the API's, read at the same snapshot.
const FUNNEL_AND_API: &str = r#"
    const done = arguments[arguments.length - 1];
    const seq = Number(document.body.dataset.seq);
    const shown = {};
    document.querySelectorAll('[data-field^="funnel."]').forEach((e) => { shown[e.dataset.field.slice(7)] = e.textContent; });
    const products = [...document.querySelectorAll('#products .step')].map((r) => [r.dataset.product, r.querySelector('.n').textContent]);
    fetch('/api/rooms/room-0002').then((r) => r.json()).then((api) => done({
        seq, shown, products, api,
        money: (api.top_products || []).map((p) => LF.money(p.gmv_cents)),
    }), (e) => done({ error: String(e) }));
"#;

/// The tiles shown and the API's rooms, read at the same snapshot.
const TILES_AND_API: &str = r#"
    const done = arguments[arguments.length - 1];
    const seq = Number(document.body.dataset.seq);
    const tiles = [...document.querySelectorAll('#grid .tile')].map((t) => [t.dataset.roomId, t.querySelector('.name').textContent]);
    fetch('/api/rooms').then((r) => r.json()).then((api) => done({ seq, tiles, api }), (e) => done({ error: String(e) }));
"#;

async fn same_snapshot(b: &Browser, script: &str, logs: &dyn Fn() -> String) -> Value {
    for _ in 0..40 {
        let v = b.client.execute_async(script, vec![]).await.unwrap();
        assert!(v.get("error").is_none(), "{v}\n{}", logs());
        if v["seq"] == v["api"]["seq"] {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("never read the page and the API at the same snapshot\n{}", logs());
}

fn digits(text: &str) -> u64 {
    text.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("`{text}`"))
}

#[test]
fn the_wall_in_a_browser() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let directory = write_directory(dir.path());
    let config = dir.path().join("wall.toml");
    std::fs::write(&config, format!("[wall]\nrooms_file = \"{}\"\n", directory.display())).unwrap();
    let started = Instant::now();
    let demo = Demo::start(
        dir.path(),
        &[
            "--rooms",
            "20",
            "--duration",
            "90m",
            "--speed",
            "20",
            "--warmup",
            "0s",
            "--scenario",
            "audience:rooms=1-4:scale=10",
            "--scenario",
            "viewer_cliff:rooms=2:at=35m",
            "--config",
            config.to_str().unwrap(),
        ],
        &[
            ("LIVEFUNNEL_WALL__ADMIN_TOKEN", ADMIN_TOKEN),
            ("LIVEFUNNEL_WALL__ORGS__QIANFAN__ORG_ID", ORG),
            ("LIVEFUNNEL_WALL__ORGS__QIANFAN__TOKEN", ORG_TOKEN),
        ],
    );
    let logs = || demo.logs();
    let out = std::fs::read_to_string(dir.path().join("demo.out")).unwrap();
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("wall:") && first.contains(&format!("http://{}/", demo.addr)),
        "first line: {first}"
    );

    // Refused: no token, a wrong one.
    assert_eq!(demo.get("/api/rooms", None).0, 401);
    assert_eq!(demo.get("/api/rooms", Some("wrong-0123456789abcdef")).0, 401);
    assert_eq!(demo.get("/api/rooms/room-0001", Some("wrong-0123456789abcdef")).0, 401);
    assert_eq!(demo.get("/?token=wrong-0123456789abcdef", None).0, 401);
    assert_eq!(demo.get("/metrics", None).0, 200, "/metrics stays open, as documented");
    // The runbook the alerts link to (`{public_url}/runbook#onlineviewerscliff`): no data, no token.
    let (code, runbook) = demo.get("/runbook", None);
    assert_eq!(code, 200, "/runbook stays open, as documented");
    assert!(runbook.contains("<h2 id=\"onlineviewerscliff\">OnlineViewersCliff</h2>"), "{runbook}");

    runtime().block_on(async {
        let b = Browser::start(dir.path()).await;
        b.client.goto(&demo.url("/")).await.unwrap();
        b.wait_js("a 401 page without a token", Duration::from_secs(20), "return document.body.textContent.includes('401')", logs).await;
        b.client.goto(&demo.url("/?token=wrong-0123456789abcdef")).await.unwrap();
        b.wait_js("a 401 page for a wrong token", Duration::from_secs(20), "return document.body.textContent.includes('401')", logs).await;

        // The admin: every room, under its directory name; the token leaves the address.
        b.client.goto(&demo.url(&format!("/?token={ADMIN_TOKEN}"))).await.unwrap();
        assert_eq!(b.client.current_url().await.unwrap().as_str(), demo.url("/"), "the token stays out of the address bar");
        b.wait_js(
            "all 20 rooms on the wall",
            Duration::from_secs(300),
            "return document.querySelectorAll('#grid .tile').length === 20",
            logs,
        )
        .await;
        let v = same_snapshot(&b, TILES_AND_API, &logs).await;
        let tiles: Vec<(String, String)> = serde_json::from_value(v["tiles"].clone()).unwrap();
        let ids: BTreeSet<&str> = tiles.iter().map(|(id, _)| id.as_str()).collect();
        let expected: BTreeSet<String> = (1..=20).map(|i| format!("room-{i:04}")).collect();
        assert_eq!(ids, expected.iter().map(String::as_str).collect(), "every simulated room on the wall");
        for (id, name) in &tiles {
            assert_eq!(name, &name_of(&directory, id), "{id} shows its directory name");
        }

        // The cliff: red and on top.
        b.js(WATCH_ALERTS).await;
        let seen = b
            .wait_js("the viewer_cliff room red and on top", DEADLINE.saturating_sub(started.elapsed()), "return window.lfWatch.cliffOnTop", logs)
            .await;
        let red_after = started.elapsed();
        b.screenshot(&screenshots().join("wall.png")).await;
        let room = &seen["room"];
        let (age, since) = (room["session_age_s"].as_f64().unwrap(), room["alerts"][0]["since"].as_f64().unwrap());
        println!(
            "{CLIFF_ROOM} red and on top {:.0} s (wall) after the demo started, at session age {age:.0} s: its condition \
             began at {since:.0} s, {:.0} s of event time after the onset at {ONSET_S:.0} s; alerts {}",
            red_after.as_secs_f64(),
            since - ONSET_S,
            room["alerts"]
        );
        assert_eq!(room["alerts"][0]["rule"], "OnlineViewersCliff", "{room}");
        assert!(since >= ONSET_S && age <= ONSET_S + 600.0, "red at session age {age}, condition since {since}: {room}");
        let red = b.js("return window.lfWatch.otherRed").await;
        assert_eq!(red, json!([]), "rooms other than {CLIFF_ROOM} turned red");

        // The room page, at once (the broadcast winds down after the cliff, and 20×
        // event time runs fast): the funnel on screen is the API's.
        b.client.goto(&demo.url(&format!("/rooms/{CLIFF_ROOM}"))).await.unwrap();
        b.wait_js("the room page's funnel", Duration::from_secs(30), "return document.querySelectorAll('[data-field^=\"funnel.\"]').length === 4", logs).await;
        let v = same_snapshot(&b, FUNNEL_AND_API, &logs).await;
        let funnel = &v["api"]["funnel"];
        for key in ["room_impressions", "watch_pv", "product_clicks", "orders_paid"] {
            let shown = v["shown"][key].as_str().unwrap_or_else(|| panic!("{key} not shown: {v}"));
            assert_eq!(json!(digits(shown)), funnel[key], "{key}: shown {shown}, api {funnel}");
        }
        assert!(funnel["room_impressions"].as_u64().unwrap() > 0, "a live room's funnel has impressions: {funnel}");
        // Top products: the API's, in its order, with its amounts as the page formats them.
        let top = v["api"]["top_products"].as_array().unwrap_or_else(|| panic!("no top products: {v}"));
        assert!(!top.is_empty(), "a selling room has top products: {v}");
        let ids: Vec<&str> = top.iter().map(|p| p["product_id"].as_str().unwrap()).collect();
        let shown: Vec<&str> = v["products"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
        assert_eq!(shown, ids, "the products shown are the API's");
        let amounts: Vec<&Value> = v["products"].as_array().unwrap().iter().map(|p| &p[1]).collect();
        assert_eq!(amounts, v["money"].as_array().unwrap().iter().collect::<Vec<_>>());
        let sold: i64 = top.iter().map(|p| p["gmv_cents"].as_i64().unwrap()).sum();
        let gmv = v["api"]["room"]["gmv_cents"].as_i64().unwrap();
        assert!(sold > 0 && sold <= gmv, "top products sold {sold} of the room's {gmv}");
        let by_gmv: Vec<i64> = top.iter().map(|p| p["gmv_cents"].as_i64().unwrap()).collect();
        assert!(by_gmv.windows(2).all(|w| w[0] >= w[1]), "largest GMV first: {by_gmv:?}");
        // The detectors' panel: evidence against the thresholds the rules use.
        let detectors = &v["api"]["detectors"];
        assert!(detectors["online_cliff_threshold"].as_f64().is_some_and(|t| t > 0.0), "{detectors}");
        b.wait_js(
            "the detectors' evidence",
            Duration::from_secs(30),
            "return document.querySelectorAll('[data-field^=\"detectors.\"]').length === 4",
            logs,
        )
        .await;
        b.screenshot(&screenshots().join("wall-room.png")).await;

        // Back on the wall: a normal room must stay quiet after the onset too.
        b.client.goto(&demo.url("/")).await.unwrap();
        b.wait_js("the wall again", Duration::from_secs(30), "return document.querySelectorAll('#grid .tile').length === 20", logs).await;
        b.js(WATCH_ALERTS).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let red = b.js("return window.lfWatch.otherRed").await;
        assert_eq!(red, json!([]), "rooms other than {CLIFF_ROOM} turned red");

        // The org's token: its rooms and nobody else's.
        b.client.delete_all_cookies().await.unwrap();
        b.client.goto(&demo.url(&format!("/?token={ORG_TOKEN}"))).await.unwrap();
        b.wait_js("the org's wall", Duration::from_secs(30), "return document.querySelectorAll('#grid .tile').length > 0", logs).await;
        let v = same_snapshot(&b, TILES_AND_API, &logs).await;
        let shown: BTreeSet<String> =
            v["tiles"].as_array().unwrap().iter().map(|t| t[0].as_str().unwrap().to_owned()).collect();
        let api: Vec<Value> = v["api"]["rooms"].as_array().unwrap().clone();
        assert!(api.iter().all(|r| r["org_id"] == ORG), "{api:?}");
        assert_eq!(shown, api.iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect::<BTreeSet<_>>());
        let all = demo.api("/api/rooms", Some(ADMIN_TOKEN));
        let of_org: BTreeSet<String> = all["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["org_id"] == ORG)
            .map(|r| r["room_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(shown, of_org, "the org sees exactly its own rooms");
        assert!(!shown.is_empty() && shown.len() < 20, "{shown:?}");
        let other = all["rooms"].as_array().unwrap().iter().find(|r| r["org_id"] != ORG).unwrap()["room_id"].clone();
        let other = other.as_str().unwrap();
        assert_eq!(demo.get(&format!("/api/rooms/{other}"), Some(ORG_TOKEN)).0, 404, "another org's room");
        assert_eq!(demo.get(&format!("/api/rooms/{other}"), Some(ADMIN_TOKEN)).0, 200);

        // Nothing but the demo on loopback.
        let requests = b.requests().await;
        let origin = demo.url("/");
        // Browser-internal schemes (chrome://, data:, about:) never reach a network.
        let network = |u: &&String| ["http:", "https:", "ws:", "wss:", "ftp:"].iter().any(|s| u.starts_with(s));
        let away: Vec<&String> = requests.iter().filter(network).filter(|u| !u.starts_with(&origin)).collect();
        assert!(away.is_empty(), "requests away from {origin}: {away:?}");
        assert!(requests.iter().any(|u| u.contains("/api/stream")), "{requests:?}");
        println!("{} requests, all to {origin}", requests.len());
    });
    wall::assert_no_browser_left(dir.path());
}

/// Where screenshots go: a directory under the build's target directory.
fn screenshots() -> std::path::PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wall-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_wall_at_1000_rooms() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // No token: the wall answers loopback clients, as the test is.
    let demo = Demo::start(dir.path(), &["--rooms", "1000", "--duration", "1h", "--warmup", "5m"], &[]);
    let logs = || demo.logs();
    let start = Instant::now();
    loop {
        let v = demo.api("/api/rooms?page=1", None);
        if v["summary"]["rooms"] == 1000 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "1,000 rooms never showed: {}\n{}",
            v["summary"],
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, full) = demo.get("/api/rooms", None);
    let builds: Vec<f64> = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(1_000));
            demo.api("/api/rooms?page=1", None)["build_ms"].as_f64().unwrap()
        })
        .collect();
    let (_, page) = demo.get("/api/rooms?page=1", None);
    let (events, bytes) = sse_bytes(demo.addr, "/api/stream?page=1&per_page=24", None, 30);
    let (room_events, room_bytes) = sse_bytes(demo.addr, "/api/stream?room=room-0001", None, 30);
    runtime().block_on(async {
        let b = Browser::start(dir.path()).await;
        let mut first_render = Vec::new();
        for path in ["/", "/?page=42", "/rooms/room-0001"] {
            b.client.goto(&demo.url(path)).await.unwrap();
            let ms = b.wait_js(&format!("{path} rendered"), Duration::from_secs(60), "return window.lfFirstRender", logs).await;
            first_render.push((path, ms.as_f64().unwrap()));
        }
        b.client.goto(&demo.url("/")).await.unwrap();
        b.wait_js("the wall", Duration::from_secs(60), "return window.lfFirstRender", logs).await;
        let shown = b.js("return [document.querySelectorAll('#grid .tile').length, Number(document.body.dataset.pages)]").await;
        assert_eq!(shown, json!([24, 42]), "one page of 24 rooms, 42 pages for 1,000 rooms");
        for (path, ms) in &first_render {
            println!("1000 rooms: {path}: first render {ms:.0} ms after navigation");
        }
    });
    wall::assert_no_browser_left(dir.path());
    println!(
        "1000 rooms: the snapshot (every room read from the series) built in {:.1}–{:.1} ms",
        builds.iter().copied().fold(f64::INFINITY, f64::min),
        builds.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "1000 rooms: /api/rooms (all rooms) {} bytes, one page of 24 {} bytes; /api/stream?page=1: {events} events, \
         {} bytes/s over 30 s; /api/stream?room=: {room_events} events, {} bytes/s",
        full.len(),
        page.len(),
        bytes / 30,
        room_bytes / 30
    );
    assert!((20..=31).contains(&events), "at most one event a second, and about that many: {events} in 30 s");
}
