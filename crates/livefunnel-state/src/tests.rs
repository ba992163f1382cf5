use proptest::prelude::*;

use super::*;

fn sample(partition: i32) -> Checkpoint {
    Checkpoint {
        topic: "room-events".into(),
        partition,
        next_offset: 12_345,
        epoch: 3,
        taken_at_ms: 1_767_225_600_000,
        engine: (0..2000u32).map(|i| (i * 7) as u8).collect(),
        extra: vec![1, 2, 3],
    }
}

#[test]
fn save_then_load_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    assert_eq!(sd.load("room-events", 0).unwrap(), None);
    sd.save(&sample(0)).unwrap();
    sd.save(&sample(1)).unwrap();
    assert_eq!(sd.load("room-events", 0).unwrap(), Some(sample(0)));
    assert_eq!(sd.load("room-events", 1).unwrap(), Some(sample(1)));
    let mut newer = sample(0);
    newer.next_offset = 99;
    sd.save(&newer).unwrap();
    assert_eq!(sd.load("room-events", 0).unwrap().unwrap().next_offset, 99);
    // No temporary file is left behind.
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_truncated_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    sd.save(&sample(0)).unwrap();
    let path = sd.checkpoint_path("room-events", 0);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = sd.load("room-events", 0).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StateError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("room-events-0.ckpt") && msg.contains("truncated"), "{msg}");
    assert!(!err.is_retryable());
}

#[test]
fn another_format_version_is_a_version_error() {
    let mut bytes = encode(&sample(0));
    bytes[8] = 9;
    assert!(matches!(decode(&bytes), Err(DecodeError::Version(9))));
}

#[test]
fn a_file_of_another_partition_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    sd.save(&sample(1)).unwrap();
    fs::copy(sd.checkpoint_path("room-events", 1), sd.checkpoint_path("room-events", 0)).unwrap();
    let msg = sd.load("room-events", 0).unwrap_err().to_string();
    assert!(msg.contains("belongs to room-events/1"), "{msg}");
}

/// 2026-12-04T16:00:00Z, and the epoch floor then.
const NOW: i64 = 1_796_400_000_000;
fn floor() -> u32 {
    epoch::floor_at(NOW).unwrap()
}

#[test]
fn epochs_always_grow() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    let f = floor();
    assert_eq!(sd.claim_epoch_at("t", 0, 0, NOW).unwrap(), f);
    assert_eq!(sd.claim_epoch_at("t", 0, 0, NOW).unwrap(), f + 1);
    // A checkpoint taken under a later epoch (by another process) wins.
    assert_eq!(sd.claim_epoch_at("t", 0, f + 7, NOW).unwrap(), f + 8);
    assert_eq!(sd.claim_epoch_at("t", 0, f + 3, NOW).unwrap(), f + 9);
    assert_eq!(sd.claim_epoch_at("t", 1, 0, NOW).unwrap(), f);
    // An hour later the floor is above every claim of before.
    assert_eq!(sd.claim_epoch_at("t", 0, 0, NOW + 3_600_000).unwrap(), f + 60);
    assert_eq!(
        fs::read_to_string(dir.path().join("t-0.epoch")).unwrap(),
        format!("{} {}\n", f + 60, NOW + 3_600_000)
    );
    fs::write(dir.path().join("t-0.epoch"), "x").unwrap();
    assert!(matches!(sd.claim_epoch_at("t", 0, 0, NOW), Err(StateError::Corrupt { .. })));
}

#[test]
fn an_epoch_file_of_an_older_version_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    fs::write(dir.path().join("t-0.epoch"), "12\n").unwrap();
    assert_eq!(sd.claim_epoch_at("t", 0, 0, NOW).unwrap(), floor());
    let far = format!("{}\n", floor() + 100);
    fs::write(dir.path().join("t-0.epoch"), far).unwrap();
    assert_eq!(sd.claim_epoch_at("t", 0, 0, NOW).unwrap(), floor() + 101);
}

#[test]
fn a_clock_behind_the_last_claim_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    sd.claim_epoch_at("room-events", 3, 0, NOW).unwrap();
    let err = sd.claim_epoch_at("room-events", 3, 0, NOW - 2 * 3_600_000).unwrap_err();
    assert!(!err.is_retryable());
    let msg = err.to_string();
    for part in ["room-events-3.epoch", "2026-12-04T14:00:00.000Z", "2026-12-04T16:00:00.000Z", "runbook"] {
        assert!(msg.contains(part), "{part} missing: {msg}");
    }
    // Nothing was claimed: the record is unchanged.
    let text = fs::read_to_string(dir.path().join("room-events-3.epoch")).unwrap();
    assert_eq!(text, format!("{} {NOW}\n", floor()));
}

#[test]
fn topic_names_are_file_safe() {
    let sd = StateDir { dir: PathBuf::from("/s") };
    assert_eq!(sd.checkpoint_path("a/b c", 2), PathBuf::from("/s/a_b_c-2.ckpt"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// Any single corrupted byte is detected; decoding never panics.
    #[test]
    fn any_flipped_byte_is_detected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode(&sample(0));
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(decode(&bytes).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
    }
}

/// The least epoch a claim may return now.
fn minutes_now() -> u32 {
    epoch::floor_at(epoch::now_ms()).unwrap()
}

#[test]
fn a_deleted_state_directory_claims_at_least_the_wall_clock_floor() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    let floor = minutes_now();
    let first = sd.claim_epoch("t", 0, 0).unwrap();
    let second = sd.claim_epoch("t", 0, 0).unwrap();
    assert!(first >= floor && second > first, "{first} {second} (floor {floor})");
    // The directory is lost: the next claim is still above every earlier one once the
    // clock has passed them, never back at 1.
    fs::remove_dir_all(dir.path()).unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    assert!(sd.claim_epoch("t", 0, 0).unwrap() >= floor);
}

#[test]
fn an_epoch_beyond_24_bits_is_an_error_never_a_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    let err = sd.claim_epoch("t", 0, (1 << 24) - 1).unwrap_err();
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.contains("t-0.epoch") && msg.contains("16777216"), "{msg}");
}
