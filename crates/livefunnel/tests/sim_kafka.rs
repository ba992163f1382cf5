//! `livefunnel sim --kafka-brokers ... --topic ...` delivers exactly the messages the
//! JSONL output holds, keyed by room, to a real Kafka-protocol broker (librdkafka's mock
//! cluster).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use livefunnel_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use livefunnel_kafka::rdkafka::message::Message;
use livefunnel_kafka::rdkafka::mocking::MockCluster;
use livefunnel_kafka::rdkafka::ClientConfig;

#[test]
fn sim_to_kafka_sends_what_jsonl_shows() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("sim-out", 3, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let args = ["sim", "--rooms", "3", "--duration", "3m", "--seed", "5"];
    let exe = env!("CARGO_BIN_EXE_livefunnel");
    let jsonl = Command::new(exe).args(args).output().unwrap();
    assert!(jsonl.status.success(), "{}", String::from_utf8_lossy(&jsonl.stderr));
    let expected: Vec<&[u8]> = jsonl.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert!(expected.len() > 100);
    let out = Command::new(exe)
        .args(args)
        .args(["--kafka-brokers", &brokers, "--topic", "sim-out"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "sim-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["sim-out"]).unwrap();
    let mut got: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut n = 0;
    let mut rooms_on: BTreeMap<String, i32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while n < expected.len() && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            // One room, one partition.
            assert_eq!(*rooms_on.entry(key).or_insert(m.partition()), m.partition());
            *got.entry(m.payload().unwrap().to_vec()).or_default() += 1;
            n += 1;
        }
    }
    let mut want: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for l in expected {
        *want.entry(l.to_vec()).or_default() += 1;
    }
    assert_eq!(got, want);
    assert_eq!(rooms_on.len(), 3);
}
