//! `data/sample.jsonl` is exactly what the simulator produces for the command
//! in `data/README.md`: regenerate it and compare the bytes.

use livefunnel_sim::{SimParams, Simulator};

const SAMPLE: &[u8] = include_bytes!("../../../data/sample.jsonl");

/// `livefunnel sim --rooms 4 --duration 15m --seed 36 --late-share 0.004
/// --duplicate-share 0.004 --malformed-share 0.005 --output data/sample.jsonl`
fn sample_params() -> SimParams {
    SimParams {
        rooms: 4,
        duration_ms: 15 * 60_000,
        seed: 36,
        start_ms: 1_767_225_600_000,
        late_share: 0.004,
        duplicate_share: 0.004,
        malformed_share: 0.005,
        scenarios: Vec::new(),
    }
}

#[test]
fn shipped_sample_is_reproducible() {
    let mut sim = Simulator::new(sample_params());
    let mut out = Vec::with_capacity(SAMPLE.len());
    let mut line = Vec::new();
    while sim.next_message(&mut line) {
        out.extend_from_slice(&line);
        out.push(b'\n');
        line.clear();
    }
    assert_eq!(sim.events_emitted(), 6706);
    if out != SAMPLE {
        let at = out.iter().zip(SAMPLE).position(|(a, b)| a != b).unwrap_or(out.len().min(SAMPLE.len()));
        panic!(
            "data/sample.jsonl differs from the simulator output at byte {at} ({} vs {} bytes); \
             regenerate it with the command in data/README.md if the change is intended",
            SAMPLE.len(),
            out.len()
        );
    }
}
