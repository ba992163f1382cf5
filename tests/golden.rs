//! Golden-file tests of `livefunnel replay`: every directory `golden/<case>/` holds an
//! `input.jsonl`, an optional `config.toml` (no environment is read), and the expected
//! `expected.jsonl` (rows), `expected_dlq.jsonl` (dead letters) and
//! `expected_summary.json` (the `--summary` file). The replay runs in-process and
//! every file must match byte for byte.
//!
//! `UPDATE_GOLDEN=1 cargo test -p livefunnel-e2e --test golden` (re)writes the
//! expected files from the current engine and still fails, so it never passes
//! silently: review the written files by hand (`git diff tests/golden`), then run
//! the tests again without it. `golden/README.md` says what each case exercises.
//!
//! A line that is exactly `@@oversize@@` in an input stands for a generated event of
//! 65,537 bytes (just over the limit of contract §1.4), so no 64 KiB file is checked
//! in; in the dead-letter output its `raw` is written back as `@@oversize@@`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use livefunnel::config::{self, Sources};
use livefunnel::replay::replay;
use livefunnel_core::row::write_json_string;
use livefunnel_core::TimeMode;

const OVERSIZE_PLACEHOLDER: &[u8] = b"@@oversize@@";
const OVERSIZE_LEN: usize = 65_537;
const EXPECTED_FILES: [&str; 3] = ["expected.jsonl", "expected_dlq.jsonl", "expected_summary.json"];

macro_rules! golden_cases {
    ($($case:ident),* $(,)?) => {
        const CASES: &[&str] = &[$(stringify!($case)),*];
        $(
            #[test]
            fn $case() {
                run_case(stringify!($case));
            }
        )*
    };
}

golden_cases!(
    one_viewer_buys,
    bad_lines,
    late_and_duplicate,
    sources_and_plans,
    quiet_room_idle_grace,
    session_timeout_key_cap,
);

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

#[test]
fn every_case_directory_has_a_test() {
    let mut dirs: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("read tests/golden")
        .map(|e| e.expect("dir entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed, "add the new case directory to golden_cases!(...) in tests/golden.rs");
}

/// The generated oversize line: a well-formed event padded to `OVERSIZE_LEN` bytes.
fn oversize_line() -> Vec<u8> {
    let head = br#"{"event_id":"oversize-1","type":"comment","ts":1767225600000,"room_id":"room-oversize","session_id":"s-oversize","user_id":"u-oversize","pad":""#;
    let tail = br#""}"#;
    let mut line = head.to_vec();
    line.resize(OVERSIZE_LEN - tail.len(), b'x');
    line.extend_from_slice(tail);
    assert_eq!(line.len(), OVERSIZE_LEN);
    line
}

/// Replaces every `@@oversize@@` line (keeping its line terminator).
fn expand_input(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for line in input.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body_no_cr = body.strip_suffix(b"\r").unwrap_or(body);
        if body_no_cr == OVERSIZE_PLACEHOLDER {
            out.extend_from_slice(&oversize_line());
            out.extend_from_slice(&line[body_no_cr.len()..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Writes the generated oversize line back as `@@oversize@@` in the dead-letter output.
fn collapse_dead_letters(dlq: &[u8]) -> Vec<u8> {
    let mut long = Vec::new();
    write_json_string(&mut long, &String::from_utf8(oversize_line()).expect("ASCII"));
    let mut short = Vec::new();
    write_json_string(&mut short, std::str::from_utf8(OVERSIZE_PLACEHOLDER).expect("ASCII"));
    replace_all(dlq, &long, &short)
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Replays a case in-process: (rows, dead letters, summary file).
fn replay_case(dir: &Path) -> [Vec<u8>; 3] {
    let input_path = dir.join("input.jsonl");
    let input =
        std::fs::read(&input_path).unwrap_or_else(|e| panic!("cannot read {}: {e}", input_path.display()));
    let input = expand_input(&input);
    let config_path = dir.join("config.toml");
    let file = config_path.exists().then_some(config_path.as_path());
    let loaded = config::load(&Sources::file_only(file), TimeMode::Replay)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut rows = Vec::new();
    let mut dlq = Vec::new();
    let summary = replay(&input[..], &mut rows, Some(&mut dlq), loaded.engine)
        .unwrap_or_else(|e| panic!("{}: replay failed: {e}", dir.display()));
    [rows, collapse_dead_letters(&dlq), summary.to_json().into_bytes()]
}

fn run_case(case: &str) {
    let dir = golden_dir().join(case);
    let actual = replay_case(&dir);
    assert!(actual == replay_case(&dir), "{case}: two replays of the same input gave different bytes");

    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        for (file, bytes) in EXPECTED_FILES.iter().zip(&actual) {
            let path = dir.join(file);
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        panic!(
            "{case}: UPDATE_GOLDEN=1 wrote {} in {}; review them by hand (git diff tests/golden), \
             then run the tests again without UPDATE_GOLDEN",
            EXPECTED_FILES.join(", "),
            dir.display()
        );
    }

    let mut failures = String::new();
    for (file, bytes) in EXPECTED_FILES.iter().zip(&actual) {
        let path = dir.join(file);
        match std::fs::read(&path) {
            Ok(expected) if expected == *bytes => {}
            Ok(expected) => failures.push_str(&describe_difference(&path, &expected, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = writeln!(
                    failures,
                    "{} is missing: generate the expected files with \
                     `UPDATE_GOLDEN=1 cargo test -p livefunnel-e2e --test golden`, \
                     review them by hand, then rerun without UPDATE_GOLDEN",
                    path.display()
                );
            }
            Err(e) => {
                let _ = writeln!(failures, "cannot read {}: {e}", path.display());
            }
        }
    }
    assert!(failures.is_empty(), "golden case `{case}` differs:\n{failures}");
}

/// The first differing line, with the differing JSON fields when both lines are objects.
fn describe_difference(path: &Path, expected: &[u8], actual: &[u8]) -> String {
    let exp: Vec<&[u8]> = expected.split(|&b| b == b'\n').collect();
    let act: Vec<&[u8]> = actual.split(|&b| b == b'\n').collect();
    let mut out = format!(
        "{}: differs ({} expected lines, {} actual)\n",
        path.display(),
        expected.iter().filter(|&&b| b == b'\n').count(),
        actual.iter().filter(|&&b| b == b'\n').count()
    );
    let n = exp.len().max(act.len());
    let Some(i) = (0..n).find(|&i| exp.get(i) != act.get(i)) else {
        return out;
    };
    let show = |l: Option<&&[u8]>| match l {
        Some(l) => String::from_utf8_lossy(l).into_owned(),
        None => "<end of file>".to_owned(),
    };
    let _ = writeln!(out, "  first difference at line {}:", i + 1);
    let _ = writeln!(out, "  expected: {}", show(exp.get(i)));
    let _ = writeln!(out, "  actual:   {}", show(act.get(i)));
    let parse = |l: Option<&&[u8]>| {
        l.and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .and_then(|v| v.as_object().cloned())
    };
    if let (Some(e), Some(a)) = (parse(exp.get(i)), parse(act.get(i))) {
        let mut keys: Vec<&String> = e.keys().chain(a.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if e.get(k) != a.get(k) {
                let v = |x: Option<&serde_json::Value>| x.map_or("<absent>".to_owned(), |v| v.to_string());
                let _ = writeln!(out, "    field `{k}`: expected {}, actual {}", v(e.get(k)), v(a.get(k)));
            }
        }
    }
    out
}

#[test]
fn oversize_placeholder_expands_and_collapses() {
    let input = b"a\n@@oversize@@\r\nb\n";
    let expanded = expand_input(input);
    assert_eq!(expanded.len(), input.len() - OVERSIZE_PLACEHOLDER.len() + OVERSIZE_LEN);
    assert!(expanded.ends_with(b"\"}\r\nb\n"));
    let mut dlq = b"{\"reason\":\"oversize\",\"line\":2,\"raw\":".to_vec();
    write_json_string(&mut dlq, &String::from_utf8(oversize_line()).unwrap());
    dlq.extend_from_slice(b"}\n");
    assert_eq!(
        collapse_dead_letters(&dlq),
        b"{\"reason\":\"oversize\",\"line\":2,\"raw\":\"@@oversize@@\"}\n"
    );
}
