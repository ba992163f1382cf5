//! `livefunnel eval-alerts`, the version that runs in CI: 10 room-hours of normal rooms
//! (warm-up included) raise no alert, one room of three incident cells gets the right
//! alert, the results do not depend on the number of threads, and recorded events
//! (`--input`) print their firings. The 1,000-room-hour run is in docs/alerts.md.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn eval(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_livefunnel"))
        .arg("eval-alerts")
        .args(args)
        .output()
        .expect("running livefunnel eval-alerts");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "eval-alerts {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn ten_room_hours_stay_quiet_and_incidents_fire_their_alert() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results.json");
    let cells = "gpm_drop_80@30opm,sales_stall@10opm,viewer_cliff@300online";
    let (stdout, _) = eval(&[
        "--normal-rooms",
        "5",
        "--hours",
        "2",
        "--seed",
        "7",
        "--cells",
        cells,
        "--rooms-per-cell",
        "1",
        "--json",
        file.to_str().unwrap(),
    ]);
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last.split(' ').map(|f| f.split('=').next().unwrap()).collect::<Vec<_>>(),
        ["normal_room_alerts", "gpm_drop_80@30opm", "sales_stall@10opm", "viewer_cliff@300online"],
        "{stdout}"
    );
    assert!(last.starts_with("normal_room_alerts=0 "), "{stdout}");
    for cell in cells.split(',') {
        assert!(last.contains(&format!(" {cell}=")) && !last.contains(&format!("{cell}=none")), "{stdout}");
    }
    let r = json(&file);
    let normal = &r["normal"];
    assert_eq!(normal["room_hours"], 10.0);
    assert_eq!(normal["episodes"], serde_json::json!([0, 0, 0]), "{normal}");
    let d = &r["detectors"];
    for (max, threshold) in [
        ("max_gpm_drop_evidence", "gpm_drop_threshold"),
        ("max_sales_stall_evidence", "sales_stall_threshold"),
        ("max_cliff_evidence", "cliff_threshold"),
    ] {
        let (m, t) = (normal[max].as_f64().unwrap(), d[threshold].as_f64().unwrap());
        assert!(m < t, "{max} {m} reached its threshold {t}");
    }
    for c in r["cells"].as_array().unwrap() {
        assert_eq!((c["rooms"].as_u64(), c["detected"].as_u64()), (Some(1), Some(1)), "{c}");
        assert_eq!(c["wrong"], serde_json::json!([]), "{c}");
    }
    // Every room says how to generate its events again.
    let rooms = r["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 8);
    assert!(rooms
        .iter()
        .all(|room| room["sim"].as_str().unwrap().starts_with("livefunnel sim --rooms 1 --seed ")));
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let run = |threads: &str| {
        let file = dir.path().join(format!("results-{threads}.json"));
        let args = [
            "--normal-rooms",
            "3",
            "--hours",
            "1",
            "--cells",
            "viewer_cliff@150online",
            "--rooms-per-cell",
            "2",
        ];
        let (stdout, _) =
            eval(&[&args[..], &["--threads", threads, "--json", file.to_str().unwrap()]].concat());
        (stdout.lines().last().unwrap().to_owned(), std::fs::read(&file).unwrap())
    };
    let (one, two) = (run("1"), run("2"));
    assert_eq!(one.0, two.0);
    assert!(one.1 == two.1, "the JSON results differ between 1 and 2 threads");
}

#[test]
fn recorded_events_print_every_firing() {
    // A private-led room of the stream, scaled to about 20 organic orders a minute,
    // stops selling at minute 65 of its session.
    // The first seed whose three rooms include a private-led one.
    let sim = |seed| {
        livefunnel_sim::Simulator::new(livefunnel_sim::SimParams {
            rooms: 3,
            duration_ms: 80 * 60_000,
            seed,
            ..Default::default()
        })
    };
    let (seed, room) = (1..=50)
        .find_map(|seed| (0..3).find(|&r| sim(seed).room_profile(r).private_led).map(|r| (seed, r)))
        .expect("a private-led room");
    let sim = sim(seed);
    let scale = 20.0 / sim.room_profile(room).organic_orders_per_minute;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let n = room + 1;
    let status = Command::new(env!("CARGO_BIN_EXE_livefunnel"))
        .args(["sim", "--rooms", "3", "--duration", "80m", "--seed", &seed.to_string()])
        .args(["--scenario", &format!("audience:rooms={n}:scale={scale}")])
        .args(["--scenario", &format!("sales_stall:rooms={n}:at=65m")])
        .arg("--output")
        .arg(&events)
        .status()
        .unwrap();
    assert!(status.success());
    let (stdout, _) = eval(&["--input", events.to_str().unwrap()]);
    let firings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FIRING ")).collect();
    let stalled = format!("room=room-{n:04}");
    assert!(firings.iter().any(|l| l.starts_with("FIRING SalesStall ") && l.contains(&stalled)), "{stdout}");
    assert!(firings.iter().all(|l| l.contains(&stalled)), "only the stalled room fires:\n{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("normal_room_alerts="), "{stdout}");
}
