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

#[test]
fn epochs_always_grow() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    assert_eq!(sd.claim_epoch("t", 0, 0).unwrap(), 1);
    assert_eq!(sd.claim_epoch("t", 0, 0).unwrap(), 2);
    // A checkpoint taken under a later epoch (by another process) wins.
    assert_eq!(sd.claim_epoch("t", 0, 7).unwrap(), 8);
    assert_eq!(sd.claim_epoch("t", 0, 3).unwrap(), 9);
    assert_eq!(sd.claim_epoch("t", 1, 0).unwrap(), 1);
    fs::write(dir.path().join("t-0.epoch"), "x").unwrap();
    assert!(matches!(sd.claim_epoch("t", 0, 0), Err(StateError::Corrupt { .. })));
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
